"""The seven guarantees of a swap (PRODUCT.md section 3), one or more tests each."""

from __future__ import annotations

import hashlib
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flox_trio as flox

from .conftest import AsyncRecorder, Recorder, make_trades

# --- 1. order -------------------------------------------------------------------------


async def test_lifecycle_order_and_pointer_change(journal: list[Any]) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    seen_in: dict[str, Any] = {}

    class Old(Recorder):
        def on_stop(self) -> None:
            seen_in["old_stop"] = runner.slots[0].strategy
            super().on_stop()

    class New(Recorder):
        def on_start(self) -> None:
            seen_in["new_start"] = runner.slots[0].strategy
            super().on_start()

    old, new = Old(["BTCUSDT"], journal, "old"), New(["BTCUSDT"], journal, "new")
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(old)
        await feed.push(make_trades(2))
        await runner.wait_idle()
        report = await runner.replace_strategy(0, new)
        await feed.push(make_trades(1, start=2))
        await runner.wait_idle()
        feed.close()
    assert seen_in == {"old_stop": old, "new_start": new}
    assert journal[:6] == [
        ("start", "old", None), ("trade", "old", "0"), ("trade", "old", "1"),
        ("stop", "old", None), ("start", "new", None), ("trade", "new", "2"),
    ]
    assert report.at_event == 2
    assert report.old_language == report.new_language == "python"


# --- 2. exactly once, in order ----------------------------------------------------------


@pytest.mark.parametrize("cls", [Recorder, AsyncRecorder])
async def test_exactly_once_under_many_swaps(cls: type[Recorder], journal: list[Any]) -> None:
    n = 20_000
    events = make_trades(n)
    strategies: list[Recorder] = []

    def fresh() -> Recorder:
        s = cls(["BTCUSDT"], journal, f"s{len(strategies)}")
        strategies.append(s)
        return s

    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=64)) as runner:
        runner.add_strategy(fresh())
        while runner.slots[0].dispatched < n - 500:
            await runner.replace_strategy(0, fresh())
        await runner.wait_idle()
        assert runner.slots[0].dispatched == n
    delivered = [tid for s in strategies for tid in s.trades]
    assert delivered == [e.trade_id for e in events]
    assert len(strategies) > 5


async def test_request_replace_from_inside_a_callback_lands_at_the_next_event(journal: list[Any]) -> None:
    class SwapAt(Recorder):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            super().on_trade(ctx, trade)
            if trade.trade_id == "3":
                ctx.runner.request_replace(ctx.slot, Recorder(["BTCUSDT"], journal, "new"))

    events = make_trades(8)
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=8)) as runner:
        runner.add_strategy(SwapAt(["BTCUSDT"], journal, "old"))
    trades = [(who, tid) for kind, who, tid in journal if kind == "trade"]
    assert trades == [("old", "0"), ("old", "1"), ("old", "2"), ("old", "3"),
                      ("new", "4"), ("new", "5"), ("new", "6"), ("new", "7")]
    i = journal.index(("stop", "old", None))
    assert journal[i + 1] == ("start", "new", None)
    assert journal[i - 1] == ("trade", "old", "3")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.integers(1, 40)),
            st.tuples(st.just("swap"), st.booleans()),
            st.tuples(st.just("request"), st.booleans()),
            st.tuples(st.just("yield"), st.integers(0, 3)),
        ),
        min_size=1, max_size=30,
    ),
    async_old=st.booleans(),
)
def test_exactly_once_property(plan: list[tuple[str, Any]], async_old: bool) -> None:
    """Random interleavings of publishes, async/sync callbacks, awaited and requested swaps."""

    async def main() -> None:
        journal: list[Any] = []
        strategies: list[Recorder] = []

        def fresh(is_async: bool) -> Recorder:
            s = (AsyncRecorder if is_async else Recorder)(["BTCUSDT"], journal, f"s{len(strategies)}")
            strategies.append(s)
            return s

        feed = flox.feeds.PushFeed(["BTCUSDT"], buffer=1000)
        pushed: list[str] = []
        handles = []
        async with flox.open_runner(feed, capacity=4) as runner:
            runner.add_strategy(fresh(async_old))
            async with trio.open_nursery() as nursery:
                for op, arg in plan:
                    if op == "push":
                        batch = make_trades(arg, start=len(pushed))
                        pushed.extend(e.trade_id for e in batch)
                        feed.push_nowait(batch)
                    elif op == "swap":
                        nursery.start_soon(_await, runner.replace_strategy(0, fresh(arg)))
                    elif op == "request":
                        handles.append(runner.request_replace(0, fresh(arg)))
                    else:
                        for _ in range(arg):
                            await trio.lowlevel.checkpoint()
            feed.close()
            await runner.wait_idle()
        delivered = [tid for s in strategies for tid in s.trades]
        assert delivered == pushed
        # Lifecycle order per strategy: start, then its trades, then stop.
        for s in strategies:
            mine = [k for k, who, _ in journal if who == s.label]
            assert mine[0] == "start" and mine[-1] == "stop"
            assert mine.count("start") == mine.count("stop") == 1
            assert "start" not in mine[1:-1] and "stop" not in mine[1:-1]
        # Strategies run one after another, never overlapping.
        order = [who for k, who, _ in journal if k in ("start", "stop")]
        assert order == [x for s in strategies for x in (s.label, s.label)]
        assert all(h.done for h in handles)

    async def _await(handle: flox.SwapHandle) -> None:
        await handle

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- 3. in flight -------------------------------------------------------------------------


async def test_in_flight_async_dispatch_finishes_on_the_old_strategy(journal: list[Any]) -> None:
    release = trio.Event()
    entered = trio.Event()

    class Slow(Recorder):
        async def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:  # type: ignore[override]
            entered.set()
            await release.wait()
            super().on_trade(ctx, trade)

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(Slow(["BTCUSDT"], journal, "old"))
        await feed.push(make_trades(2))
        await entered.wait()
        handle = runner.replace_strategy(0, Recorder(["BTCUSDT"], journal, "new"))
        await trio.testing.wait_all_tasks_blocked()
        assert not handle.done
        assert ("stop", "old", None) not in journal
        release.set()
        report = await handle
        await runner.wait_idle()
        feed.close()
    assert report.at_event == 1
    assert [(w, t) for k, w, t in journal if k == "trade"] == [("old", "0"), ("new", "1")]
    assert journal.index(("trade", "old", "0")) < journal.index(("stop", "old", None))


# --- 4. nothing else moves -------------------------------------------------------------------


async def test_executor_and_orders_survive_a_swap_and_fills_reach_the_new_strategy(
    journal: list[Any], autojump_clock: trio.testing.MockClock
) -> None:
    placed: list[str] = []

    class Placer(Recorder):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            super().on_trade(ctx, trade)
            if not placed:
                placed.append(ctx.limit_buy(90.0, 1))

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    executor = flox.PaperExecutor(latency=0.01)
    new = Recorder(["BTCUSDT"], journal, "new")
    async with flox.open_runner(feed, executor) as runner:
        runner.add_strategy(Placer(["BTCUSDT"], journal, "old"))
        await feed.push([flox.Trade("BTCUSDT", 100.0, 1.0, "buy", "t0")])
        await runner.wait_idle()
        assert placed == ["0-1"]
        await runner.replace_strategy(0, new)  # the order is still in flight (10 ms latency)
        assert runner.executor is executor
        await trio.sleep(0.05)
        await runner.wait_idle()
        open_ids = [o.order_id for o in runner.slots[0].ctxs["BTCUSDT"].open_orders]
        assert open_ids == ["0-1"]
        await feed.push([flox.Trade("BTCUSDT", 89.5, 0.4, "sell", "t1"),
                         flox.Trade("BTCUSDT", 89.0, 2.0, "sell", "t2")])
        await runner.wait_idle()
        await trio.sleep(0.01)
        await runner.wait_idle()
        ctx = runner.slots[0].ctxs["BTCUSDT"]
        assert ctx.position == 1
        feed.close()
    new_events = [(k, p) for k, w, p in journal if w == "new" and k in ("update", "fill")]
    assert ("update", ("0-1", "accepted")) in new_events
    assert ("fill", ("0-1", Decimal("0.4"))) in new_events
    assert ("update", ("0-1", "partially_filled")) in new_events
    assert ("update", ("0-1", "filled")) in new_events
    assert not [x for x in journal if x[1] == "old" and x[0] in ("update", "fill")]


# --- 5. failure is clean ------------------------------------------------------------------------


async def test_bad_replacements_change_nothing(journal: list[Any]) -> None:
    old = Recorder(["BTCUSDT"], journal, "old")
    feed = flox.feeds.PushFeed(["BTCUSDT"])

    class Broken(flox.Strategy):
        def __init__(self) -> None:  # forgets super().__init__
            pass

    async with flox.open_runner(feed) as runner:
        runner.add_strategy(old)
        with pytest.raises(flox.StrategyTypeError, match="not a strategy"):
            runner.replace_strategy(0, object())
        with pytest.raises(flox.StrategyTypeError, match="super"):
            runner.replace_strategy(0, Broken())
        with pytest.raises(flox.SymbolMismatchError, match="add_strategy"):
            runner.replace_strategy(0, Recorder(["ETHUSDT"], journal, "eth"))
        await feed.push(make_trades(1))
        await runner.wait_idle()
        assert runner.slots[0].strategy is old
        assert runner.slots[0].swaps == 0
        feed.close()
    assert old.trades == ["0"]


async def test_new_on_start_raising_puts_the_old_strategy_back(journal: list[Any]) -> None:
    gate = trio.Event()

    class BadStart(Recorder):
        async def on_start(self) -> None:  # type: ignore[override]
            journal.append(("start", self.label, None))
            await gate.wait()  # events arrive while we are starting
            raise RuntimeError("cannot load model")

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    old = Recorder(["BTCUSDT"], journal, "old")
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(old)
        handle = runner.replace_strategy(0, BadStart(["BTCUSDT"], journal, "bad"))
        await trio.testing.wait_all_tasks_blocked()
        await feed.push(make_trades(3))
        gate.set()
        with pytest.raises(flox.SwapError, match="put back") as info:
            await handle
        assert isinstance(info.value.__cause__, RuntimeError)
        await runner.wait_idle()
        assert runner.slots[0].strategy is old
        assert runner.slots[0].state == "running"
        feed.close()
    assert journal[:4] == [("start", "old", None), ("stop", "old", None), ("start", "bad", None),
                           ("start", "old", None)]
    assert old.trades == ["0", "1", "2"]


async def test_old_on_stop_raising_still_completes_the_swap(journal: list[Any], caplog: Any) -> None:
    class BadStop(Recorder):
        def on_stop(self) -> None:
            raise OSError("disk full")

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    new = Recorder(["BTCUSDT"], journal, "new")
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(BadStop(["BTCUSDT"], journal, "old"))
        report = await runner.replace_strategy(0, new)
        assert runner.slots[0].strategy is new
        assert report.stop_error == "OSError: disk full"
        assert runner.slots[0].errors == 1
        feed.close()
    assert "disk full" in caplog.text


# --- 6. serialised; clear errors -------------------------------------------------------------------


async def test_concurrent_swaps_of_one_slot_are_serialised(journal: list[Any]) -> None:
    class SlowStart(Recorder):
        async def on_start(self) -> None:  # type: ignore[override]
            journal.append(("begin", self.label, None))
            await trio.sleep(0.01)
            super().on_start()

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    a, b, c = (SlowStart(["BTCUSDT"], journal, x) for x in "abc")
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(a)
        reports = []
        async with trio.open_nursery() as nursery:
            async def swap(s: Recorder) -> None:
                reports.append(await runner.replace_strategy(0, s))
            nursery.start_soon(swap, b)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(swap, c)
        assert runner.slots[0].strategy is c
        assert runner.slots[0].swaps == 2
        feed.close()
    starts = [(k, w) for k, w, _ in journal if k in ("begin", "start", "stop")]
    assert starts[:8] == [("begin", "a"), ("start", "a"), ("stop", "a"), ("begin", "b"), ("start", "b"),
                          ("stop", "b"), ("begin", "c"), ("start", "c")]


async def test_unknown_and_removed_slots_raise_clear_errors(journal: list[Any]) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        with pytest.raises(flox.UnknownSlotError, match="add a strategy first"):
            runner.replace_strategy(0, Recorder(["BTCUSDT"], journal, "x"))
        i = runner.add_strategy(Recorder(["BTCUSDT"], journal, "a"))
        with pytest.raises(flox.UnknownSlotError, match="no slot 5"):
            runner.replace_strategy(5, Recorder(["BTCUSDT"], journal, "x"))
        await runner.remove_strategy(i)
        assert runner.slots[i].state == "removed"
        with pytest.raises(flox.UnknownSlotError, match="removed"):
            runner.replace_strategy(i, Recorder(["BTCUSDT"], journal, "x"))
        with pytest.raises(flox.UnknownSlotError):
            await runner.remove_strategy(i)
        feed.close()
    assert ("stop", "a", None) in journal


# --- 7. a raising strategy never stops the engine -----------------------------------------------------


async def test_raising_strategy_is_quarantined_and_others_keep_running(journal: list[Any], caplog: Any) -> None:
    caplog.set_level(logging.ERROR, "flox_trio")

    class Raiser(Recorder):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            super().on_trade(ctx, trade)
            raise ValueError(f"bad trade {trade.trade_id}")

    good = Recorder(["BTCUSDT"], journal, "good")
    events = make_trades(50)
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=10), max_errors=5) as runner:
        bad_i = runner.add_strategy(Raiser(["BTCUSDT"], journal, "bad"))
        runner.add_strategy(good)
        await runner.wait_idle()
        bad = runner.slots[bad_i]
        assert bad.state == "quarantined"
        assert bad.errors == 5
        assert bad.dispatched == 5
        st = runner.status().slots[bad_i]
        assert st.quarantined is True and st.last_error is not None and "bad trade 4" in st.last_error
        # A fixed strategy swapped in lifts the quarantine.
        fixed = Recorder(["BTCUSDT"], journal, "fixed")
        await runner.replace_strategy(bad_i, fixed)
        assert bad.state == "running"
    assert good.trades == [e.trade_id for e in events]
    assert "slot 0" in caplog.text and "bad trade 0" in caplog.text and "Trade(" in caplog.text


async def test_on_start_raising_at_add_quarantines_the_slot(journal: list[Any]) -> None:
    class BadStart(Recorder):
        def on_start(self) -> None:
            raise RuntimeError("no model")

    async with flox.open_runner(flox.feeds.ListFeed(make_trades(5))) as runner:
        i = runner.add_strategy(BadStart(["BTCUSDT"], journal, "bad"))
        await runner.wait_idle()
        assert runner.slots[i].state == "quarantined"
        assert runner.slots[i].dispatched == 0


@pytest.mark.parametrize("cls", [Recorder, AsyncRecorder])
async def test_exactly_once_at_100k_events_per_second(
    cls: type[Recorder], journal: list[Any], autojump_clock: trio.testing.MockClock
) -> None:
    """100 events every virtual millisecond for half a second, a swap every 10 ms."""
    feed = flox.feeds.PushFeed(["BTCUSDT"], buffer=8)
    strategies: list[Recorder] = []

    def fresh() -> Recorder:
        strategies.append(cls(["BTCUSDT"], journal, f"s{len(strategies)}"))
        return strategies[-1]

    pushed: list[str] = []

    async def produce() -> None:
        for tick in range(500):
            batch = make_trades(100, start=tick * 100)
            pushed.extend(e.trade_id for e in batch)
            await feed.push(batch)
            await trio.sleep(0.001)
        feed.close()

    async with flox.open_runner(feed) as runner:
        runner.add_strategy(fresh())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            while not feed.finite:
                await trio.sleep(0.01)
                await runner.replace_strategy(0, fresh())
    assert [t for s in strategies for t in s.trades] == pushed
    assert len(pushed) == 50_000
    assert len(strategies) >= 45


@pytest.mark.parametrize("points", [[300], [0], [64, 128, 129, 999], [1000]])
async def test_scheduled_swaps_land_on_the_exact_market_event(points: list[int], journal: list[Any]) -> None:
    events = make_trades(1000)
    strategies = [Recorder(["BTCUSDT"], journal, "s0")]
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=64)) as runner:
        runner.add_strategy(strategies[0])
        handles = []
        for k, at in enumerate(points, start=1):
            strategies.append(Recorder(["BTCUSDT"], journal, f"s{k}"))
            handles.append(runner.schedule_replace(0, strategies[-1], at))
        reports = [await h for h in handles]
    assert [r.at_market_event for r in reports] == points
    bounds = [0, *points, 1000]
    for s, lo, hi in zip(strategies, bounds[:-1], bounds[1:], strict=True):
        assert s.trades == [e.trade_id for e in events[lo:hi]]


def test_hosts_of_one_class_share_its_source_and_a_reloaded_file_is_read_again(tmp_path: Path) -> None:
    """The source and hash a host records are read once per class (a whole market adds a slot per
    symbol, all of one class); a file loaded again after an edit is a new class, with its new source."""
    from flox_trio._core._host import PythonHost
    from flox_trio._loader import load_strategy, parse_spec

    file = tmp_path / "counting.py"
    v1 = "import flox_trio as flox\n\nclass Count(flox.Strategy):\n    def on_trade(self, ctx, trade):\n        pass\n"
    file.write_text(v1, encoding="utf-8")
    spec = parse_spec(f"{file}:Count")
    a, b = (PythonHost(load_strategy(spec, [sym])) for sym in ("BTCUSDT", "ETHUSDT"))
    first = PythonHost(type(a.strategy)(["SOLUSDT"]))
    assert a.source() == b.source() == first.source() == v1
    assert a.source_hash == first.source_hash == hashlib.sha256(v1.encode()).hexdigest()
    v2 = v1.replace("pass", "self.n = 1")
    file.write_text(v2, encoding="utf-8")
    again = PythonHost(load_strategy(spec, ["BTCUSDT"]))
    assert again.source() == v2 and again.source_hash == hashlib.sha256(v2.encode()).hexdigest()
    # The class loaded before the edit still says what it was built from.
    assert PythonHost(type(a.strategy)(["XRPUSDT"])).source() == v1
