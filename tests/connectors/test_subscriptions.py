"""Live SUBSCRIBE / UNSUBSCRIBE as the slots' watched symbols change, on the same connection."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from flox_trio.connectors import Binance, Bybit, Session
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, running, simulator, wait_until

VENUES = ["binance", "bybit"]


def make(venue: str, sim: Simulator, symbols: tuple[str, ...] = (), **options: Any) -> Session:
    if venue == "binance":
        return Binance(list(symbols), ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       **{**FAST, **options})
    return Bybit(list(symbols), ws_url=sim.bybit_ws_url, **{**FAST, **options})


def control(venue: str, conn: Any) -> list[tuple[str, list[str]]]:
    """The subscription requests a simulator connection received, pings left out."""
    out = []
    for text in conn.received:
        msg = orjson.loads(text)
        if venue == "binance":
            out.append((msg["method"], msg["params"]))
        elif msg["op"] != "ping":
            out.append((msg["op"], msg["args"]))
    return out


def topics(venue: str, symbol: str) -> list[str]:
    if venue == "binance":
        low = symbol.lower()
        return [f"{low}@trade", f"{low}@bookTicker", f"{low}@depth@100ms"]
    return [f"publicTrade.{symbol}", f"orderbook.50.{symbol}"]


@pytest.mark.parametrize("venue", VENUES)
async def test_watched_symbols_drive_subscriptions_live(venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = make(venue, sim)
        sub, unsub = ("SUBSCRIBE", "UNSUBSCRIBE") if venue == "binance" else ("subscribe", "unsubscribe")
        async with running(feed, hub):
            await trio.sleep(5.0)
            # Nothing to watch, nothing to connect.
            assert feed.state == "idle"
            assert sim.connections == []

            hub.watch("BTCUSDT")
            await wait_until(lambda: feed.book_synced("BTCUSDT") and len(hub.trades("BTCUSDT")) >= 5)
            first = feed.connection_id
            (conn,) = sim.open_connections()

            hub.watch("BTCUSDT", "ETHUSDT")
            await wait_until(lambda: feed.book_synced("ETHUSDT") and len(hub.trades("ETHUSDT")) >= 5)
            assert feed.subscribed == {"BTCUSDT", "ETHUSDT"}

            hub.watch("ETHUSDT")
            await wait_until(lambda: not any(t in conn.subs for t in topics(venue, "BTCUSDT")))
            assert feed.book("BTCUSDT") is None
            btc = len(hub.trades("BTCUSDT"))
            await trio.sleep(3.0)
            assert len(hub.trades("BTCUSDT")) == btc  # nothing more for the symbol nobody watches
            sim.pause()
            await wait_until(lambda: conn.queued == 0)
            await trio.sleep(1.0)
            assert feed.connection_id == first
            assert feed.connect_count == 1
            assert feed.subscribed == {"ETHUSDT"}
        assert control(venue, conn) == [(sub, topics(venue, "BTCUSDT")), (sub, topics(venue, "ETHUSDT")),
                                        (unsub, topics(venue, "BTCUSDT"))]
        # ETH lost nothing from the moment its subscription was live.
        assert hub.trade_ids("ETHUSDT") == sim.sent_trade_ids(venue, "ETHUSDT")
        # BTC frames already on the wire when it was dropped are discarded, not published.
        sent = sim.sent_trade_ids(venue, "BTCUSDT")
        assert hub.trade_ids("BTCUSDT") == sent[: len(hub.trade_ids("BTCUSDT"))]
        # Every BTC trade the server sent but the hub did not get was counted as a late frame.
        assert feed.late_frames >= len(sent) - len(hub.trade_ids("BTCUSDT"))
        assert feed.errors == 0


@pytest.mark.parametrize("venue", VENUES)
async def test_a_new_connection_resubscribes_everything(venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub(["ETHUSDT"])
        feed = make(venue, sim, ("BTCUSDT",))
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT", "ETHUSDT"})
            hub.watch("ETHUSDT", "SOLUSDT")
            await wait_until(lambda: feed.subscribed == {"BTCUSDT", "ETHUSDT", "SOLUSDT"})
            sim.faults.drop(venue)
            await wait_until(lambda: feed.connect_count == 2 and feed.subscribed == {"BTCUSDT", "ETHUSDT", "SOLUSDT"})
            await wait_until(lambda: all(feed.book_synced(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")))
        new = sim.connections[1]
        expected = {t for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") for t in topics(venue, s)}
        assert new.subs == expected
        if venue == "binance":
            # Confirmed symbols ride in the URL: no SUBSCRIBE needed on the new connection.
            assert all(t in new.path for t in expected)
            assert control(venue, new) == []
        else:
            assert sorted(t for _, args in control(venue, new) for t in args) == sorted(expected)


async def test_control_messages_keep_under_the_binance_rate_limit(autojump_clock: trio.testing.MockClock) -> None:
    names = [f"SYM{i}USDT" for i in range(8)]
    async with simulator(rate=2, symbols=["BTCUSDT", *names]) as sim:
        hub = RecordingHub()
        feed = make("binance", sim, ("BTCUSDT",))
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            for i in range(len(names)):
                hub.watch(*names[: i + 1])
                await trio.sleep(0.01)
            await wait_until(lambda: feed.subscribed == {"BTCUSDT", *names})
            await trio.sleep(2.0)
            assert sim.connections[0].open
        (conn,) = sim.connections
        times = conn.received_at
        assert len(times) >= 3
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.25 - 1e-9
        # The simulator cuts clients sending more than 5 messages a second; it never had to.
        assert feed.connect_count == 1
        assert hub.kinds("disconnect") == []


async def test_the_subscription_batch_is_split_at_the_venue_limit(autojump_clock: trio.testing.MockClock) -> None:
    names = [f"SYM{i}USDT" for i in range(7)]
    async with simulator(rate=2, symbols=names) as sim:
        hub = RecordingHub(names)
        feed = make("bybit", sim)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == set(names))
        (conn,) = sim.connections
        sizes = [len(args) for op, args in control("bybit", conn) if op == "subscribe"]
        # Spot takes at most 10 args per request: 2 topics per symbol, 5 symbols per request.
        assert sizes == [10, 4]
        assert feed.errors == 0
