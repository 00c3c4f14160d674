"""``Runner.publish_nowait``: a batch published in the caller's call when nothing has to wait, else refused whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

import flox_trio as flox
from flox_trio.tape import TapeReader

from .conftest import AsyncRecorder, Recorder, make_trades


class SwapsItself(Recorder):
    """Asks for its own replacement from inside ``on_trade``, after ``after`` trades."""

    def __init__(self, symbols: Any, journal: list[Any], label: str, runner: Any, after: int) -> None:
        super().__init__(symbols, journal, label)
        self.runner, self.after = runner, after
        self.successor = Recorder(symbols, journal, "new")

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        super().on_trade(ctx, trade)
        if len(self.trades) == self.after:
            self.runner.request_replace(0, self.successor)


async def settle() -> None:
    for _ in range(5):
        await trio.lowlevel.checkpoint()


async def test_one_idle_sync_slot_takes_the_batch_before_the_call_returns(tmp_path: Path) -> None:
    journal: list[Any] = []
    s = Recorder(["BTCUSDT"], journal, "s")
    batch = make_trades(10)
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"]), tape=tmp_path / "t.tape") as runner:
        runner.add_strategy(s)
        await settle()
        assert runner.publish_nowait(batch) is True
        # Dispatched in the call: no checkpoint in between.
        assert s.trades == [t.trade_id for t in batch]
        slot = runner.slots[0]
        assert (slot.queue.enqueued, slot.dispatched) == (0, 10)  # never through its queue
        assert runner.status().market_events == 10
        # Events of a symbol nobody watches are published (counted, recorded) and go nowhere.
        assert runner.publish_nowait(make_trades(3, "ETHUSDT", start=10)) is True
        assert runner.status().market_events == 13 and len(s.trades) == 10
    assert [e.trade_id for rec in TapeReader(tmp_path / "t.tape").iter_market_batches() for e in rec.events] == \
        [str(i) for i in range(13)]


async def test_it_refuses_whole_whenever_something_would_have_to_wait(autojump_clock: trio.testing.MockClock) -> None:
    journal: list[Any] = []
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT", "ETHUSDT", "SOLUSDT"])) as runner:
        one = Recorder(["BTCUSDT"], journal, "one")
        runner.add_strategy(one)
        # Just added: its on_start has not run, so it cannot take events in this call.
        assert runner.publish_nowait(make_trades(2)) is False
        await settle()
        two = Recorder(["BTCUSDT"], journal, "two")
        runner.add_strategy(two)
        await settle()
        # Two slots on the symbol: the bus must group and may wait for either.
        assert runner.publish_nowait(make_trades(2)) is False
        runner.add_strategy(AsyncRecorder(["ETHUSDT"], journal, "async"))
        await settle()
        # An async strategy is served by its own task.
        assert runner.publish_nowait(make_trades(2, "ETHUSDT")) is False
        sol = Recorder(["SOLUSDT"], journal, "sol")
        runner.add_strategy(sol)
        await settle()
        assert runner.publish_nowait(make_trades(2, "SOLUSDT")) is True
        # A resting order the batch may fill: its fill must reach the slot before the batch does.
        runner.slots[3].ctxs["SOLUSDT"].limit_buy(50.0, 0.1)
        await trio.sleep(1.0)  # acknowledged: it rests
        assert [status for kind, who, (_, status) in (j for j in journal if j[0] == "update")
                if who == "sol"] == ["accepted"]
        assert runner.publish_nowait(make_trades(2, "SOLUSDT", start=2)) is False
        # Nothing refused was counted, recorded or seen.
        assert runner.status().market_events == 2
        assert (one.trades, two.trades, sol.trades) == ([], [], ["0", "1"])


async def test_a_lockstep_runner_refuses() -> None:
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"]), lockstep=True) as runner:
        runner.add_strategy(Recorder(["BTCUSDT"], [], "s"))
        await settle()
        assert runner.publish_nowait(make_trades(2)) is False


async def test_a_swap_asked_for_in_the_middle_of_the_batch_lands_at_the_next_event(
        autojump_clock: trio.testing.MockClock) -> None:
    journal: list[Any] = []
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
        old = SwapsItself(["BTCUSDT"], journal, "old", runner, 3)
        runner.add_strategy(old)
        await settle()
        batch = make_trades(10)
        assert runner.publish_nowait(batch) is True
        assert old.trades == ["0", "1", "2"]  # the rest waits in the slot's queue for the swap
        await runner.wait_idle()
        assert old.successor.trades == [str(i) for i in range(3, 10)]
        assert runner.slots[0].strategy is old.successor
    order = [(kind, who) for kind, who, _ in journal if kind in ("start", "stop")]
    assert order == [("start", "old"), ("stop", "old"), ("start", "new"), ("stop", "new")]
