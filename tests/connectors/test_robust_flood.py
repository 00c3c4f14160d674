"""A strategy far slower than the market, under the lossless ``block`` policy, does not lose the session.

The simulator sends ~200 trades/s and pings every 20 s (a pong may take 30 s);
the strategy handles ~10 trades/s. The connector keeps reading the socket,
so the venue's pings are answered and the connection lives; what it cannot
hold it drops oldest first, counts per symbol and tells the strategy as a
``Gap``. Every trade id the venue sent is delivered or covered by a Gap.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import flox_trio as flox
from flox_trio import Gap, Trade
from flox_trio.connectors import Binance

from .conftest import FAST, simulator, wait_until


class Slow(flox.Strategy):
    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.ids: list[str] = []
        self.gaps: list[Gap] = []

    async def on_trade(self, ctx: flox.Context, trade: Trade) -> None:
        self.ids.append(trade.trade_id)
        await trio.sleep(0.1)

    def on_gap(self, ctx: flox.Context, gap: Gap) -> None:
        self.gaps.append(gap)


def covered(strategy: Slow) -> set[int]:
    ids = {int(i) for i in strategy.ids}
    for g in strategy.gaps:
        assert g.first_id and g.last_id, g
        ids.update(range(int(g.first_id), int(g.last_id) + 1))
    return ids


async def test_a_slow_async_strategy_under_block_loses_nothing_silently(
        autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=100, trades_per_tick=(2, 2), book=False, symbols=["BTCUSDT"],
                         ping_interval=20.0, pong_timeout=30.0) as sim:
        feed = Binance([], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("trade",),
                       max_backlog=2000, **FAST)
        strategy = Slow(["BTCUSDT"])
        async with flox.open_runner(feed, overflow="block") as runner:
            runner.add_strategy(strategy)
            await wait_until(lambda: len(strategy.ids) >= 1)
            start = trio.current_time()
            lagging = []
            while trio.current_time() < start + 60.0:
                await trio.sleep(5.0)
                st = feed.status()
                lagging.append((st.backlog, st.backlog_age, sum(st.dropped.values())))
            during = feed.status()
            sim.pause()
            sent = [int(i) for i in sim.sent_trade_ids("binance", "BTCUSDT")]
            await wait_until(lambda: bool(strategy.ids) and int(strategy.ids[-1]) == sent[-1], timeout=3600.0,
                             step=1.0)
            after = feed.status()
            slot = runner.status().slots[0]
            alive = [c.open for c in sim.connections]
        # The connection lived: the venue's pings were answered all along.
        assert feed.connect_count == 1 and alive == [True]
        assert during.state == "connected"
        assert len(sent) > 60 * 150
        # Nothing lost silently: every id sent, and every id in between, was delivered or told as a Gap.
        assert set(sent) <= covered(strategy)
        assert covered(strategy) >= set(range(min(sent), max(sent) + 1))
        delivered = [int(i) for i in strategy.ids]
        assert delivered == sorted(delivered) and len(delivered) == len(set(delivered))
        # Status showed the lag while it lasted, and what was dropped.
        assert max(b for b, _, _ in lagging) >= 1900
        assert max(age for _, age, _ in lagging if age is not None) > 5.0
        assert during.dropped["BTCUSDT"] > 0
        assert after.dropped["BTCUSDT"] == sum(g.missing for g in strategy.gaps if g.reason == "dropped")
        assert after.backlog == 0 and after.backlog_age is None
        assert slot.state == "running"
        assert [e for e in strategy.gaps if e.reason == "trade_ids"] == []
