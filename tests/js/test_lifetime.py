"""What a script context keeps: strategies Python dropped are released; an abandoned call leaves nothing behind."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import trio
import trio.testing

import flox_trio as flox
from flox_trio.js import load

from .conftest import JS, trades

MAKER = """
function makeStrategy(label) {
  return { symbols: [sym], label: label, blob: new Array(200).fill(label),
           onTrade: function (ctx, t) { seen.push(this.label); } };
}
var seen = [];
flox.register(makeStrategy('kept'));
"""


async def test_strategies_dropped_in_python_are_released_in_js(script_file: Any, tmp_path: Path) -> None:
    script = load(script_file(MAKER), state_dir=tmp_path)
    kept = script.registered
    before = script.memory()["malloc_size"]
    for i in range(3000):
        script.call("makeStrategy", f"v{i}")
    gc.collect()
    script.call("makeStrategy", "last")  # releases happen at the start of the next call
    # 3000 strategies of ~2 KB each would be ~6 MB if the context kept them.
    assert script.memory()["malloc_size"] - before < 200_000
    # A strategy Python still holds keeps working, and is not confused with a released one.
    async with flox.open_runner(flox.feeds.ListFeed(trades(3))) as runner:
        runner.add_strategy(kept)
    assert runner.slots[0].dispatched == 3
    assert script.eval("seen.join(',')") == "kept,kept,kept"


async def test_ab_switch_swaps_forever_within_its_memory_limit(tmp_path: Path) -> None:
    # ab_switch.js builds a fresh variant for every swap (every 100 trades): 2500
    # swaps would exhaust a 1 MiB limit if swapped-out variants stayed in the context.
    script = load(JS / "ab_switch.js", state_dir=tmp_path, sym="BTCUSDT", memory_limit=1024 * 1024)
    events = trades(250_000)
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=1024)) as runner:
        runner.add_strategy(script.registered)
    slot = runner.slots[0]
    assert slot.quarantine_reason is None
    assert slot.swaps == len(events) // 100
    assert slot.dispatched == len(events)
    assert script.eval("counts.A + counts.B") == len(events)


RUNAWAY = """
var k = 0;
function make() {
  return { symbols: [sym],
           onTrade: function (ctx, t) {
             k++;
             if (k === 1) { ctx.marketBuy(1); console.log('bought on trade ' + t.tradeId); }
             if (k === 3) { while (true) {} }
           },
           onStop: function () {} };
}
flox.register(make());
"""


async def test_a_runaway_call_keeps_what_came_before_and_leaks_nothing_into_the_next_call(
    script_file: Any, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="flox_trio.js")
    script = load(script_file(RUNAWAY, "runaway.js"), state_dir=tmp_path, time_limit=0.05)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.0)) as runner:
        first = runner.add_strategy(script.registered)
        await feed.push(trades(10))
        await runner.wait_idle()
        slot = runner.slots[first]
        assert slot.state == "quarantined"
        # Trades 0-2 reached the strategy (it ran away on the third); 3-9 never did.
        assert slot.dispatched == 3
        assert "event 2 of a batch of 10" in (slot.last_error or "")
        # The order it placed on trade 0 had its id handed out, so it exists.
        assert [o.order_id for o in runner.executor.orders()] == ["0-1"]
        # A second slot of the same script must not receive anything the abandoned call collected.
        second = runner.add_strategy(script.call("make"))
        await trio.testing.wait_all_tasks_blocked()
        feed.close()
    assert runner.slots[second].errors == 0
    assert [r.getMessage() for r in caplog.records].count("[runaway.js] bought on trade 0") == 1
