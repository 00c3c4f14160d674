from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel

import flox_trio as flox

BASE_NS = 1_700_000_000_000_000_000


def make_trades(n: int, symbol: str = "BTCUSDT", start: int = 0, price: float = 100.0) -> list[flox.Trade]:
    return [
        flox.Trade(symbol, price + (i % 50) * 0.5, 0.25, "buy" if i % 2 else "sell", str(i),
                   BASE_NS + i * 1_000_000, BASE_NS + i * 1_000_000 + 10)
        for i in range(start, start + n)
    ]


class Recorder(flox.Strategy):
    """Records every callback into a shared journal as (name, label, payload)."""

    def __init__(self, symbols: Any, journal: list[tuple[str, str, Any]], label: str, **params: Any) -> None:
        super().__init__(symbols, **params)
        self.journal = journal
        self.label = label
        self.trades: list[str] = []

    def on_start(self) -> None:
        self.journal.append(("start", self.label, None))

    def on_stop(self) -> None:
        self.journal.append(("stop", self.label, None))

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.trades.append(trade.trade_id)
        self.journal.append(("trade", self.label, trade.trade_id))

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        self.journal.append(("update", self.label, (update.order_id, update.status)))

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        self.journal.append(("fill", self.label, (fill.order_id, fill.qty)))


class AsyncRecorder(Recorder):
    """Same journal, but every callback awaits (a checkpoint) before recording."""

    async def on_start(self) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        super().on_start()

    async def on_stop(self) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        super().on_stop()

    async def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        super().on_trade(ctx, trade)


@pytest.fixture
def journal() -> list[tuple[str, str, Any]]:
    return []
