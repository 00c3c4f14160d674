from __future__ import annotations

from typing import Any

import flox_trio as flox

BASE_NS = 1_700_000_000_000_000_000

#: A strategy file as users write them: a tag parameter and the trade ids it saw.
TAGGED_SOURCE = """
import flox_trio as flox

class {name}(flox.Strategy):
    def __init__(self, symbols, tag="v1", **params):
        super().__init__(symbols, tag=tag, **params)
        self.tag = tag
        self.seen = []

    def on_trade(self, ctx, trade):
        self.seen.append(trade.trade_id)
"""


def trade(tid: str, price: float = 100.0, qty: float = 1.0, symbol: str = "BTCUSDT") -> flox.Trade:
    return flox.Trade(symbol, price, qty, "buy", tid, BASE_NS, BASE_NS)


class Scripted(flox.Strategy):
    """On trade id X runs plan[X](ctx); journals every order update and fill."""

    def __init__(self, symbols: Any = ("BTCUSDT",), plan: dict[str, Any] | None = None, **params: Any) -> None:
        super().__init__(list(symbols), **params)
        self.plan = plan or {}
        self.ids: list[Any] = []
        self.updates: list[flox.OrderUpdate] = []
        self.fills: list[flox.Fill] = []
        self.trades: list[str] = []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.trades.append(trade.trade_id)
        action = self.plan.get(trade.trade_id)
        if action is not None:
            self.ids.append(action(ctx))

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        self.updates.append(update)

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        self.fills.append(fill)

    def status_of(self, order_id: str) -> list[str]:
        return [u.status for u in self.updates if u.order_id == order_id]

    def reasons(self) -> list[str]:
        return [u.reason for u in self.updates if u.status == "rejected"]
