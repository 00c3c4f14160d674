"""Reconnect timing, to the exact virtual instant, and when the session gives up."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from flox_trio import ConfigError, ConnectorError
from flox_trio.connectors import (
    Backoff,
    Binance,
    Bybit,
    HandshakeRefusedError,
    RetriesExhaustedError,
)

from .conftest import FAST, RecordingHub, running, simulator, wait_until


def test_delays_double_up_to_the_cap_and_reset() -> None:
    b = Backoff(0.5, 8.0)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay() == 0.5
    huge = Backoff(1.0, 60.0)
    huge.failures = 10_000
    assert huge.next_delay() == 60.0


def test_jitter_stays_within_its_band_and_follows_the_seed() -> None:
    a = Backoff(1.0, 30.0, jitter=0.5, rng=random.Random(11))
    b = Backoff(1.0, 30.0, jitter=0.5, rng=random.Random(11))
    da = [a.next_delay() for _ in range(12)]
    assert da == [b.next_delay() for _ in range(12)]
    plain = [min(30.0, 2.0**n) for n in range(12)]
    assert all(p * 0.5 <= d <= p for d, p in zip(da, plain, strict=True))
    assert da != plain


@pytest.mark.parametrize(("base", "cap", "jitter", "message"), [
    (0.0, 1.0, 0.0, "base must be > 0"), (2.0, 1.0, 0.0, "cap must be >= base"),
    (1.0, 2.0, 1.5, "jitter must be within"),
])
def test_bad_backoff_arguments_are_refused(base: float, cap: float, jitter: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Backoff(base, cap, jitter)


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*stale_timout"):
        Binance(["BTCUSDT"], stale_timout=3)
    with pytest.raises(ConfigError, match=r"unknown option.*snapshot_limit"):
        Bybit(["BTCUSDT"], snapshot_limit=10)
    with pytest.raises(ConfigError, match="stale_timeout must be a number > 0"):
        Bybit(["BTCUSDT"], stale_timeout=0)
    with pytest.raises(ConfigError, match="channel 'depth5'"):
        Binance(["BTCUSDT"], channels=("depth5",))
    with pytest.raises(ConfigError, match="venue 'bybit'"):
        Binance(["bybit:BTCUSDT"])
    with pytest.raises(ConfigError, match="ws://"):
        Bybit(["BTCUSDT"], ws_url="http://example.invalid")


async def test_reconnect_times_follow_the_backoff_exactly(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=5) as sim:
        sim.faults.refuse(times=6, status=503)
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, **{**FAST, "initial_retries": None})
        t0 = trio.current_time()
        async with running(feed, hub):
            await wait_until(lambda: feed.state == "connected")
            # base 0.5 s, doubling, capped at 8 s: refused at 0, .5, 1.5, 3.5, 7.5, 15.5.
            failed = [t - t0 for t in hub.times("error", what="connect failed")]
            assert failed == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5]
            assert [e["retry_in"] for e in hub.kinds("error")] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
            assert "HTTP 503" in hub.kinds("error")[0]["detail"]
            assert [t - t0 for t in hub.times("connect")] == [23.5]
            # A connection that dies young does not reset the backoff...
            await trio.sleep_until(t0 + 24.5)
            sim.faults.drop("bybit")
            await wait_until(lambda: feed.connect_count == 2)
            assert hub.times("connect")[-1] - t0 == 32.5
            # ...one that lived past healthy_after (10 s) does.
            await trio.sleep_until(t0 + 52.5)
            sim.faults.drop("bybit")
            await wait_until(lambda: feed.connect_count == 3)
            assert hub.times("connect")[-1] - t0 == 53.0
        assert [d["retry_in"] for d in hub.kinds("disconnect")] == [8.0, 0.5]
        assert [round(d["lived"], 6) for d in hub.kinds("disconnect")] == [1.0, 20.0]


async def test_jittered_reconnects_are_reproducible_with_a_seed(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=5) as sim:
        sim.faults.refuse(times=5)
        hub = RecordingHub()
        options = {**FAST, "backoff_jitter": 0.5, "rng": random.Random(42), "initial_retries": None}
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, **options)
        t0 = trio.current_time()
        async with running(feed, hub):
            await wait_until(lambda: feed.state == "connected")
        expected = Backoff(0.5, 8.0, 0.5, random.Random(42))
        delays = [expected.next_delay() for _ in range(5)]
        assert [e["retry_in"] for e in hub.kinds("error")] == delays
        assert hub.times("connect")[0] - t0 == pytest.approx(sum(delays))
        assert all(0.25 * 2**n <= d <= 0.5 * 2**n for n, d in enumerate(delays))


async def test_gives_up_after_max_retries(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim:
        sim.faults.refuse(times=10)
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, **{**FAST, "max_retries": 3})
        with pytest.raises(RetriesExhaustedError, match=r"4 connection attempts .* failed in a row") as info:
            await feed.run(hub)
        assert isinstance(info.value, ConnectorError)
        assert len(hub.kinds("error")) == 3
        assert feed.state == "stopped"


async def test_a_wrong_url_is_refused_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim:
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url.replace("/public/", "/privat/"), **FAST)
        t0 = trio.current_time()
        with pytest.raises(HandshakeRefusedError, match=r"HTTP 404.*check ws_url"):
            await feed.run(hub)
        assert trio.current_time() == t0  # no retries: a 404 will not fix itself
        assert hub.kinds("connect") == []


async def test_nothing_listening_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # the port is free: connections are refused
    hub = RecordingHub()
    feed = Bybit(["BTCUSDT"], ws_url=f"ws://127.0.0.1:{port}/v5/public/spot", **FAST)
    with trio.move_on_after(4.0):
        await feed.run(hub)
    # Refused at 0, 0.5, 1.5 and 3.5 s.
    assert [e["retry_in"] for e in hub.kinds("error")] == [0.5, 1.0, 2.0, 4.0]
    assert all(f"cannot connect to 127.0.0.1:{port}" in e["detail"] for e in hub.kinds("error"))
    assert feed.state == "stopped"


async def test_a_venue_unreachable_at_start_fails_fast(autojump_clock: trio.testing.MockClock) -> None:
    """Nothing ever answered: after initial_retries the run fails with what to check, not a silent retry loop."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    hub = RecordingHub()
    feed = Bybit(["BTCUSDT"], ws_url=f"ws://127.0.0.1:{port}/v5/public/spot", **FAST)
    t0 = trio.current_time()
    with pytest.raises(RetriesExhaustedError, match=r"5 connection attempts .* before any connection succeeded"):
        await feed.run(hub)
    assert trio.current_time() - t0 == pytest.approx(0.5 + 1 + 2 + 4)


async def test_open_runner_on_an_unreachable_venue_raises(autojump_clock: trio.testing.MockClock) -> None:
    import flox_trio as flox

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    feed = Bybit(["BTCUSDT"], ws_url=f"ws://127.0.0.1:{port}/v5/public/spot", **FAST)
    with pytest.RaisesGroup(RetriesExhaustedError, flatten_subgroups=True):
        async with flox.open_runner(feed) as runner:
            runner.add_strategy(flox.Strategy(["BTCUSDT"]))
            await trio.sleep(3600)


def test_urls_are_split_for_the_handshake() -> None:
    from flox_trio.connectors._connection import split_url

    host, port, resource, ctx = split_url("wss://stream.binance.com:9443/stream?streams=a@trade/b@trade", None)
    assert (host, port, resource) == ("stream.binance.com", 9443, "/stream?streams=a@trade/b@trade")
    assert ctx is not None
    assert split_url("ws://127.0.0.1/v5/public/spot", None)[:3] == ("127.0.0.1", 80, "/v5/public/spot")
    assert split_url("wss://stream.bybit.com", None)[1:3] == (443, "/")
    with pytest.raises(ConfigError, match="not a WebSocket URL"):
        split_url("https://api.binance.com", None)
