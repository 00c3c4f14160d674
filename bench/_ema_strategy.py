"""An EMA crossover with O(1) work per trade, for bench/sweep.py: the engine's cost, not the strategy's.

Like ``py_strategies/ema.py:EmaStrategy`` (long ``qty`` while the fast EMA is
above the slow one, flat otherwise), but each EMA is updated in place.
"""

from __future__ import annotations

from typing import Any

import flox_trio as flox


class FastEma(flox.Strategy):
    def __init__(self, symbols: Any, fast: int = 12, slow: int = 26, qty: float = 0.01) -> None:
        super().__init__(symbols, fast=fast, slow=slow, qty=qty)
        if not 0 < fast < slow:
            raise flox.FloxError(f"FastEma needs 0 < fast < slow, got fast={fast} slow={slow}")
        self.kf, self.ks, self.qty = 2.0 / (fast + 1), 2.0 / (slow + 1), qty
        self.warmup = slow
        self.f = self.s = 0.0
        self.n = 0
        self.long = False

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        p = trade.price
        self.n += 1
        if self.n == 1:
            self.f = self.s = p
            return
        self.f += self.kf * (p - self.f)
        self.s += self.ks * (p - self.s)
        if self.n < self.warmup:
            return
        want = self.f > self.s
        if want == self.long or ctx.open_orders:
            return
        self.long = want
        if want and ctx.position <= 0:
            ctx.market_buy(self.qty)
        elif not want and ctx.position > 0:
            ctx.market_sell(ctx.position)
