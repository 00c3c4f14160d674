// The flox prelude: the JavaScript half of flox_trio.js.
//
// Evaluated in every script context before the script itself. It defines what
// a strategy sees (flox.register, runner, console, require('fs'), sym) and the
// entry points Python calls. This QuickJS binding refuses calls from
// JavaScript into Python while a CPU time limit is set, so nothing here calls
// out: market data arrives as call arguments (columnar, each column decoded on
// first use), and everything the script asks for (orders, log lines, file
// writes, swaps, errors) is collected and handed back as the call's return
// value. One call per batch, never one per event.
//
// Python prepends blank lines before evaluating this file so that its line
// numbers are larger than any script's: every eval in this binding is named
// "<input>", and that is how a stack frame of the prelude is told apart from a
// frame of the script.
(function (G) {
  "use strict";

  // Captured once: a script may reassign globals, but not break the host.
  const JSONparse = JSON.parse;
  const JSONstringify = JSON.stringify;
  const isArray = Array.isArray;
  const isFinite_ = Number.isFinite;
  const isInteger = Number.isInteger;
  const BigInt_ = BigInt;
  const String_ = String;
  const freeze = Object.freeze;
  const defineProperty = Object.defineProperty;
  const Error_ = Error;
  const TypeError_ = TypeError;
  const Map_ = Map;
  const Set_ = Set;
  const indirectEval = G.eval;
  const CALLBACKS = ["onStart", "onStop", "onTrade", "onBook", "onBar", "onOrderUpdate", "onFill"];
  const MAX_LOG_LINES = 1000;
  const MAX_LOG_CHARS = 8192;

  function add(list, value) {
    list[list.length] = value;
  }

  function bigintSafe(_key, value) {
    return typeof value === "bigint" ? value.toString() : value;
  }

  // --- the current call ----------------------------------------------------------
  // Everything a call collects. Reset by begin(), drained by finish()/take().

  const C = {
    slot: -1, // slot being served, -1 outside a slot call
    seq: 0, // next order number of that slot
    nslots: -1, // runner slot count at the start of the call, -1 if unknown
    cur: -1, // index of the event being delivered, -1 outside a dispatch
    inDispatch: false,
    stop: false,
    intents: [],
    logs: [],
    dropped: 0,
    reqs: [],
    errs: [],
    dirty: new Set_(),
  };

  function begin(slot, seq, nslots) {
    C.slot = slot;
    C.seq = seq;
    C.nslots = nslots;
    C.cur = -1;
    C.inDispatch = false;
    C.stop = false;
  }

  function quiet() {
    return C.intents.length === 0 && C.logs.length === 0 && C.reqs.length === 0 &&
      C.errs.length === 0 && C.dirty.size === 0 && C.dropped === 0;
  }

  function drain(n) {
    const files = {};
    for (const path of C.dirty) {
      const f = FILES.get(path);
      files[path] = f === undefined ? null : f;
    }
    const out = {
      n: n, cur: C.cur, seq: C.seq, intents: C.intents, logs: C.logs, dropped: C.dropped,
      reqs: C.reqs, errs: C.errs, files: files,
    };
    C.intents = [];
    C.logs = [];
    C.dropped = 0;
    C.reqs = [];
    C.errs = [];
    C.dirty = new Set_();
    return JSONstringify(out, bigintSafe);
  }

  // The common case (nothing but "n events consumed") crosses back as a bare number.
  function finish(n) {
    C.inDispatch = false;
    return quiet() ? n : drain(n);
  }

  function errorRecord(i, e, where) {
    let name = "Error";
    let message = "";
    let stack = "";
    let code = "";
    try {
      if (e instanceof Error_) {
        name = String_(e.name);
        message = String_(e.message);
        stack = typeof e.stack === "string" ? e.stack : "";
        code = typeof e.code === "string" ? e.code : "";
      } else {
        name = "thrown " + (e === null ? "null" : typeof e);
        message = typeof e === "string" ? e : JSONstringify(e, bigintSafe) || String_(e);
      }
    } catch (_) {
      message = "(an exception whose message cannot be read)";
    }
    return [i, name, message, stack, code, where];
  }

  // QuickJS reports running out of memory as InternalError("out of memory"),
  // or as a bare null when even that error could not be allocated. Either way
  // the call is abandoned: Python salvages what was collected and quarantines.
  function isOutOfMemory(e) {
    return e === null || (e instanceof G.InternalError && e.message === "out of memory");
  }

  function fail(i, e, where) {
    if (isOutOfMemory(e)) throw e;
    add(C.errs, errorRecord(i, e, where));
  }

  // --- strategies ------------------------------------------------------------------

  const R = new Map_(); // strategy id -> object, for every strategy Python holds
  let nextSid = 1;
  let REGISTERED = null;

  function strategySymbols(obj, what) {
    if (obj === null || typeof obj !== "object" && typeof obj !== "function") {
      throw new TypeError_(what + ": a strategy is an object with 'symbols' and callbacks, got " +
        (obj === null ? "null" : typeof obj));
    }
    let symbols = obj.symbols;
    if (typeof symbols === "string") symbols = [symbols];
    if (!isArray(symbols) || symbols.length === 0) {
      throw new TypeError_(what + ": the strategy's 'symbols' must be a non-empty array like ['BTCUSDT'], got " +
        (symbols === undefined ? "undefined" : JSONstringify(symbols, bigintSafe)));
    }
    const out = [];
    for (const s of symbols) {
      if (typeof s !== "string" || s.length === 0) {
        throw new TypeError_(what + ": every symbol must be a non-empty string, got " + JSONstringify(s, bigintSafe));
      }
      add(out, s);
    }
    return out;
  }

  function track(obj, what) {
    const symbols = strategySymbols(obj, what);
    const sid = nextSid++;
    R.set(sid, obj);
    const callbacks = [];
    for (const name of CALLBACKS) if (typeof obj[name] === "function") add(callbacks, name);
    return [sid, symbols, callbacks];
  }

  function release(dead) {
    for (const sid of dead) R.delete(sid);
  }

  function strategy(sid) {
    const s = R.get(sid);
    if (s === undefined) throw new Error_("flox: unknown strategy id " + sid);
    return s;
  }

  const flox = {
    register(obj) {
      strategySymbols(obj, "flox.register");
      REGISTERED = obj;
      return obj;
    },
    version: "1",
  };

  const runner = {
    replaceStrategy(index, obj) {
      if (!isInteger(index) || index < 0) {
        throw new TypeError_("runner.replaceStrategy: the slot index must be an integer >= 0, got " + String_(index));
      }
      add(C.reqs, ["replace", index, track(obj, "runner.replaceStrategy"), C.cur]);
      // Our own slot: stop right after this event, so the swap lands at the next boundary.
      if (index === C.slot && C.inDispatch) C.stop = true;
    },
    addStrategy(obj) {
      add(C.reqs, ["add", -1, track(obj, "runner.addStrategy"), C.cur]);
      return C.nslots >= 0 ? C.nslots++ : undefined;
    },
  };

  // --- console ---------------------------------------------------------------------

  function format(args) {
    let out = "";
    for (let k = 0; k < args.length; k++) {
      const a = args[k];
      let s;
      if (typeof a === "string") {
        s = a;
      } else if (a instanceof Error_) {
        s = a.name + ": " + a.message + (typeof a.stack === "string" && a.stack ? "\n" + a.stack : "");
      } else {
        try {
          s = JSONstringify(a, bigintSafe);
        } catch (_) {
          s = undefined;
        }
        if (s === undefined) s = String_(a);
      }
      out += (k ? " " : "") + s;
    }
    return out.length > MAX_LOG_CHARS ? out.slice(0, MAX_LOG_CHARS) + "... (" + out.length + " chars)" : out;
  }

  function logger(level) {
    return function () {
      if (C.logs.length >= MAX_LOG_LINES) {
        C.dropped++;
        return;
      }
      add(C.logs, [level, format(arguments)]);
    };
  }

  const console_ = {
    log: logger("info"), info: logger("info"), warn: logger("warning"),
    error: logger("error"), debug: logger("debug"),
  };

  // --- fs: a mirror of the state directory ---------------------------------------
  // Python refreshes the mirror from disk before calls and writes back every
  // path a call dirtied, right after it. Paths are POSIX, rooted at the state
  // directory; a path that climbs above it is refused, never clamped.

  const FILES = new Map_(); // relative path -> text, or {unreadable: reason}
  const DIRS = new Set_([""]);

  function sandboxError(fn, path, why) {
    const e = new Error_(fn + ": " + why + ": '" + path + "' (scripts can only touch their state directory)");
    e.name = "SandboxError";
    e.code = "EFLOXSANDBOX";
    return e;
  }

  function nodeError(code, fn, path, text) {
    const e = new Error_(code + ": " + text + ", " + fn + " '" + path + "'");
    e.code = code;
    return e;
  }

  function resolve(fn, path) {
    if (typeof path !== "string") {
      throw new TypeError_("fs." + fn + ": the path must be a string, got " + typeof path);
    }
    if (path.indexOf("\u0000") >= 0) throw sandboxError("fs." + fn, path, "the path contains a NUL byte");
    const parts = path.split("/");
    const out = [];
    for (const part of parts) {
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (out.length === 0) throw sandboxError("fs." + fn, path, "the path climbs out of the state directory");
        out.pop();
      } else {
        add(out, part);
      }
    }
    return out.join("/");
  }

  function parentsOf(rel) {
    const out = [];
    let k = rel.lastIndexOf("/");
    while (k > 0) {
      rel = rel.slice(0, k);
      add(out, rel);
      k = rel.lastIndexOf("/");
    }
    return out;
  }

  function textOf(fn, data) {
    if (typeof data === "string") return data;
    if (typeof data === "number" || typeof data === "bigint" || typeof data === "boolean") return String_(data);
    throw new TypeError_("fs." + fn + ": data must be a string (the sandbox stores text), got " +
      (data === null ? "null" : typeof data));
  }

  function writeText(fn, path, text) {
    const rel = resolve(fn, path);
    if (rel === "" || DIRS.has(rel)) throw nodeError("EISDIR", fn, path, "illegal operation on a directory");
    for (const dir of parentsOf(rel)) {
      if (FILES.has(dir)) throw nodeError("ENOTDIR", fn, path, "not a directory");
      DIRS.add(dir);
    }
    FILES.set(rel, text);
    C.dirty.add(rel);
  }

  function readText(fn, path) {
    const rel = resolve(fn, path);
    if (rel === "" || DIRS.has(rel)) throw nodeError("EISDIR", fn, path, "illegal operation on a directory");
    const f = FILES.get(rel);
    if (f === undefined) throw nodeError("ENOENT", fn, path, "no such file or directory");
    if (typeof f !== "string") throw nodeError("EIO", fn, path, f.unreadable);
    return f;
  }

  const fs = {
    existsSync(path) {
      const rel = resolve("existsSync", path);
      return DIRS.has(rel) || FILES.has(rel);
    },
    readFileSync(path, _options) {
      return readText("readFileSync", path);
    },
    writeFileSync(path, data, _options) {
      writeText("writeFileSync", path, textOf("writeFileSync", data));
    },
    appendFileSync(path, data, _options) {
      const rel = resolve("appendFileSync", path);
      const old = FILES.get(rel);
      if (old !== undefined && typeof old !== "string") throw nodeError("EIO", "appendFileSync", path, old.unreadable);
      writeText("appendFileSync", path, (old === undefined ? "" : old) + textOf("appendFileSync", data));
    },
    unlinkSync(path) {
      const rel = resolve("unlinkSync", path);
      if (!FILES.has(rel)) {
        throw DIRS.has(rel) ? nodeError("EISDIR", "unlink", path, "illegal operation on a directory")
          : nodeError("ENOENT", "unlink", path, "no such file or directory");
      }
      FILES.delete(rel);
      C.dirty.add(rel);
    },
    mkdirSync(path, _options) {
      const rel = resolve("mkdirSync", path);
      for (const dir of [...parentsOf(rel), rel]) {
        if (FILES.has(dir)) throw nodeError("EEXIST", "mkdir", path, "file already exists");
        if (dir !== "" && !DIRS.has(dir)) {
          DIRS.add(dir);
          C.dirty.add(dir + "/");
        }
      }
    },
    readdirSync(path, _options) {
      const rel = resolve("readdirSync", path);
      if (!DIRS.has(rel)) {
        throw FILES.has(rel) ? nodeError("ENOTDIR", "scandir", path, "not a directory")
          : nodeError("ENOENT", "scandir", path, "no such file or directory");
      }
      const prefix = rel === "" ? "" : rel + "/";
      const names = new Set_();
      for (const p of [...FILES.keys(), ...DIRS]) {
        if (p.length > prefix.length && p.startsWith(prefix)) names.add(p.slice(prefix.length).split("/")[0]);
      }
      return Array.from(names).sort();
    },
  };

  function fsApply(update) {
    if (update === null) return;
    const u = JSONparse(update);
    for (const path in u.files) {
      const f = u.files[path];
      if (f === null) FILES.delete(path);
      else FILES.set(path, f);
    }
    if (u.dirs !== null) {
      DIRS.clear();
      DIRS.add("");
      for (const d of u.dirs) DIRS.add(d);
    }
  }

  // --- ctx: a slot's view of one symbol --------------------------------------------

  const CTXS = new Map_(); // slot -> Map(symbol -> Ctx)

  function Ctx(slot, symbol, venue) {
    this.symbol = symbol;
    this.venue = venue;
    this.slot = slot;
    this._pos = 0;
    this._avg = null;
    this._lp = null;
    this._tb = null; // batch of the last trade delivered, and its ordinal there
    this._tj = 0;
    this._bid = null;
    this._ask = null;
    this._bb = null; // batch of the last book delivered, and its ordinal there
    this._bj = 0;
    this._bs = 0; // symbol index of this ctx in that batch
  }

  function checkSlot(ctx, what) {
    if (ctx.slot !== C.slot) {
      throw new Error_("ctx." + what + ": this ctx belongs to slot " + ctx.slot +
        " and can only be used while that slot runs the strategy (now: " +
        (C.slot < 0 ? "no slot" : "slot " + C.slot) + ")");
    }
  }

  function amount(what, name, v) {
    if (typeof v === "number") {
      if (!isFinite_(v) || !(v > 0)) {
        throw new TypeError_("ctx." + what + ": " + name + " must be a finite number > 0, got " + String_(v));
      }
      return v;
    }
    if (typeof v === "string" || typeof v === "bigint") return String_(v);
    throw new TypeError_("ctx." + what + ": " + name + " must be a number, got " + (v === null ? "null" : typeof v));
  }

  function order(ctx, what, side, type, qty, price) {
    checkSlot(ctx, what);
    const q = amount(what, "qty", qty);
    const p = type === "limit" ? amount(what, "price", price) : null;
    const id = C.slot + "-" + C.seq++;
    add(C.intents, ["order", ctx.symbol, side, type, q, p, id, C.cur]);
    return id;
  }

  function bookSide(ctx, side) {
    const b = ctx._bb;
    if (b !== null) {
      const rows = b.books();
      const sym = b.bsym;
      for (let k = ctx._bj; k >= 0; k--) {
        if (sym !== null && sym.charCodeAt(k) - 48 !== ctx._bs) continue;
        const levels = rows[k][side];
        if (levels.length) return levels[0][0];
      }
    }
    return side === 0 ? ctx._bid : ctx._ask;
  }

  Ctx.prototype = {
    constructor: Ctx,
    get position() { return this._pos; },
    get avgEntryPrice() { return this._avg; },
    get lastPrice() {
      const b = this._tb;
      return b === null ? this._lp : (b.tp || b.price())[this._tj];
    },
    get bestBid() { return bookSide(this, 0); },
    get bestAsk() { return bookSide(this, 1); },
    get mid() {
      const bid = this.bestBid;
      const ask = this.bestAsk;
      return bid === null || ask === null ? null : (bid + ask) / 2;
    },
    get runner() { return runner; },
    marketBuy(qty) { return order(this, "marketBuy", "buy", "market", qty, null); },
    marketSell(qty) { return order(this, "marketSell", "sell", "market", qty, null); },
    limitBuy(price, qty) { return order(this, "limitBuy", "buy", "limit", qty, price); },
    limitSell(price, qty) { return order(this, "limitSell", "sell", "limit", qty, price); },
    cancel(id) {
      checkSlot(this, "cancel");
      if (typeof id !== "string") throw new TypeError_("ctx.cancel: the order id must be a string, got " + typeof id);
      add(C.intents, ["cancel", this.symbol, id, C.cur]);
    },
    cancelAll() {
      checkSlot(this, "cancelAll");
      add(C.intents, ["cancelAll", this.symbol, C.cur]);
    },
    toJSON() {
      return { symbol: this.symbol, venue: this.venue, slot: this.slot, position: this._pos,
        avgEntryPrice: this._avg, lastPrice: this.lastPrice, bestBid: this.bestBid, bestAsk: this.bestAsk };
    },
  };

  function ctxOf(slot, symbol, venue) {
    let m = CTXS.get(slot);
    if (m === undefined) CTXS.set(slot, m = new Map_());
    let c = m.get(symbol);
    if (c === undefined) m.set(symbol, c = new Ctx(slot, symbol, venue));
    return c;
  }

  // Python sends the slot's view at the start of every call: [symbol, venue,
  // position, avgEntryPrice, lastPrice, bestBid, bestAsk] per symbol.
  function applyState(slot, state) {
    if (state === null) return;
    for (const row of JSONparse(state)) {
      const c = ctxOf(slot, row[0], row[1]);
      c._pos = row[2];
      c._avg = row[3];
      c._lp = row[4];
      c._bid = row[5];
      c._ask = row[6];
      c._tb = null;
      c._bb = null;
    }
  }

  // --- batches: columns decoded on first use ---------------------------------------

  function bigints(s) {
    if (s === "") return [];
    const parts = s.split(",");
    const out = new Array(parts.length);
    for (let k = 0; k < parts.length; k++) out[k] = BigInt_(parts[k]);
    return out;
  }

  function Batch(n, kinds, symtab, tsym, tprice, tqty, tside, tid, tets, trts, bsym, books, bars, orders) {
    this.n = n;
    this.kinds = kinds;
    this.symtab = JSONparse(symtab);
    this.tsym = tsym;
    this._tp = tprice;
    this._tq = tqty;
    this.tside = tside;
    this._tid = tid;
    this._tets = tets;
    this._trts = trts;
    this.bsym = bsym;
    this._books = books;
    this._bars = bars;
    this._orders = orders;
    this.tp = null;
    this.tq = null;
    this.tid = null;
    this.tets = null;
    this.trts = null;
    this.bk = null;
    this.br = null;
    this.od = null;
  }

  Batch.prototype = {
    price() { return this.tp || (this.tp = JSONparse(this._tp)); },
    qty() { return this.tq || (this.tq = JSONparse(this._tq)); },
    tradeId() { return this.tid || (this.tid = JSONparse(this._tid)); },
    exchangeTs() { return this.tets || (this.tets = bigints(this._tets)); },
    recvTs() { return this.trts || (this.trts = bigints(this._trts)); },
    books() { return this.bk || (this.bk = JSONparse(this._books)); },
    bars() { return this.br || (this.br = JSONparse(this._bars)); },
    orders() { return this.od || (this.od = JSONparse(this._orders)); },
    tsymbol(j) { return this.symtab[this.tsym === null ? 0 : this.tsym.charCodeAt(j) - 48]; },
    bsymbol(j) { return this.symtab[this.bsym === null ? 0 : this.bsym.charCodeAt(j) - 48]; },
  };

  function TradeEvent(b, j) {
    this._b = b;
    this._j = j;
  }

  TradeEvent.prototype = {
    constructor: TradeEvent,
    get symbol() { return this._b.tsymbol(this._j)[0]; },
    get venue() { return this._b.tsymbol(this._j)[1]; },
    get price() { const b = this._b; return (b.tp || b.price())[this._j]; },
    get qty() { const b = this._b; return (b.tq || b.qty())[this._j]; },
    get side() { return this._b.tside.charCodeAt(this._j) === 98 ? "buy" : "sell"; },
    get isBuy() { return this._b.tside.charCodeAt(this._j) === 98; },
    get tradeId() { return this._b.tradeId()[this._j]; },
    get exchangeTsNs() { return this._b.exchangeTs()[this._j]; },
    get recvTsNs() { return this._b.recvTs()[this._j]; },
    toJSON() {
      return { type: "trade", symbol: this.symbol, venue: this.venue, price: this.price, qty: this.qty,
        side: this.side, tradeId: this.tradeId, exchangeTsNs: String_(this.exchangeTsNs),
        recvTsNs: String_(this.recvTsNs) };
    },
  };

  // Book rows: [bids, asks, exchangeTsNs, recvTsNs, seq]
  function BookEvent(b, j) {
    this._b = b;
    this._j = j;
  }

  BookEvent.prototype = {
    constructor: BookEvent,
    get symbol() { return this._b.bsymbol(this._j)[0]; },
    get venue() { return this._b.bsymbol(this._j)[1]; },
    get bids() { return this._b.books()[this._j][0]; },
    get asks() { return this._b.books()[this._j][1]; },
    get bestBid() { const l = this.bids; return l.length ? l[0][0] : null; },
    get bestAsk() { const l = this.asks; return l.length ? l[0][0] : null; },
    get exchangeTsNs() { return BigInt_(this._b.books()[this._j][2]); },
    get recvTsNs() { return BigInt_(this._b.books()[this._j][3]); },
    get seq() { return this._b.books()[this._j][4]; },
    toJSON() {
      const r = this._b.books()[this._j];
      return { type: "book", symbol: this.symbol, venue: this.venue, bids: r[0], asks: r[1],
        exchangeTsNs: r[2], recvTsNs: r[3], seq: r[4] };
    },
  };

  // Bars, order updates and fills are rare: plain frozen objects built from their rows.
  function barEvent(r) {
    return freeze({
      type: "bar", symbol: r[0], venue: r[1], open: r[2], high: r[3], low: r[4], close: r[5], volume: r[6],
      tradeCount: r[7], startTsNs: BigInt_(r[8]), endTsNs: BigInt_(r[9]), intervalS: r[10],
    });
  }

  function orderEvent(r) {
    if (r[0] === "update") {
      return freeze({
        type: "update", orderId: r[1], symbol: r[2], side: r[3], orderType: r[4], status: r[5],
        qty: r[6], filledQty: r[7], remainingQty: r[8], price: r[9], avgFillPrice: r[10], reason: r[11],
        tsNs: BigInt_(r[12]), slot: r[13], venue: r[14],
      });
    }
    return freeze({
      type: "fill", orderId: r[1], symbol: r[2], side: r[3], price: r[4], qty: r[5], fee: r[6],
      liquidity: r[7], tsNs: BigInt_(r[8]), tradeId: r[9], slot: r[10], venue: r[11],
    });
  }

  const BATCH = { key: -1, batch: null };

  function batchFor(key, cols) {
    if (key === BATCH.key && cols[0] === null) return BATCH.batch;
    const b = new Batch(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8],
      cols[9], cols[10], cols[11], cols[12], cols[13]);
    BATCH.key = key;
    BATCH.batch = b;
    return b;
  }

  function watch(result, i) {
    // An async callback: its rejection is reported against the event that started it.
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      result.then(undefined, function (e) { fail(i, e, "async"); });
    }
  }

  // --- entry points ----------------------------------------------------------------

  function prepare(fsUpdate, dead) {
    fsApply(fsUpdate);
    if (dead !== null) release(JSONparse(dead));
  }

  function dispatch(sid, slot, seq, nslots, state, fsUpdate, dead, start, end, key,
    n, kinds, symtab, tsym, tprice, tqty, tside, tid, tets, trts, bsym, books, bars, orders) {
    prepare(fsUpdate, dead);
    const s = strategy(sid);
    const b = batchFor(key, [n, kinds, symtab, tsym, tprice, tqty, tside, tid, tets, trts, bsym, books, bars, orders]);
    begin(slot, seq, nslots);
    applyState(slot, state);
    C.inDispatch = true;
    const tab = b.symtab;
    const cx = new Array(tab.length);
    for (let k = 0; k < tab.length; k++) cx[k] = ctxOf(slot, tab[k][0], tab[k][1]);
    const onTrade = s.onTrade;
    if (b.kinds === null) {
      // All trades: event i is trade i.
      const single = b.tsym === null;
      const c0 = cx[0];
      if (typeof onTrade !== "function") {
        if (single) { c0._tb = b; c0._tj = end - 1; return finish(end); }
      }
      for (let i = start; i < end; i++) {
        C.cur = i;
        const c = single ? c0 : cx[b.tsym.charCodeAt(i) - 48];
        c._tb = b;
        c._tj = i;
        if (typeof onTrade === "function") {
          try {
            const r = onTrade.call(s, c, new TradeEvent(b, i));
            if (r !== undefined) watch(r, i);
          } catch (e) {
            fail(i, e, "onTrade");
            return finish(i + 1);
          }
        }
        if (C.stop) return finish(i + 1);
      }
      return finish(end);
    }
    // Mixed batch: kinds has one character per event; each kind has its own ordinal.
    const kinds = b.kinds;
    let tj = 0;
    let bj = 0;
    let rj = 0;
    let oj = 0;
    for (let i = 0; i < start; i++) {
      const k = kinds.charCodeAt(i);
      if (k === 116) tj++; else if (k === 98) bj++; else if (k === 66) rj++; else oj++;
    }
    const onBook = s.onBook;
    const onBar = s.onBar;
    const onOrderUpdate = s.onOrderUpdate;
    const onFill = s.onFill;
    for (let i = start; i < end; i++) {
      C.cur = i;
      const k = kinds.charCodeAt(i);
      let fn;
      let where;
      let c;
      let ev;
      if (k === 116) { // "t"
        c = cx[b.tsym === null ? 0 : b.tsym.charCodeAt(tj) - 48];
        c._tb = b;
        c._tj = tj;
        fn = onTrade;
        where = "onTrade";
        ev = typeof fn === "function" ? new TradeEvent(b, tj) : null;
        tj++;
      } else if (k === 98) { // "b"
        const si = b.bsym === null ? 0 : b.bsym.charCodeAt(bj) - 48;
        c = cx[si];
        c._bb = b;
        c._bj = bj;
        c._bs = si;
        fn = onBook;
        where = "onBook";
        ev = typeof fn === "function" ? new BookEvent(b, bj) : null;
        bj++;
      } else if (k === 66) { // "B"
        const r = b.bars()[rj++];
        c = ctxOf(slot, r[0], r[1]);
        fn = onBar;
        where = "onBar";
        ev = barEvent(r);
      } else { // "u" or "f"
        const r = b.orders()[oj++];
        ev = orderEvent(r);
        c = ctxOf(slot, ev.symbol, ev.venue);
        if (ev.type === "fill") {
          c._pos += ev.side === "buy" ? ev.qty : -ev.qty;
          fn = onFill;
          where = "onFill";
        } else {
          fn = onOrderUpdate;
          where = "onOrderUpdate";
        }
      }
      if (typeof fn === "function") {
        try {
          const r = fn.call(s, c, ev);
          if (r !== undefined) watch(r, i);
        } catch (e) {
          fail(i, e, where);
          return finish(i + 1);
        }
      }
      if (C.stop) return finish(i + 1);
    }
    return finish(end);
  }

  function lifecycle(sid, name, slot, seq, nslots, state, fsUpdate, dead) {
    prepare(fsUpdate, dead);
    const s = strategy(sid);
    begin(slot, seq, nslots);
    applyState(slot, state);
    const fn = s[name];
    if (typeof fn === "function") {
      try {
        const r = fn.call(s);
        if (r !== undefined) watch(r, -1);
      } catch (e) {
        fail(-1, e, name);
      }
    }
    return drain(0);
  }

  // A global factory by name: a function declaration or a top-level const/let.
  function make(name, args, nslots, fsUpdate, dead) {
    prepare(fsUpdate, dead);
    begin(-1, 0, nslots);
    let made = null;
    try {
      const f = indirectEval(name);
      if (typeof f !== "function") {
        throw new TypeError_(name + " is not a function (it is " + typeof f + ")");
      }
      made = track(f.apply(undefined, JSONparse(args)), name + "(...)");
    } catch (e) {
      fail(-1, e, name);
    }
    const out = JSONparse(drain(0));
    out.made = made;
    return JSONstringify(out);
  }

  function registered() {
    return REGISTERED === null ? null : JSONstringify(track(REGISTERED, "flox.register"));
  }

  function take(nslots) {
    C.nslots = nslots;
    return drain(0);
  }

  function property(sid, name) {
    const v = strategy(sid)[name];
    return v === undefined ? undefined : JSONstringify(v, bigintSafe);
  }

  function configure(config) {
    const c = JSONparse(config);
    if (c.sym !== null) G.sym = c.sym;
    if (c.symbols !== null) G.symbols = c.symbols;
  }

  G.flox = flox;
  G.runner = runner;
  G.console = console_;
  G.require = function require(name) {
    if (name === "fs" || name === "node:fs") return fs;
    throw new Error_("require('" + String_(name) + "'): the flox sandbox only provides 'fs'");
  };
  // A native clock hook the binding leaves on the global object; strategies
  // have Date, and nothing else native should be reachable.
  delete G.__date_clock;
  defineProperty(G, "__flox_exports", {
    configurable: true,
    value: { dispatch, lifecycle, make, registered, take, property, prepare, configure },
  });
})(globalThis);
