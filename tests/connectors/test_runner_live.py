"""A connector under the real runner: slots' symbols become subscriptions, events reach strategies."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import flox_trio as flox
from flox_trio._core import _runner as runner_module
from flox_trio.connectors import Binance, Bybit

from .conftest import FAST, simulator, wait_until


class Collect(flox.Strategy):
    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.trades: list[flox.Trade] = []
        self.books: list[flox.Book] = []
        self.stopped = False

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.trades.append(trade)

    def on_book(self, ctx: flox.Context, book: flox.Book) -> None:
        self.books.append(book)

    def on_stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_slots_drive_the_connector(venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        feed: Any = (Binance([], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, **FAST)
                     if venue == "binance" else Bybit([], ws_url=sim.bybit_ws_url, **FAST))
        btc, eth = Collect([f"{venue}:BTCUSDT"]), Collect(["ETHUSDT"])
        async with flox.open_runner(feed) as runner:
            runner.add_strategy(btc)
            await wait_until(lambda: len(btc.trades) >= 5 and len(btc.books) >= 5)
            first = feed.connection_id
            i = runner.add_strategy(eth)
            await wait_until(lambda: len(eth.trades) >= 5)
            assert feed.connection_id == first
            sim.faults.drop(venue)
            await wait_until(lambda: feed.connection_id != first and len(eth.trades) >= 20)
            await runner.remove_strategy(i)
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            status = runner.status()
            sim.pause()
            await trio.sleep(1.0)
        assert isinstance(status.feed, flox.connectors.SessionStatus)
        assert status.feed.venue == venue
        assert status.feed.connect_count == 2
        assert status.connector_events["connect"] == 2
        assert status.connector_events["disconnect"] == 1
        # Receive times are stamped on the engine's own clock: the latency is real, not across clocks.
        latency = status.slots[0].latency_us
        assert latency is not None and 0 <= latency < 1e6
        assert all(t.venue == venue and t.symbol == "BTCUSDT" for t in btc.trades)
        assert [t.trade_id for t in btc.trades] == sim.sent_trade_ids(venue, "BTCUSDT")
        assert {b.symbol for b in btc.books} == {"BTCUSDT"}
        assert all(b.bids[0][0] < b.asks[0][0] for b in btc.books if b.bids and b.asks)
        assert btc.stopped and eth.stopped


async def test_a_slot_whose_symbol_the_venue_refuses_says_so(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, **FAST)
        btc = Collect(["BTCUSDT"])
        async with flox.open_runner(feed) as runner:
            runner.add_strategy(btc)
            await wait_until(lambda: len(btc.trades) >= 3)
            sim.faults.reject_subscribe("binance", times=1000, msg="Invalid symbol.")
            runner.add_strategy(Collect(["ETHUSDT"]))
            await wait_until(lambda: "ETHUSDT" in feed.failing)
            status = runner.status()
    assert status.slots[0].note is None
    note = status.slots[1].note or ""
    assert note.startswith("no data: subscribe refused by venue (ETHUSDT:") and "Invalid symbol." in note


class SlowAsync(Collect):
    async def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:  # type: ignore[override]
        self.trades.append(trade)
        await trio.lowlevel.checkpoint()


async def test_frames_for_one_idle_slot_are_published_in_the_readers_call_the_others_queued(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """While BTCUSDT's one synchronous slot is all a read's frames go to, the reader publishes them
    itself, never through the session's publishing task; once an async slot takes ETHUSDT, a read
    that carries both goes through that task. Either way, every trade, once, in order."""
    queued: list[int] = []
    publish = runner_module.Runner.publish

    async def counted(self: Any, events: Any) -> None:
        queued.append(len(events))
        await publish(self, events)

    monkeypatch.setattr(runner_module.Runner, "publish", counted)
    async with simulator(rate=20, book=False) as sim:
        feed = Binance(["BTCUSDT", "ETHUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **FAST)
        btc, eth = Collect(["BTCUSDT"]), SlowAsync(["ETHUSDT"])
        async with flox.open_runner(feed) as runner:
            runner.add_strategy(btc)
            await wait_until(lambda: len(btc.trades) >= 50)
            # ETHUSDT's frames go to nobody yet: published in the reader's call too, to no slot.
            alone = feed.published_inline
            assert alone > 10 and sum(queued) <= 3  # what came before the slot's on_start, at most
            runner.add_strategy(eth)
            await wait_until(lambda: len(eth.trades) >= 50)
            sim.pause()
            await trio.sleep(1.0)
            published = feed.status().published
        assert [t.trade_id for t in btc.trades] == sim.sent_trade_ids("binance", "BTCUSDT")
        # ETHUSDT's slot came later: from its first trade on, every one the venue sent.
        got = [t.trade_id for t in eth.trades]
        assert got == sim.sent_trade_ids("binance", "ETHUSDT")[-len(got):]
        assert sum(queued) > len(eth.trades) // 2
        assert published == runner.status().market_events
