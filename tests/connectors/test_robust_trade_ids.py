"""Binance trade ids are consecutive per symbol (``trade``'s ``t``, ``aggTrade``'s ``a``): a jump is a gap.

The gap is counted in status, reported as a connector "gap" event and
published to the strategies as a ``Gap(symbol, "trade_ids", ...)`` in the
batch of the first trade after it, on one connection or across a reconnect.
Bybit's trade ids are not ordered, so nothing is inferred from them.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import flox_trio as flox
from flox_trio import Gap, Trade
from flox_trio.connectors import Binance, Bybit

from .conftest import FAST, RecordingHub, running, simulator, wait_until

QUIET = {**FAST, "stale_timeout": 10_000.0}
T0 = 1_700_000_000_000


def trade(t: int, stream: str = "trade", symbol: str = "BTCUSDT") -> dict[str, Any]:
    data = {"e": stream, "E": T0 + t, "s": symbol, "p": "100", "q": "1", "T": T0 + t, "m": False, "M": True}
    if stream == "trade":
        data["t"] = t
    else:
        data.update(a=t, f=t * 10, l=t * 10 + 3)
    return {"stream": f"{symbol.lower()}@{stream}", "data": data}


def gaps(hub: RecordingHub, symbol: str | None = None) -> list[Gap]:
    return [e for e in hub.events if type(e) is Gap and (symbol is None or e.symbol == symbol)]


def uncovered(hub: RecordingHub, symbol: str) -> list[int]:
    """Ids between the first and the last delivered trade that are neither delivered nor in a Gap."""
    seen = {int(t.trade_id) for t in hub.trades(symbol)}
    for g in gaps(hub, symbol):
        seen.update(range(int(g.first_id), int(g.last_id) + 1))
    return [i for i in range(min(seen), max(seen) + 1) if i not in seen]


@pytest.mark.parametrize("stream", ["trade", "aggTrade"])
async def test_a_jump_in_trade_ids_is_a_gap_before_the_next_trade(
        stream: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=(stream,), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("binance", [trade(i, stream) for i in (1, 2, 3, 7, 8, 9, 10, 12)])
            await wait_until(lambda: len(hub.trades()) == 8)
            st = feed.status()
        # Frames that wait are published together, in order; a frame's gap stays right before its trade.
        events = [e for b in hub.batches for e in b]
        assert [type(e).__name__ for e in events] == ["Trade"] * 3 + ["Gap"] + ["Trade"] * 4 + ["Gap", "Trade"]
        gap, seven = events[3:5]
        assert type(gap) is Gap and type(seven) is Trade and seven.trade_id == "7"
        assert (gap.symbol, gap.reason, gap.missing, gap.first_id, gap.last_id, gap.venue) == \
            ("BTCUSDT", "trade_ids", 3, "4", "6", "binance")
        assert gap.exchange_ts_ns == seven.exchange_ts_ns and gap.recv_ts_ns == seven.recv_ts_ns
        assert [(g.first_id, g.last_id, g.missing) for g in gaps(hub)] == [("4", "6", 3), ("11", "11", 1)]
        reports = hub.kinds("gap")
        assert [(r["symbol"], r["channel"], r["expected"], r["got"], r["missing"]) for r in reports] == \
            [("BTCUSDT", stream, 4, 7, 3), ("BTCUSDT", stream, 11, 12, 1)]
        assert st.gaps == 2 and st.missed == {"BTCUSDT": 4}
        assert st.errors == 0


async def test_trade_and_agg_trade_ids_are_separate_sequences(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT", "ETHUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT", "ETHUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade", "aggTrade"), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT", "ETHUSDT"})
            frames = []
            for i in range(1, 6):
                frames += [trade(100 + i), trade(i, "aggTrade"), trade(500 + i, symbol="ETHUSDT")]
            await sim.play("binance", frames)
            await wait_until(lambda: len(hub.trades()) == 15)
        assert gaps(hub) == [] and feed.gaps == 0


async def test_trades_lost_across_a_reconnect_are_a_gap(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10, trades_per_tick=(1, 3)) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT", "ETHUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **{**FAST, "backoff_base": 3.0})
        async with running(feed, hub):
            await wait_until(lambda: len(hub.trades("BTCUSDT")) >= 10)
            first = feed.connection_id
            sim.faults.drop("binance")
            await wait_until(lambda: feed.connection_id != first and len(hub.trades("BTCUSDT")) >= 40)
            st = feed.status()
        assert feed.connect_count == 2
        for s in ("BTCUSDT", "ETHUSDT"):
            (gap,) = gaps(hub, s)
            old, new = (c.trade_ids[s] for c in sim.connections)
            # Exactly the ids the venue matched while nobody listened.
            assert (gap.first_id, gap.last_id) == (str(int(old[-1]) + 1), str(int(new[0]) - 1))
            assert gap.missing == int(new[0]) - int(old[-1]) - 1 > 0
            assert uncovered(hub, s) == []
            # In the batch of the new connection's first trade, right before it.
            i = hub.events.index(gap)
            assert type(hub.events[i + 1]) is Trade and hub.events[i + 1].trade_id == new[0]
            assert st.missed[s] == gap.missing
        assert {r["symbol"] for r in hub.kinds("gap")} == {"BTCUSDT", "ETHUSDT"}


async def test_the_strategy_is_told_and_the_slot_counts_it(autojump_clock: trio.testing.MockClock) -> None:
    class Watch(flox.Strategy):
        def __init__(self, symbols: Any) -> None:
            super().__init__(symbols)
            self.seen: list[Any] = []

        def on_trade(self, ctx: flox.Context, t: Trade) -> None:
            self.seen.append(int(t.trade_id))

        def on_gap(self, ctx: flox.Context, gap: Gap) -> None:
            self.seen.append((int(gap.first_id), int(gap.last_id)))

    async with simulator(rate=10) as sim:
        feed = Binance([], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("trade",),
                       **{**FAST, "backoff_base": 2.0})
        strategy = Watch(["BTCUSDT"])
        async with flox.open_runner(feed) as runner:
            runner.add_strategy(strategy)
            await wait_until(lambda: len(strategy.seen) >= 10)
            sim.faults.drop("binance")
            await wait_until(lambda: feed.connect_count == 2 and len(strategy.seen) >= 30)
            status = runner.status()
        (first, last), = (s for s in strategy.seen if type(s) is tuple)
        ids = [s for s in strategy.seen if type(s) is int]
        assert sorted(set(ids) | set(range(first, last + 1))) == list(range(ids[0], ids[-1] + 1))
        assert status.slots[0].missed == {"BTCUSDT": last - first + 1}
        assert status.connector_events["gap"] == 1


async def test_a_planned_handover_repeats_nothing_and_misses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade", "aggTrade"), **FAST)
        async with running(feed, hub):
            await wait_until(lambda: len(hub.trades()) >= 10)
            sim.faults.server_shutdown(grace=5.0)
            await wait_until(lambda: feed.connect_count == 2 and len(hub.kinds("disconnect")) == 1)
            await trio.sleep(5.0)
        ids = hub.trade_ids("BTCUSDT")
        assert len(ids) == 2 * len(set(ids))  # each id once per stream
        assert gaps(hub) == [] and feed.gaps == 0 and feed.errors == 0


async def test_bybit_trade_ids_are_not_read_as_a_sequence(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("publicTrade",), **FAST)
        async with running(feed, hub):
            await wait_until(lambda: len(hub.trades()) >= 10)
            first = feed.connection_id
            sim.faults.drop("bybit")
            await wait_until(lambda: feed.connection_id != first and len(hub.trades()) >= 30)
        assert gaps(hub) == [] and feed.gaps == 0


async def test_a_trade_id_going_back_starts_the_sequence_over(autojump_clock: trio.testing.MockClock) -> None:
    """A recording replayed in a loop (or a venue that started over) is reported, not dropped forever."""
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("binance", [trade(i) for i in (5, 6, 7, 1, 2, 3)])
            await wait_until(lambda: len(hub.trades()) == 6)
        assert gaps(hub) == []
        (error,) = hub.kinds("error")
        assert error["what"] == "trade ids went back" and "7" in error["detail"] and "1" in error["detail"]
