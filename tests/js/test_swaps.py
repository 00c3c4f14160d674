"""JavaScript strategies swap through the same path as Python ones, in every direction."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.js import load

from .conftest import JS, trades

JOURNAL = """
var journal = [];
function recorder(label) {
  return { symbols: [sym], label: label,
    onStart: function () { journal.push(['start', this.label]); },
    onStop: function () { journal.push(['stop', this.label]); },
    onTrade: function (ctx, t) { journal.push(['trade', this.label, t.tradeId]); },
    onOrderUpdate: function (ctx, u) { journal.push(['update', this.label, u.orderId, u.status]); },
    onFill: function (ctx, f) { journal.push(['fill', this.label, f.orderId, f.qty]); },
  };
}
flox.register(recorder('js0'));
"""


class Py(flox.Strategy):
    def __init__(self, label: str, journal: list[Any]) -> None:
        super().__init__(["BTCUSDT"])
        self.label, self.journal = label, journal

    def on_start(self) -> None:
        self.journal.append(["start", self.label])

    def on_stop(self) -> None:
        self.journal.append(["stop", self.label])

    def on_trade(self, ctx: flox.Context, t: flox.Trade) -> None:
        self.journal.append(["trade", self.label, t.trade_id])

    def on_order_update(self, ctx: flox.Context, u: flox.OrderUpdate) -> None:
        self.journal.append(["update", self.label, u.order_id, u.status])

    def on_fill(self, ctx: flox.Context, f: flox.Fill) -> None:
        self.journal.append(["fill", self.label, f.order_id, float(f.qty)])


def js_journal(script: Any) -> list[Any]:
    result: list[Any] = json.loads(script.eval("JSON.stringify(journal)"))
    return result


@pytest.mark.parametrize("plan", ["js>js", "js>py", "py>js", "py>js>js>py"])
async def test_swaps_in_every_direction_deliver_each_trade_exactly_once(
    plan: str, script_file: Any, tmp_path: Path
) -> None:
    script = load(script_file(JOURNAL), state_dir=tmp_path)
    py_journal: list[Any] = []
    langs = plan.split(">")
    made = [script.call("recorder", f"s{i}") if lang == "js" else Py(f"s{i}", py_journal)
            for i, lang in enumerate(langs)]
    events = trades(300)
    points = [70, 71, 222][: len(made) - 1]
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=16)) as runner:
        runner.add_strategy(made[0])
        handles = [runner.schedule_replace(0, s, at) for s, at in zip(made[1:], points, strict=True)]
        reports = [await h for h in handles]
    assert [(r.old_language, r.new_language) for r in reports] == [
        ({"js": "javascript", "py": "python"}[a], {"js": "javascript", "py": "python"}[b])
        for a, b in itertools.pairwise(langs)]
    entries = js_journal(script) + py_journal
    bounds = [0, *points, 300]
    for i in range(len(made)):
        got = [e[2] for e in entries if e[0] == "trade" and e[1] == f"s{i}"]
        assert got == [e.trade_id for e in events[bounds[i]:bounds[i + 1]]], f"strategy s{i}"
        mine = [e[0] for e in entries if e[1] == f"s{i}" and e[0] in ("start", "stop")]
        assert mine == ["start", "stop"]


async def test_replace_strategy_from_js_lands_at_the_next_event_boundary(tmp_path: Path) -> None:
    script = load(JS / "ab_switch.js", state_dir=tmp_path)
    events = trades(1000)
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=64)) as runner:
        runner.add_strategy(script.registered)
    assert runner.slots[0].swaps == 10  # after trades 100, 200, ..., 1000
    assert json.loads(script.eval("JSON.stringify(counts)")) == {"A": 500, "B": 500}
    assert runner.slots[0].dispatched == 1000


async def test_the_seed_javascript_example_runs_as_written(tmp_path: Path) -> None:
    state = tmp_path / "state"
    feed = flox.feeds.PushFeed(["BTCUSDT"])

    class Placeholder(flox.Strategy):
        pass

    async with flox.open_runner(feed) as runner:
        runner.add_strategy(Placeholder(["BTCUSDT"]))
        # The seed's script, loaded into a running engine: its last line swaps slot 0.
        first = load(JS / "seed_example.js", state_dir=state, runner=runner)
        await feed.push(trades(5))
        await runner.wait_idle()
        a = runner.slots[0].strategy
        assert runner.slots[0].language == "javascript"
        assert a.get("prices") == [e.price for e in trades(5)]
        # Half an hour later: the same file, loaded again, swaps in a fresh v2 from a new context.
        second = load(JS / "seed_example.js", state_dir=state, runner=runner)
        await feed.push(trades(2, start=5))
        await runner.wait_idle()
        b = runner.slots[0].strategy
        assert b.script is second and a.script is first
        # v2's onStart read what v1's onStop wrote through fs, then went on collecting.
        assert b.get("prices") == [e.price for e in trades(7)]
        feed.close()
    snapshot = json.loads((state / "tmp" / "strategy_state.json").read_text())
    assert snapshot["prices"] == [e.price for e in trades(7)]  # b's own onStop at shutdown


async def test_a_top_level_swap_loaded_with_runner_waits_for_the_slot_it_names(tmp_path: Path) -> None:
    """``load(..., runner=runner)`` on an empty runner: the script's ``replaceStrategy(0, ...)`` is held, not lost."""
    (tmp_path / "s.js").write_text(
        "function make(label) { const s = { symbols: ['BTCUSDT'], label, n: 0 };\n"
        "  s.onTrade = (ctx, t) => { s.n++; }; return s; }\n"
        "flox.register(make('v1'));\nrunner.replaceStrategy(0, make('v2'));\n")
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        script = load(tmp_path / "s.js", state_dir=tmp_path / "state", runner=runner)
        runner.add_strategy(script.registered)
        await feed.push(trades(3))
        await runner.wait_idle()
        status = runner.status().slots[0]
        assert status.swaps == 1 and status.errors == 0
        assert runner.slots[0].strategy.get("label") == "v2"
        feed.close()


async def test_an_order_placed_in_js_is_filled_after_a_swap_to_python(
    script_file: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    src = JOURNAL + """
    function placer() {
      var s = recorder('placer');
      s.onTrade = function (ctx, t) { journal.push(['trade', 'placer', t.tradeId]);
                                      if (t.tradeId === '0') journal.push(['order', ctx.limitBuy(95, 2)]); };
      return s;
    }"""
    script = load(script_file(src), state_dir=tmp_path)
    py_journal: list[Any] = []
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01)) as runner:
        runner.add_strategy(script.call("placer"))
        await feed.push(trades(1))
        await runner.wait_idle()
        await runner.replace_strategy(0, Py("python", py_journal))
        await trio.sleep(0.05)
        await feed.push([flox.Trade("BTCUSDT", 94.0, 5.0, "sell", "x")])
        await runner.wait_idle()
        feed.close()
    assert ["order", "0-1"] in js_journal(script)
    assert ["update", "python", "0-1", "accepted"] in py_journal
    assert ["fill", "python", "0-1", 2.0] in py_journal
    assert ["update", "python", "0-1", "filled"] in py_journal
    assert runner.executor.position(0, "BTCUSDT").qty == 2


async def test_ema_js_trades_and_carries_prices_over_a_swap(tmp_path: Path, autojump_clock: Any) -> None:
    import math

    script = load(JS / "ema.js", state_dir=tmp_path)
    events = [flox.Trade("BTCUSDT", 100 + 5 * math.sin(i / 15), 1.0, "buy", str(i), 10**18 + i * 10**8)
              for i in range(600)]
    feed = flox.feeds.ListFeed(events, batch_size=20, pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.001)) as runner:
        old = script.registered
        runner.add_strategy(old)
        await trio.sleep(30)  # 300 trades at 10/s
        new = script.call("makeStrategy", "v2", 8, 21)
        await runner.replace_strategy(0, new)
        saved = json.loads((tmp_path / "ema_state.json").read_text())["prices"]
        assert saved == old.get("prices")  # the old strategy's onStop wrote its prices
        m = new.get("tradesSeen")  # the new one loaded them, then shifted one out per trade
        assert new.get("prices")[: len(saved) - m] == saved[m:]
    assert old.get("tradesSeen") + new.get("tradesSeen") == 600
    orders = runner.executor.orders()
    assert len(orders) >= 4
    assert {o.status for o in orders} == {"filled"}
