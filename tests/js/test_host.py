"""The QuickJS host: loading, the sandbox, intents, errors, runaway scripts."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.js import load

from .conftest import trades

COUNTER = """
var seen = [];
function makeStrategy(label) {
  return { symbols: [sym], label: label,
           onTrade: function (ctx, t) { seen.push([this.label, t.tradeId, t.price, t.side, ctx.lastPrice]); } };
}
flox.register(makeStrategy('v1'));
"""


async def run_list(strategy: Any, events: list[Any], **kw: Any) -> flox.Runner:
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=7), **kw) as runner:
        runner.add_strategy(strategy)
    return runner


async def test_registered_strategy_sees_every_trade_with_its_fields(script_file: Any, tmp_path: Path) -> None:
    script = load(script_file(COUNTER), state_dir=tmp_path / "state")
    events = trades(20)
    runner = await run_list(script.registered, events)
    seen = script.eval("JSON.stringify(seen)")
    import json

    rows = json.loads(seen)
    assert [r[1] for r in rows] == [e.trade_id for e in events]
    assert [r[2] for r in rows] == [e.price for e in events]
    assert [r[3] for r in rows] == [e.side for e in events]
    assert [r[4] for r in rows] == [e.price for e in events]  # ctx.lastPrice is the trade's price
    assert runner.slots[0].language == "javascript"
    assert runner.slots[0].dispatched == 20


FIELDS = """
var rows = [];
flox.register({symbols: ['BTCUSDT', 'ETHUSDT'],
  onTrade: function (ctx, t) { rows.push([t.symbol, t.price, t.qty, t.side, t.tradeId, t.exchangeTsNs, t.recvTsNs,
                                          JSON.stringify(t), ctx.symbol, ctx.lastPrice]); },
  onBook: function (ctx, b) { rows.push(['book', ctx.bestBid]); }});
"""


@pytest.mark.parametrize("mix", ["one symbol", "two symbols", "with books"])
async def test_every_field_of_a_trade_reaches_js_as_in_python(mix: str, script_file: Any, tmp_path: Path) -> None:
    # Each shape of batch takes its own path through the prelude (one context for the
    # batch, a context per trade, events of several kinds): all must deliver the same fields.
    events: list[Any] = [flox.Trade("BTCUSDT", 100.5 + i, 0.25 * (i + 1), "buy" if i % 3 else "sell", f"id-{i}",
                                    1_700_000_000_123_456_789 + i, 1_700_000_000_223_456_789 + i) for i in range(12)]
    if mix != "one symbol":
        events = [flox.Trade("ETHUSDT", e.price / 10, e.qty, e.side, e.trade_id + "e", e.exchange_ts_ns,
                             e.recv_ts_ns) if i % 2 else e for i, e in enumerate(events)]
    if mix == "with books":
        events.insert(5, flox.Book("BTCUSDT", ((99.0, 1.0),), ((101.0, 2.0),)))
    script = load(script_file(FIELDS), state_dir=tmp_path / "state")
    await run_list(script.registered, events)
    import json

    rows = json.loads(script.eval("JSON.stringify(rows)"))
    assert len(rows) == len(events)
    for row, ev in zip(rows, events, strict=True):
        if isinstance(ev, flox.Book):
            assert row == ["book", 99.0]
            continue
        sym, price, qty, side, tid, ets, rts, as_json, ctx_sym, last = row
        assert (sym, price, qty, side, tid) == (ev.symbol, ev.price, ev.qty, ev.side, ev.trade_id)
        # Nanosecond timestamps are JS numbers: the nearest double, as float() gives in Python
        # (JSON.stringify writes it in its shortest digits, which json.loads reads as an int).
        ets, rts = float(ets), float(rts)
        assert (ets, rts) == (float(ev.exchange_ts_ns), float(ev.recv_ts_ns))
        parsed = json.loads(as_json)
        assert float(parsed.pop("exchangeTsNs")) == ets and float(parsed.pop("recvTsNs")) == rts
        assert parsed == {"symbol": ev.symbol, "price": ev.price, "qty": ev.qty, "side": ev.side,
                          "tradeId": ev.trade_id}
        assert (ctx_sym, last) == (ev.symbol, ev.price)


async def test_factory_call_and_symbols(script_file: Any, tmp_path: Path) -> None:
    script = load(script_file(COUNTER), state_dir=tmp_path, sym="ETHUSDT")
    s = script.call("makeStrategy", "v2")
    assert s.symbols == ["ETHUSDT"]
    with pytest.raises(flox.StrategyLoadError, match="no global function 'nope'"):
        script.call("nope")


def test_errors_at_load_name_the_file_and_line(script_file: Any) -> None:
    bad = script_file("var a = 1;\nvar b = ;\n", "syntax.js")
    with pytest.raises(flox.StrategyLoadError, match=r"syntax\.js.*SyntaxError"):
        load(bad)
    thrower = script_file("var x = 1;\n\nthrow new Error('no config');\n", "throw.js")
    with pytest.raises(flox.StrategyLoadError, match=r"no config.*throw\.js:3"):
        load(thrower)
    with pytest.raises(flox.StrategyLoadError, match=r"never called flox\.register"):
        _ = load(script_file("var q = 1;")).registered
    with pytest.raises(flox.StrategyLoadError, match="cannot read"):
        load(Path("/nonexistent/x.js"))


FS = """
const fs = require('fs');
function probe(p) { try { fs.writeFileSync(p, 'x'); return 'ok'; } catch (e) { return e.message; } }
var results = {
  abs: probe('/tmp/x.json'),
  rel: probe('sub/y.txt'),
  inside: probe('a/../z.txt'),
  escape: probe('../outside.txt'),
  escape2: probe('/tmp/../../outside.txt'),
  req: (function () { try { require('child_process'); return 'ok'; } catch (e) { return e.message; } })(),
};
flox.register({symbols: [sym]});
"""


def test_fs_is_confined_to_the_state_directory(script_file: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = load(script_file(FS), state_dir=state)
    import json

    r = json.loads(script.eval("JSON.stringify(results)"))
    assert r["abs"] == r["rel"] == r["inside"] == "ok"
    assert "climbs out" in r["escape"] and "refused" in r["escape"]
    assert "climbs out" in r["escape2"]
    assert "only 'fs'" in r["req"]
    assert (state / "tmp" / "x.json").read_text() == "x"
    assert (state / "sub" / "y.txt").read_text() == "x"
    assert (state / "z.txt").exists()
    assert not (tmp_path / "outside.txt").exists()


async def test_console_goes_to_logging(script_file: Any, tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "flox_trio.js")
    src = "flox.register({symbols: [sym], onStart: function () { console.log('hello', {a: 1}); }," \
          " onTrade: function (c, t) { console.warn('px', t.price); }});"
    script = load(script_file(src, "talk.js"), state_dir=tmp_path)
    await run_list(script.registered, trades(1))
    assert "[talk.js] hello {\"a\":1}" in caplog.text
    assert "[talk.js] px 100" in caplog.text


ORDERS = """
var ids = [];
flox.register({symbols: [sym],
  onTrade: function (ctx, t) {
    if (t.tradeId === '1') { ids.push(ctx.limitBuy(50, 2)); ids.push(ctx.marketBuy(0.5)); }
    if (t.tradeId === '2') { ids.push('open:' + ctx.openOrders.join(',')); }
    if (t.tradeId === '3') { ctx.cancel(ids[0]); }
  },
  onOrderUpdate: function (ctx, u) { ids.push(u.orderId + ':' + u.status); },
  onFill: function (ctx, f) { ids.push('fill:' + f.qty + '@' + f.price + ' pos ' + ctx.position); },
});
"""


async def trade_on_paper(script: Any, n: int = 5) -> flox.Runner:
    """``n`` trades, one at a time, to the script's strategy on a paper executor, each past its 10 ms acks."""
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01)) as runner:
        runner.add_strategy(script.registered)
        for i in range(n):
            await feed.push(trades(1, start=i))
            await runner.wait_idle()
            await trio.sleep(0.02)
            await runner.wait_idle()
        feed.close()
    return runner


async def test_order_intents_return_ids_and_reach_the_executor(
    script_file: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    script = load(script_file(ORDERS), state_dir=tmp_path)
    runner = await trade_on_paper(script)
    import json

    ids = json.loads(script.eval("JSON.stringify(ids)"))
    assert ids[:2] == ["0-1", "0-2"]
    assert "0-1:accepted" in ids and "0-2:filled" in ids and "0-1:canceled" in ids
    assert "fill:0.5@101 pos 0.5" in ids
    assert "open:0-1" in ids  # the resting limit order, as the executor saw it at the batch
    orders = {o.order_id: o for o in runner.executor.orders()}
    assert orders["0-1"].status == "canceled" and orders["0-2"].status == "filled"


AMENDS = """
var seen = [];
flox.register({symbols: [sym],
  onTrade: function (ctx, t) {
    if (t.tradeId === '1') { ctx.limitBuy(50, 2); }
    if (t.tradeId === '2') { ctx.amend('0-1', {price: 60, qty: 3}); }
    if (t.tradeId === '3') { ctx.amend('0-1', {qty: 'lots'}); ctx.amend('0-1', {price: 0}); ctx.amend('0-1'); }
  },
  onOrderUpdate: function (ctx, u) { seen.push([u.status, u.qty, u.price, u.reason]); },
});
"""


async def test_a_script_amends_its_order_and_bad_amends_are_its_errors(
    script_file: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    script = load(script_file(AMENDS), state_dir=tmp_path)
    runner = await trade_on_paper(script)
    assert script.eval("seen") == [["accepted", 2, 50, ""], ["accepted", 3, 60, "amended"]]
    order = runner.executor.orders()[0]
    assert (order.qty, order.price, order.status) == (Decimal(3), Decimal(60), "accepted")
    slot = runner.slots[0]
    assert slot.errors == 3 and runner.status().slots[0].quarantine_reason is None  # the script's errors only
    assert "needs a new price, a new qty or both" in (slot.last_error or "")


async def test_a_throwing_callback_is_reported_with_line_and_quarantined(
    script_file: Any, tmp_path: Path, caplog: Any
) -> None:
    src = "flox.register({symbols: [sym],\n  onTrade: function (ctx, t) {\n    if (t.tradeId !== '0') throw new Error('bad ' + t.tradeId);\n  }});\n"
    script = load(script_file(src, "bad.js"), state_dir=tmp_path)
    runner = await run_list(script.registered, trades(30), max_errors=4)
    slot = runner.slots[0]
    assert slot.errors == 4
    assert slot.dispatched == 5  # one good trade, four that threw, then quarantine
    assert "bad 4" in (slot.last_error or "") and "bad.js:3" in (slot.last_error or "")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("while (true) {}", "interrupted"),
        # Stopped by the time limit or by the memory limit, whichever it meets first.
        ("var a = []; while (true) { a.push(new Array(1000).fill(t.price)); }", "interrupted|out of memory"),
        ("function f(n) { return f(n + 1) + 1; } f(0);", "stack"),
    ],
    ids=["infinite-loop", "memory-bomb", "deep-recursion"],
)
async def test_runaway_scripts_stop_and_the_engine_lives(
    script_file: Any, tmp_path: Path, body: str, reason: str
) -> None:
    src = "flox.register({symbols: [sym], onTrade: function (ctx, t) { " + body + " }});"
    script = load(script_file(src, "runaway.js"), state_dir=tmp_path, time_limit=0.05, memory_limit=4_000_000)

    class Count(flox.Strategy):
        n = 0

        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            Count.n += 1

    async with flox.open_runner(flox.feeds.ListFeed(trades(50), batch_size=10), max_errors=3) as runner:
        bad = runner.add_strategy(script.registered)
        runner.add_strategy(Count(["BTCUSDT"]))
    slot = runner.slots[bad]
    assert slot.state in ("quarantined", "closed")
    assert slot.quarantine_reason is not None or slot.errors >= 3
    assert re.search(reason, (slot.last_error or "").lower())
    assert Count.n == 50  # the other slot got everything


async def test_throw_in_on_start_during_a_swap_puts_the_old_strategy_back(
    script_file: Any, tmp_path: Path
) -> None:
    src = COUNTER + "function broken() { return {symbols: [sym], onStart: function () { throw new Error('no model'); }}; }\n"
    script = load(script_file(src), state_dir=tmp_path)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        old = script.registered
        runner.add_strategy(old)
        with pytest.raises(flox.SwapError, match="no model") as info:
            await runner.replace_strategy(0, script.call("broken"))
        assert isinstance(info.value.__cause__, flox.JSError)
        assert runner.slots[0].strategy is old
        await feed.push(trades(3))
        await runner.wait_idle()
        feed.close()
    assert script.eval("seen.length") == 3


def test_memory_per_js_slot_is_under_5_mb(tmp_path: Path) -> None:
    from .conftest import JS

    script = load(JS / "ema.js", state_dir=tmp_path)
    assert script.memory()["malloc_size"] < 5 * 1024 * 1024


async def test_a_slow_leak_meets_the_memory_limit_and_only_that_slot_stops(script_file: Any, tmp_path: Path) -> None:
    src = "var hoard = []; flox.register({symbols: [sym], onTrade: function (ctx, t) { hoard.push('x'.repeat(10000) + t.tradeId); }});"
    script = load(script_file(src, "leak.js"), state_dir=tmp_path, memory_limit=2_000_000)
    events = trades(400)
    seen: list[str] = []

    class Other(flox.Strategy):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            seen.append(trade.trade_id)

    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=20)) as runner:
        leak = runner.add_strategy(script.registered)
        runner.add_strategy(Other(["BTCUSDT"]))
        await runner.wait_idle()
        slot = runner.slots[leak]
        assert slot.state == "quarantined"
        assert "over its limit of 2000000" in (slot.quarantine_reason or "")
        assert 100 < slot.dispatched < 400
    assert seen == [e.trade_id for e in events]
    with pytest.raises(flox.JSError, match="retired"):
        script.call("Object")


async def test_files_written_outside_reach_on_trade_within_a_second(
    script_file: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flox_trio.js._script as script_mod

    clock = [1000.0]
    monkeypatch.setattr(script_mod, "real_seconds", lambda: clock[0])
    src = ("const fs = require('fs'); var seen = [];\n"
           "flox.register({symbols: [sym], onTrade: function (ctx, t) {"
           " seen.push(fs.existsSync('/limits.json') ? JSON.parse(fs.readFileSync('/limits.json')).max : null); }});")
    state = tmp_path / "state"
    script = load(script_file(src), state_dir=state)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(script.registered)
        await feed.push(trades(1))
        await runner.wait_idle()
        state.mkdir(exist_ok=True)
        (state / "limits.json").write_text('{"max": 3}')  # an operator edits a file the strategy reads
        await feed.push(trades(1, start=1))
        await runner.wait_idle()
        clock[0] += 1.5
        await feed.push(trades(1, start=2))
        await runner.wait_idle()
        feed.close()
    assert script.eval("JSON.stringify(seen)") == "[null,null,3]"


async def test_a_gap_reaches_on_gap_between_the_trades(script_file: Any, tmp_path: Path) -> None:
    source = """
var seen = [];
flox.register({ symbols: [sym],
  onTrade: function (ctx, t) { seen.push('t' + t.tradeId); },
  onGap: function (ctx, g) { seen.push('gap ' + g.reason + ' ' + g.firstId + '..' + g.lastId + ' ' + g.missing); } });
"""
    script = load(script_file(source), state_dir=tmp_path / "state")
    events = trades(4)
    gap = flox.Gap("BTCUSDT", "trade_ids", 3, "2", "4")
    await run_list(script.registered, [events[0], events[1], gap, events[3]])
    assert script.eval("seen.join(',')") == f"t{events[0].trade_id},t{events[1].trade_id},gap trade_ids 2..4 3," \
                                            f"t{events[3].trade_id}"


@pytest.mark.parametrize("name", ["sym", "flox", "runner", "console", "require"])
@pytest.mark.parametrize("kind", ["const", "let", "var", "function"])
def test_a_script_may_declare_any_host_global_itself(script_file: Any, tmp_path: Path, name: str,
                                                     kind: str) -> None:
    """The host's globals are configurable properties: a script's own top-level declaration wins."""
    decl = f"function {name}() {{ return 'mine'; }}" if kind == "function" else f"{kind} {name} = 'mine';"
    script = load(script_file(decl + "\nvar seen = typeof " + name + ";\n"), state_dir=tmp_path)
    assert script.eval("seen") == ("function" if kind == "function" else "string")


def test_the_seed_style_script_declaring_sym_loads(script_file: Any, tmp_path: Path) -> None:
    source = "const sym = 'ETHUSDT';\nflox.register({ symbols: [sym], onTrade: function () {} });\n"
    assert load(script_file(source), state_dir=tmp_path).registered.symbols == ["ETHUSDT"]
