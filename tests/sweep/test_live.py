"""A live sweep: variants swapped through one slot on one connection, every event seen once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing

import flox_trio as flox
from flox_trio.connectors import Binance
from flox_trio.sim import open_simulator
from flox_trio.sweep import expand, measure, parse_grid, schedule


class Tagged(flox.Strategy):
    """Buys ``qty`` every ``every`` trades; logs the trade ids it saw into a shared list."""

    def __init__(self, symbols: Any, every: int = 10, qty: float = 0.01, seen: list[Any] | None = None) -> None:
        super().__init__(symbols, every=every, qty=qty)
        self.every, self.qty, self.n = every, qty, 0
        self.seen = seen if seen is not None else []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.seen.append((self.every, int(trade.trade_id)))
        self.n += 1
        if self.n % self.every == 0:
            ctx.market_buy(self.qty)


async def test_three_variants_two_rounds_on_one_connection_every_event_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[int, int]] = []
    variants = [(f"every={k}", lambda k=k: Tagged(["BTCUSDT"], every=k, seen=seen)) for k in (5, 10, 20)]
    async with open_simulator(seed=3, start_ms=1_700_000_000_000, rate=20, symbols=["BTCUSDT"]) as sim:
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("trade",))
        async with flox.open_runner(feed) as runner:
            slot = runner.add_strategy(Tagged(["BTCUSDT"], every=1000, seen=seen))
            await trio.sleep(2)
            results = await runner.sweep(slot, variants, each=10.0, rounds=2)
            status = runner.status()
    assert [r.label for r in results] == ["every=5", "every=10", "every=20"] * 2
    assert [r.round for r in results] == [0, 0, 0, 1, 1, 1]
    assert len({r.connection_id for r in results}) == 1 and status.feed.connect_count == 1  # type: ignore[attr-defined]
    ids = [t for _, t in seen]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive: nothing lost, nothing twice
    assert all(r.events > 100 for r in results)
    assert sum(r.events for r in results) <= len(ids)
    for r in results:
        assert r.window_end_ns > r.window_start_ns and r.strategy.endswith(":Tagged")
        assert r.params["every"] == int(r.label.split("=")[1])
        # a variant that buys every k trades made about events / k orders in its window
        assert abs(r.orders - r.events // r.params["every"]) <= 2
        assert r.stats.fills == r.orders


async def test_flat_between_closes_the_inherited_position(autojump_clock: trio.testing.MockClock) -> None:
    feed = flox.feeds.ListFeed(flox.feeds.random_walk(3000, seed=5), pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01)) as runner:
        slot = runner.add_strategy(Tagged(["BTCUSDT"], every=10_000))
        variants = [("buyer", lambda: Tagged(["BTCUSDT"], every=5))] * 2
        results = await runner.sweep(slot, variants, each=3.0, flat_between=True)
    first, second = results
    assert first.stats.position["BTCUSDT"] > 0
    # what the first held at its end, and any order it still had in flight
    assert second.flattened["BTCUSDT"] >= first.stats.position["BTCUSDT"]
    # The second window starts flat: its position is its own buys only.
    assert second.stats.position["BTCUSDT"] == Decimal("0.01") * second.stats.fills


def test_grids_expand_to_every_combination_and_rounds_interleave() -> None:
    grid = parse_grid(["fast=5,8", "slow=21,26", "mode=a"])
    variants = expand(grid, {"qty": 0.01, "fast": 1})
    assert [v.label for v in variants] == ["fast=5 slow=21 mode=a", "fast=5 slow=26 mode=a",
                                           "fast=8 slow=21 mode=a", "fast=8 slow=26 mode=a"]
    assert variants[0].params == {"qty": 0.01, "fast": 5, "slow": 21, "mode": "a"}
    assert [v.index for v in schedule(variants[:3], rounds=2)] == [0, 1, 2, 0, 1, 2]
    shuffled = schedule(variants, rounds=3, order="random", seed=1)
    assert all(sorted(v.index for v in shuffled[i:i + 4]) == [0, 1, 2, 3] for i in (0, 4, 8))
    for bad in (["fast"], ["fast="], ["fast=1,1"]):
        with pytest.raises(flox.FloxError):
            parse_grid(bad)
    with pytest.raises(flox.FloxError, match="twice"):
        parse_grid(["a=1", "a=2"])


def test_window_stats_are_exact_and_measure_the_drawdown() -> None:
    def fill(side: str, price: str, qty: str = "1") -> flox.Fill:
        return flox.Fill("0-1", "BTCUSDT", side, Decimal(price), Decimal(qty), Decimal("0.1"))  # type: ignore[arg-type]

    stats = measure([fill("buy", "100"), fill("sell", "110"), fill("buy", "105"), fill("sell", "95")],
                    {"BTCUSDT": Decimal("95")})
    assert stats.realized_pnl == Decimal("10") - Decimal("10") - Decimal("0.4")
    assert stats.fees == Decimal("0.4") and stats.unrealized_pnl == 0 and stats.position == {"BTCUSDT": 0}
    # peak 9.8 after the second fill, trough -0.4 at the end
    assert stats.max_drawdown == Decimal("10.2")
