// The JavaScript side of the flox-trio QuickJS host.
//
// QuickJS cannot call back into Python while a time limit is set, so nothing
// here calls out: events arrive as call arguments (columnar strings, decoded
// lazily), and order intents, logs, file writes, runner requests and errors
// leave as the JSON return value of each call.
//
// Nothing here is reachable from a script: the state lives in this closure,
// the JSON functions are captured before any script runs, and the globals a
// script sees (flox, runner, console, require, sym) are plain configurable
// properties, so a script may declare its own `const sym` (or shadow any of
// them) without a clash. The host still trusts nothing a call returns.
(function (global) {
  var stringify = JSON.stringify, parse = JSON.parse;
  // objs: handle -> strategy object for every strategy Python holds; ids: the reverse.
  var F = { objs: new Map(), ids: new Map(), next: 1, registered: null, files: {}, ctxs: {}, seq: 1,
            slot: -1, out: null };
  // The event being delivered and whether the slot asked to be replaced: read or written at
  // every event, so closure variables rather than properties (cheaper in QuickJS).
  var cur = -1, stop = false;

  F.reset = function () {
    F.out = { logs: [], intents: [], requests: [], writes: [], errors: [] };
    stop = false;
    cur = -1;
  };
  F.reset();

  F.finish = function (n, value) {
    var o = F.out;
    o.n = n;
    if (value !== undefined) o.value = value;
    var s = stringify(o);
    F.reset();
    return s;
  };

  // What promise jobs (the continuations of async callbacks) produced since the
  // last call: the host runs the job queue right after each call and collects this.
  F.collect = function () { return F.finish(-1); };

  // An async callback's rejection is that callback's error, reported like a throw.
  F.settle = function (k, r) {
    if (r !== null && typeof r === 'object' && typeof r.then === 'function') {
      r.then(undefined, function (e) { F.error(k, e); });
    }
  };

  F.keep = function (obj) {
    if (obj === null || typeof obj !== 'object') {
      throw new TypeError('a strategy must be an object with symbols and callbacks, got ' + typeof obj);
    }
    var h = F.ids.get(obj);
    if (h === undefined) {
      h = F.next++;
      F.ids.set(obj, h);
      F.objs.set(h, obj);
    }
    return h;
  };

  // Python no longer holds these handles: forget the objects, or a script that
  // swaps in a fresh object every N trades (ab_switch.js) fills its memory limit.
  F.release = function (handles) {
    var hs = parse(handles);
    for (var i = 0; i < hs.length; i++) {
      var obj = F.objs.get(hs[i]);
      if (obj !== undefined) {
        F.objs.delete(hs[i]);
        F.ids.delete(obj);
      }
    }
    return hs.length;
  };

  // After a call was abandoned (time limit, out of memory): hand over what it had
  // collected (intents already given ids, logs, writes) and how far it got,
  // rather than leaving it in F.out for whichever call comes next.
  F.salvage = function () {
    return F.finish(cur + 1);
  };

  F.describe = function (obj) {
    var cbs = [];
    ['onStart', 'onStop', 'onTrade', 'onBook', 'onBar', 'onGap', 'onOrderUpdate', 'onFill'].forEach(function (k) {
      if (typeof obj[k] === 'function') cbs.push(k);
    });
    return { handle: F.keep(obj), symbols: obj.symbols, callbacks: cbs };
  };

  F.fmt = function (v) {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return String(v);
    try { return stringify(v); } catch (e) { return String(v); }
  };

  // Out of memory, interrupted (time limit) and stack overflow abort the whole
  // call: the host never swallows one (QuickJS has crashed when a script kept
  // allocating after catching an out-of-memory error). Callers rethrow in place.
  F.fatal = function (e) {
    return e === null || e instanceof InternalError || (e instanceof RangeError && /stack/.test(e.message));
  };

  F.error = function (k, e) {
    var msg = (e && e.message !== undefined) ? (e.name ? e.name + ': ' : '') + e.message : String(e);
    F.out.errors.push([k, msg, (e && e.stack) ? String(e.stack) : '']);
  };

  // --- the sandboxed fs: a mirror of the state directory -------------------------
  F.norm = function (p) {
    if (typeof p !== 'string') throw new TypeError('fs: a path must be a string, got ' + typeof p);
    var parts = p.split('/'), out = [];
    for (var i = 0; i < parts.length; i++) {
      var s = parts[i];
      if (s === '' || s === '.') continue;
      if (s === '..') {
        if (!out.length) throw new Error("fs: path '" + p + "' climbs out of the strategy's state directory: refused");
        out.pop();
      } else {
        out.push(s);
      }
    }
    if (!out.length) throw new Error("fs: path '" + p + "' names the state directory itself, not a file");
    return out.join('/');
  };
  F.sync = function (changes) {
    var c = parse(changes);
    for (var k in c) {
      if (c[k] === null) delete F.files[k]; else F.files[k] = c[k];
    }
  };
  var fs = {
    existsSync: function (p) { return F.files.hasOwnProperty(F.norm(p)); },
    readFileSync: function (p) {
      var n = F.norm(p);
      if (!F.files.hasOwnProperty(n)) throw new Error("ENOENT: no such file '" + p + "' in the state directory");
      return F.files[n];
    },
    writeFileSync: function (p, data) {
      var n = F.norm(p), s = typeof data === 'string' ? data : String(data);
      F.files[n] = s;
      F.out.writes.push([n, s]);
    },
  };
  F.require = function (name) {
    if (name === 'fs') return fs;
    throw new Error("require('" + name + "'): only 'fs' is available to strategies");
  };

  // --- ctx: a slot's view of one symbol --------------------------------------------
  function Ctx(slot, symbol) {
    this.symbol = symbol;
    this._slot = slot;
    this.position = 0;
    this.bestBid = null;
    this.bestAsk = null;
    this.openOrders = [];
    this._lp = null;
    this._lc = null;
    this._li = 0;
  }
  Object.defineProperty(Ctx.prototype, 'lastPrice', {
    get: function () { return this._lc !== null ? this._lc.price(this._li) : this._lp; },
  });
  Object.defineProperty(Ctx.prototype, 'mid', {
    get: function () {
      return this.bestBid === null || this.bestAsk === null ? null : (this.bestBid + this.bestAsk) / 2;
    },
  });
  function intent(ctx, side, type, qty, price) {
    var id = ctx._slot + '-' + (F.seq++);
    F.out.intents.push([id, ctx.symbol, side, type, qty, price]);
    return id;
  }
  Ctx.prototype.marketBuy = function (qty) { return intent(this, 'buy', 'market', qty, null); };
  Ctx.prototype.marketSell = function (qty) { return intent(this, 'sell', 'market', qty, null); };
  Ctx.prototype.limitBuy = function (price, qty) { return intent(this, 'buy', 'limit', qty, price); };
  Ctx.prototype.limitSell = function (price, qty) { return intent(this, 'sell', 'limit', qty, price); };
  Ctx.prototype.cancel = function (id) { F.out.intents.push([String(id), this.symbol, 'cancel', 'cancel', 0, null]); };
  // ctx.amend(id, {price: p, qty: q}): either or both; qty is the order's new total.
  Ctx.prototype.amend = function (id, change) {
    var c = change === null || typeof change !== 'object' ? {} : change;
    var qty = c.qty === undefined ? null : c.qty, price = c.price === undefined ? null : c.price;
    F.out.intents.push([String(id), this.symbol, 'amend', 'amend', qty, price]);
  };
  // The open orders as of the start of the call; orders placed during it are not among them.
  Ctx.prototype.cancelAll = function () {
    for (var i = 0; i < this.openOrders.length; i++) this.cancel(this.openOrders[i]);
  };

  F.ctxsFor = function (slot, state) {
    var m = F.ctxs[slot] || (F.ctxs[slot] = {});
    var st = parse(state);
    for (var sym in st) {
      var c = m[sym] || (m[sym] = new Ctx(slot, sym)), v = st[sym];
      c.position = v[0];
      c._lp = v[1]; c._lc = null;
      c.bestBid = v[2]; c.bestAsk = v[3];
      c.openOrders = v[4];  // ids of the slot's open orders in this symbol, as of the call
    }
    return m;
  };

  // --- events: trades are columnar and decode a column on first use -------------------
  function Cols(syms, sy, sd, px, qt, id, et, rt) {
    this.syms = syms; this.sy = sy;
    this.sds = sd; this.pxs = px; this.qts = qt; this.ids = id; this.ets = et; this.rts = rt;
    this.sd = null; this.px = null; this.qt = null; this.id = null; this.et = null; this.rt = null;
  }
  Cols.prototype.price = function (i) { return (this.px || (this.px = parse(this.pxs)))[i]; };
  function Trade(c, i) { this._c = c; this._i = i; }
  Object.defineProperties(Trade.prototype, {
    price: { get: function () { return this._c.price(this._i); }, enumerable: true },
    qty: { get: function () { var c = this._c; return (c.qt || (c.qt = parse(c.qts)))[this._i]; }, enumerable: true },
    side: { get: function () { var c = this._c; return (c.sd || (c.sd = parse(c.sds)))[this._i]; }, enumerable: true },
    symbol: { get: function () { return this._c.syms[this._c.sy.charCodeAt(this._i) - 48]; }, enumerable: true },
    tradeId: { get: function () { var c = this._c; return (c.id || (c.id = parse(c.ids)))[this._i]; }, enumerable: true },
    exchangeTsNs: { get: function () { var c = this._c; return (c.et || (c.et = parse(c.ets)))[this._i]; }, enumerable: true },
    recvTsNs: { get: function () { var c = this._c; return (c.rt || (c.rt = parse(c.rts)))[this._i]; }, enumerable: true },
  });
  Trade.prototype.toJSON = function () {
    return { symbol: this.symbol, price: this.price, qty: this.qty, side: this.side, tradeId: this.tradeId,
             exchangeTsNs: this.exchangeTsNs, recvTsNs: this.recvTsNs };
  };
  F.Trade = Trade;

  // kinds: one char per event ('t' trade, 'b' book, 'B' bar, 'g' gap, 'u' order update, 'f' fill),
  // or '' when the batch is all trades.
  F.dispatch = function (h, slot, seq, state, start, budget, kinds, syms, sy, sd, px, qt, id, et, rt, others) {
    var s = F.objs.get(h);
    F.slot = slot; F.seq = seq;
    var ctxs = F.ctxsFor(slot, state);
    var c = new Cols(parse(syms), sy, sd, px, qt, id, et, rt);
    var symCtx = [];
    for (var j = 0; j < c.syms.length; j++) symCtx.push(ctxs[c.syms[j]]);
    var other = others ? parse(others) : null;
    var onTrade = s.onTrade, onBook = s.onBook, onBar = s.onBar, onGap = s.onGap, onUpd = s.onOrderUpdate,
        onFill = s.onFill;
    var n = kinds ? kinds.length : sy.length;
    var ti = 0, oi = 0, k = start;
    var errors = F.out.errors;  // F.out is replaced only by F.finish, after the loop
    if (start > 0 && kinds) {  // resume mid-batch: count what was already consumed
      for (var q = 0; q < start; q++) { if (kinds.charCodeAt(q) === 116) ti++; else oi++; }
    } else if (start > 0) {
      ti = start;
    }
    // One try for the whole batch, entered again after a callback that threw: a try per event
    // costs QuickJS-ng about as much as a small onTrade. What throws outside a callback (the
    // prelude itself, broken by the script) still ends the call.
    var done = -1, inCall = false;
    // All trades of one symbol, the usual batch: the context is the same for every event.
    var one = !kinds && symCtx.length === 1 && onTrade ? symCtx[0] : null;
    if (one) one._lc = c;
    while (done < 0) {
      try {
        if (one) {
          for (; k < n; k++) {
            cur = k;
            one._li = k;
            inCall = true;
            var r1 = s.onTrade(one, new Trade(c, k));
            if (r1 !== undefined && r1 !== null) F.settle(k, r1);
            inCall = false;
            if (stop || errors.length >= budget) { done = k + 1; break; }
          }
        }
        for (; k < n && done < 0; k++) {
          cur = k;
          var kind = kinds ? kinds.charCodeAt(k) : 116;
          if (kind === 116) {
            var t = ti++;
            var ctx = symCtx[sy.charCodeAt(t) - 48];
            ctx._lc = c; ctx._li = t;
            if (onTrade) {
              // F.settle only for what could be a promise (an async onTrade).
              inCall = true;
              var r = s.onTrade(ctx, new Trade(c, t));
              if (r !== undefined && r !== null) F.settle(k, r);
              inCall = false;
            }
          } else {
            var ev = other[oi++], cx = ctxs[ev.symbol], name = null;
            if (kind === 98) {
              if (ev.bids.length) cx.bestBid = ev.bids[0][0];
              if (ev.asks.length) cx.bestAsk = ev.asks[0][0];
              name = onBook && 'onBook';
            } else if (kind === 66) {
              name = onBar && 'onBar';
            } else if (kind === 103) {
              name = onGap && 'onGap';
            } else if (kind === 117) {
              name = onUpd && 'onOrderUpdate';
            } else {
              // ctx.position came from the executor at the start of the batch and
              // already counts this fill (as in Python, the executor is the truth).
              name = onFill && 'onFill';
            }
            if (name) {
              inCall = true;
              F.settle(k, s[name](cx, ev));
              inCall = false;
            }
          }
          if (stop || errors.length >= budget) { done = k + 1; break; }
        }
        if (done < 0) done = n;
      } catch (e) {
        if (!inCall || F.fatal(e)) throw e;
        inCall = false;
        F.error(k, e);
        k++;
        if (stop || errors.length >= budget) done = k;
      }
    }
    return F.finish(done);
  };

  // One string argument per call, fields separated by \x1f (JSON escapes it, so it never
  // occurs inside a field): QuickJS's Python binding has crashed on out-of-memory
  // errors in calls that take many arguments, never in one-argument calls.
  F.call = function (packed) {
    var a = packed.split('\x1f');
    try {
      if (a[0] === 'd') {
        return F.dispatch(+a[1], +a[2], +a[3], a[4], +a[5], +a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
                          a[14], a[15], a[16]);
      }
      return F.lifecycle(+a[1], a[2], +a[3], +a[4], a[5]);
    } catch (e) {
      throw e;  // caught and rethrown at every host frame: see F.fatal
    }
  };

  F.lifecycle = function (h, name, slot, seq, state) {
    var s = F.objs.get(h);
    F.slot = slot; F.seq = seq;
    if (slot >= 0) F.ctxsFor(slot, state);
    // Called as a method, not through Function.prototype.call: an out-of-memory
    // error unwinding through that native frame has crashed QuickJS.
    if (typeof s[name] === 'function') {
      try { F.settle(-1, s[name]()); } catch (e) { if (F.fatal(e)) throw e; F.error(-1, e); }
    }
    return F.finish(0);
  };

  F.factory = function (name, args) {
    var fn = globalThis[name];
    if (typeof fn !== 'function') throw new TypeError("the script defines no global function '" + name + "'");
    var obj = fn.apply(null, parse(args));  // user code runs here only at load/factory time
    return F.finish(0, F.describe(obj));
  };

  F.registeredInfo = function () {
    return F.finish(0, F.registered === null ? null : F.describe(F.registered));
  };

  // A strategy object's property as JSON (inspection from Python and tests).
  F.inspect = function (h, name) {
    var obj = F.objs.get(h);
    return stringify(obj === undefined ? null : obj[name]);
  };

  function put(name, value) {
    Object.defineProperty(global, name, { value: value, writable: true, configurable: true, enumerable: false });
  }
  put('flox', { register: function (strategy) { F.registered = strategy; } });
  put('runner', {
    replaceStrategy: function (index, strategy) {
      F.out.requests.push(['replace', index, F.describe(strategy)]);
      if (index === F.slot) stop = true;  // takes effect at the next event boundary
    },
    addStrategy: function (strategy) {
      F.out.requests.push(['add', -1, F.describe(strategy)]);
    },
  });
  put('console', (function () {
    function logger(level) {
      return function () {
        F.out.logs.push([level, Array.prototype.map.call(arguments, F.fmt).join(' ')]);
      };
    }
    return { log: logger('info'), info: logger('info'), debug: logger('debug'), warn: logger('warning'),
             error: logger('error') };
  })());
  put('require', F.require);
  F.setSym = function (s) { put('sym', s); };

  // The host's entry points, handed over once and then removed from the global scope.
  put('__flox_entry', { call: F.call, factory: F.factory, registeredInfo: F.registeredInfo, sync: F.sync,
                        release: F.release, salvage: F.salvage, collect: F.collect, inspect: F.inspect,
                        setSym: F.setSym });
})(globalThis);
