"""Binance REST depth snapshots stay within a request-weight budget, whatever the stream does.

``GET /api/v3/depth`` costs 5/25/50/250 weight for limits up to 100/500/1000/5000;
the venue allows 6000 weight a minute per IP, answers 429 beyond it and bans the
IP (418) if the client keeps going. The connector budgets its snapshots
(``rest_weight_budget`` a minute, 2400 by default), keeps one sync per symbol,
honours Retry-After and says in status how many resyncs wait for budget.
"""

from __future__ import annotations

import itertools

import httpx
import pytest
import trio
import trio.testing

from flox_trio.connectors import Binance
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, assert_same_book, running, simulator, wait_until

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def weight_in_any_minute(sim: Simulator) -> int:
    """The most REST weight the simulator served within any 60 s."""
    starts = [(start, weight) for start, _end, path, _sym, weight, _status in sim.rest_log
              if path == "/api/v3/depth"]
    most = 0
    for i, (t0, _) in enumerate(starts):
        most = max(most, sum(w for t, w in starts[i:] if t < t0 + 60.0))
    return most


async def test_a_gap_storm_stays_within_the_weight_budget(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = Binance(list(SYMBOLS), ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("depth",), **{**FAST, "stale_timeout": 30.0})
        async with running(feed, hub):
            await wait_until(lambda: all(feed.book_synced(s) for s in SYMBOLS))
            start = trio.current_time()
            for s in SYMBOLS:
                sim.faults.gap_storm(s, seconds=180.0, every=2)
            waiting = []
            while trio.current_time() < start + 180.0:
                await trio.sleep(5.0)
                waiting.append(feed.status().resyncs_waiting)
            await wait_until(lambda: all(feed.book_synced(s) for s in SYMBOLS), timeout=90.0)
            sim.pause()
            for s in SYMBOLS:
                await wait_until(lambda s=s: feed.book(s).seq == sim.binance_book(s).seq)  # type: ignore[union-attr]
                assert_same_book(feed.book(s), sim.binance_book(s))
            st = feed.status()
        depth = [r for r in sim.rest_log if r[2] == "/api/v3/depth"]
        assert all(r[4] == 50 for r in depth)  # limit=1000
        assert weight_in_any_minute(sim) <= 2400
        # The budget was used, not merely a trickle: about 48 snapshots a minute for 3 minutes.
        assert len(depth) >= 3 * 40
        assert all(r[5] == 200 for r in sim.rest_log)  # never a 429, never a ban
        assert max(waiting) >= 2  # the symbols queued for budget, and status said so
        assert st.resyncs_waiting == 0
        # One sync in flight per symbol at any time.
        for s in SYMBOLS:
            spans = sorted((start, end) for start, end, _p, sym, _w, _st in sim.rest_log if sym == s)
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert feed.connect_count == 1


async def test_a_smaller_budget_and_snapshot_limit(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("depth",),
                       snapshot_limit=100, rest_weight_budget=60, **{**FAST, "stale_timeout": 30.0})
        async with running(feed, hub):
            await wait_until(lambda: feed.book_synced("BTCUSDT"))
            sim.faults.gap_storm("BTCUSDT", seconds=120.0, every=3)
            await trio.sleep(120.0)
            await wait_until(lambda: feed.book_synced("BTCUSDT"), timeout=90.0)
        assert {r[4] for r in sim.rest_log} == {5}
        assert weight_in_any_minute(sim) <= 60


@pytest.mark.parametrize(("status", "retry_after"), [(429, 7), (418, 40)])
async def test_rate_limit_answers_are_honoured(status: int, retry_after: int,
                                               autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        sim.faults.rest_error(status, times=1, retry_after=retry_after)
        hub = RecordingHub()
        feed = Binance(["BTCUSDT", "ETHUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("depth",), **{**FAST, "stale_timeout": 60.0})
        async with running(feed, hub):
            await wait_until(lambda: feed.status().rate_limited == 1)
            await wait_until(lambda: feed.book_synced("BTCUSDT") and feed.book_synced("ETHUSDT"))
        (limited, *later) = sim.rest_log
        assert limited[5] == status
        # No request of either symbol went out after the answer until its Retry-After was over
        # (the other symbol's first one was already on its way at the same instant).
        assert not [r for r in later if limited[1] < r[0] < limited[1] + retry_after]
        again = [r for r in later if r[3] == limited[3]]
        assert again[0][0] >= limited[1] + retry_after and again[0][5] == 200
        (error,) = [e for e in hub.kinds("error") if e["what"] == "REST rate limit"]
        assert f"HTTP {status}" in error["detail"] and f"{retry_after:g} s" in error["detail"]


async def test_the_simulator_enforces_the_weight_limit(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim, httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        # 6000 a minute: 24 snapshots of limit 5000 (250 each) fit, the 25th does not.
        for _ in range(24):
            ok = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5000})
            assert ok.status_code == 200
        assert ok.headers["x-mbx-used-weight-1m"] == "6000"
        limited = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5})
        assert limited.status_code == 429 and limited.json()["code"] == -1003
        wait = int(limited.headers["retry-after"])
        assert 0 < wait <= 60
        # Keeping on regardless gets the IP banned.
        for _ in range(5):
            last = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5})
        assert last.status_code == 418 and int(last.headers["retry-after"]) > 60
        await trio.sleep(int(last.headers["retry-after"]))
        assert (await http.get("/api/v3/depth", params={"symbol": "BTCUSDT"})).status_code == 200
