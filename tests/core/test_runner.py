from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.lowlevel

import flox_trio as flox

from .conftest import Recorder, make_trades


async def test_list_feed_delivers_everything_in_order(journal: list[Any]) -> None:
    events = make_trades(5000)
    s = Recorder(["BTCUSDT"], journal, "a")
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=100)) as runner:
        i = runner.add_strategy(s)
        await runner.wait_idle()
        assert runner.slots[i].dispatched == 5000
    assert s.trades == [e.trade_id for e in events]
    assert journal[0] == ("start", "a", None)
    assert journal[-1] == ("stop", "a", None)


async def test_strategy_added_at_top_of_body_sees_first_event(journal: list[Any]) -> None:
    events = make_trades(3)
    s = Recorder(["BTCUSDT"], journal, "a")
    async with flox.open_runner(flox.feeds.ListFeed(events)) as runner:
        runner.add_strategy(s)
    assert s.trades == ["0", "1", "2"]


async def test_body_exit_drains_finite_feed_and_stops_every_slot(journal: list[Any]) -> None:
    a, b = Recorder(["BTCUSDT"], journal, "a"), Recorder(["ETHUSDT"], journal, "b")
    events = make_trades(10) + make_trades(10, "ETHUSDT", start=100)
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=7)) as runner:
        runner.add_strategy(a)
        runner.add_strategy(b)
    assert a.trades == [str(i) for i in range(10)]
    assert b.trades == [str(i) for i in range(100, 110)]
    assert sorted(x for x in journal if x[0] == "stop") == [("stop", "a", None), ("stop", "b", None)]
    assert [s.state for s in runner.slots] == ["closed", "closed"]


async def test_on_stop_runs_when_the_body_raises(journal: list[Any]) -> None:
    s = Recorder(["BTCUSDT"], journal, "a")
    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012
        async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
            runner.add_strategy(s)
            await trio.lowlevel.checkpoint()
            raise KeyError("boom")
    assert info.group_contains(KeyError)
    assert ("stop", "a", None) in journal


async def test_routing_by_symbol_and_venue() -> None:
    journal: list[Any] = []
    plain = Recorder(["BTCUSDT"], journal, "plain")
    binance = Recorder(["binance:BTCUSDT"], journal, "binance")
    eth = Recorder(["ETHUSDT"], journal, "eth")
    events = [
        flox.Trade("BTCUSDT", 1.0, 1.0, "buy", "b1", venue="binance"),
        flox.Trade("BTCUSDT", 1.0, 1.0, "buy", "y1", venue="bybit"),
        flox.Trade("ETHUSDT", 1.0, 1.0, "buy", "e1", venue="bybit"),
    ]
    async with flox.open_runner(flox.feeds.ListFeed(events)) as runner:
        for s in (plain, binance, eth):
            runner.add_strategy(s)
        assert runner.watched_symbols == {"BTCUSDT", "ETHUSDT"}
    assert plain.trades == ["b1", "y1"]
    assert binance.trades == ["b1"]
    assert eth.trades == ["e1"]


async def test_push_feed_and_wait_idle(journal: list[Any]) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    s = Recorder(["BTCUSDT"], journal, "a")
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(s)
        await feed.push(make_trades(3))
        await runner.wait_idle()
        assert s.trades == ["0", "1", "2"]
        await feed.push(make_trades(2, start=3))
        await runner.wait_idle()
        assert s.trades == ["0", "1", "2", "3", "4"]
        feed.close()


async def test_watch_changes_are_announced_to_the_feed(journal: list[Any]) -> None:
    feed = flox.feeds.PushFeed()
    async with flox.open_runner(feed) as runner:
        changed = runner._watch_changed
        i = runner.add_strategy(Recorder(["BTCUSDT"], journal, "a"))
        assert changed.is_set()
        assert runner.watched_symbols == {"BTCUSDT"}
        await runner.remove_strategy(i)
        assert runner.watched_symbols == frozenset()
        feed.close()


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_overflow_policies_drop_and_count(policy: str) -> None:
    gate = trio.Event()
    seen: list[str] = []

    class Slow(flox.Strategy):
        async def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            await gate.wait()
            seen.append(trade.trade_id)

        def on_gap(self, ctx: flox.Context, gap: flox.Gap) -> None:
            seen.append(f"gap {gap.reason} {gap.missing}")

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, overflow=policy, capacity=2) as runner:
        i = runner.add_strategy(Slow(["BTCUSDT"]))
        for k in range(6):  # one batch in flight, two queued, three overflow
            await feed.push(make_trades(1, start=k))
            await trio.testing.wait_all_tasks_blocked()
        slot = runner.slots[i]
        assert slot.dropped == 3
        gate.set()
        await runner.wait_idle()
        # Nothing is lost silently: the next batch tells the strategy what was dropped before it.
        await feed.push(make_trades(1, start=6))
        feed.close()
        await runner.wait_idle()
        st = runner.status().slots[i]
    assert st.dropped == 3 and st.dropped_by_symbol == {"BTCUSDT": 3}
    trades = [s for s in seen if not s.startswith("gap")]
    gaps = [s for s in seen if s.startswith("gap")]
    assert sum(int(g.split()[-1]) for g in gaps) == 3 and seen[-1] == "6"
    if policy == "drop_newest":
        assert trades == ["0", "1", "2", "6"]
    else:
        assert trades == ["0", "4", "5", "6"]


async def test_bad_runner_arguments() -> None:
    with pytest.raises(flox.RunnerError, match="overflow must be one of"):
        async with flox.open_runner(flox.feeds.ListFeed([]), overflow="spill"):
            pass
    with pytest.raises(flox.RunnerError, match="feed must be"):
        async with flox.open_runner(object()):  # type: ignore[arg-type]
            pass


async def test_add_strategy_outside_the_runner_lifetime(journal: list[Any]) -> None:
    async with flox.open_runner(flox.feeds.ListFeed([])) as runner:
        pass
    with pytest.raises(flox.RunnerError, match="not running"):
        runner.add_strategy(Recorder(["BTCUSDT"], journal, "late"))


async def test_status_reports_slots_and_feed(journal: list[Any]) -> None:
    async with flox.open_runner(flox.feeds.ListFeed(make_trades(10))) as runner:
        runner.add_strategy(Recorder(["BTCUSDT"], journal, "a"))
        await runner.wait_idle()
        st = runner.status()
    assert st.published == 10
    assert st.slots[0].dispatched == 10
    assert st.slots[0].language == "python"
    assert st.feed.feed == "ListFeed" and st.feed.published == 10
    # The snapshot travels as JSON (control socket) and comes back the same.
    from flox_trio._core._convert import converter

    back = converter.structure(orjson.loads(orjson.dumps(converter.unstructure(st))), flox.RunnerStatus)
    assert back == st and back.slots[0].state is flox.SlotState.RUNNING


async def test_latency_is_none_for_events_not_stamped_by_this_engine(
    journal: list[Any], autojump_clock: Any
) -> None:
    """Receive times from a list (or a tape) are on another clock: no latency, never a bogus one."""
    old = [flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), 0, 1_600_000_000_000_000_000 + i) for i in range(5)]
    async with flox.open_runner(flox.feeds.ListFeed(old)) as runner:
        runner.add_strategy(Recorder(["BTCUSDT"], journal, "a"))
        await runner.wait_idle()
        st = runner.status()
    assert st.slots[0].dispatched == 5
    assert st.slots[0].latency_us is None


async def test_latency_is_measured_on_the_engine_clock_for_stamped_feeds(
    journal: list[Any], autojump_clock: Any
) -> None:
    class Stamping(flox.feeds.PushFeed):
        """Stamps receive times as a connector does: with the engine's own wall clock."""

        stamps_receive_time = True

        async def run(self, hub: flox.feeds.FeedHub) -> None:
            self.hub = hub
            await super().run(hub)

    feed = Stamping(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(Recorder(["BTCUSDT"], journal, "a"))
        await trio.sleep(1)
        for i in range(5):
            await feed.push([flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), 0, runner.clock.wall_ns())])
            await trio.sleep(0.001)
        # A venue's kline comes as a Bar, which has no receive time of its own.
        await feed.push([flox.Bar("BTCUSDT", 1, 1, 1, 1, 1, 1, 0, 1, 1.0)])
        feed.close()
        await runner.wait_idle()
        st = runner.status()
    latency = st.slots[0].latency_us
    assert latency is not None and 0 <= latency < 1_000  # virtual time: the events were delivered at once


async def test_a_gap_reaches_on_gap_in_order(journal: list[Any]) -> None:
    seen: list[Any] = []

    class Watch(Recorder):
        def on_gap(self, ctx: flox.Context, gap: flox.Gap) -> None:
            seen.append(("gap", gap.first_id, gap.last_id, gap.missing))

        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            seen.append(("trade", trade.trade_id))

    trades = make_trades(4)
    gap = flox.Gap("BTCUSDT", "trade_ids", 3, "2", "4", venue="binance")
    async with flox.open_runner(flox.feeds.ListFeed([trades[0], trades[1], gap, trades[3]])) as runner:
        runner.add_strategy(Watch(["BTCUSDT"], journal, "w"))
    assert seen == [("trade", "0"), ("trade", "1"), ("gap", "2", "4", 3), ("trade", "3")]
