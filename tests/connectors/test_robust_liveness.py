"""A quiet connection is not a dead one: pings and pongs count as liveness for the watchdog.

A Binance symbol can go 30 s without a trade, and the server's pings (every
20 s) are answered inside trio-websocket without a word to us. So once
nothing has arrived for part of ``stale_timeout`` the connector pings the
venue itself, and the pong is liveness; only a missing pong is staleness.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from flox_trio.connectors import Binance, Bybit, Session
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, running, simulator, wait_until


def make(venue: str, sim: Simulator, **options: Any) -> Session:
    if venue == "binance":
        return Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **{**FAST, **options})
    return Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("publicTrade",), **{**FAST, **options})


@pytest.mark.parametrize("venue", ["binance", "bybit"])
@pytest.mark.parametrize("stale_timeout", [5.0, 30.0])
async def test_a_quiet_healthy_connection_is_kept(venue: str, stale_timeout: float,
                                                  autojump_clock: trio.testing.MockClock) -> None:
    # No market at all: the venue sends its subscribe reply, then only pings (and Bybit its pongs).
    async with simulator(rate=None, ping_interval=20.0) as sim:
        hub = RecordingHub()
        feed = make(venue, sim, stale_timeout=stale_timeout)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await trio.sleep(300.0)
            assert feed.state == "connected"
            st = feed.status()
        assert st.connect_count == 1 and len(sim.connections) == 1
        assert hub.kinds("disconnect") == [] and st.errors == 0
        if venue == "binance":  # nothing but the server's pings, which only trio-websocket sees
            assert st.last_message_age is not None and st.last_message_age > stale_timeout


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_a_stall_after_a_quiet_spell_is_still_detected(venue: str,
                                                             autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None, ping_interval=20.0) as sim:
        hub = RecordingHub()
        feed = make(venue, sim, stale_timeout=10.0)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await trio.sleep(120.0)
            assert feed.connect_count == 1
            stalled_at = trio.current_time()
            sim.faults.stall(100.0, venue)
            await wait_until(lambda: feed.connect_count == 2 and feed.state == "connected")
        (disconnect,) = hub.kinds("disconnect")
        assert "StaleFeedError" in disconnect["reason"]
        (t,) = hub.times("disconnect")
        # Within stale_timeout of the last sign of life, however quiet the line was before.
        assert stalled_at < t <= stalled_at + 10.0 + 0.2


async def test_a_busy_connection_is_never_pinged_by_the_watchdog(autojump_clock: trio.testing.MockClock) -> None:
    """Pings cost one of Binance's 5 messages a second: only a quiet connection gets them."""
    async with simulator(rate=10, ping_interval=0.0) as sim:
        hub = RecordingHub()
        feed = make("binance", sim, stale_timeout=5.0)
        async with running(feed, hub):
            await wait_until(lambda: len(hub.trades()) >= 5)
            await trio.sleep(60.0)
            assert feed._supervisor.probes == 0
            sim.pause()
            await trio.sleep(60.0)
        # The quiet minute: one ping each half stale_timeout, every one answered.
        assert 20 <= feed._supervisor.probes <= 25
        assert feed.connect_count == 1
