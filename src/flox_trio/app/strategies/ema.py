"""The seed's EmaStrategy: a fast/slow EMA crossover that trades through ``ctx``.

Its prices survive a hot swap: ``on_stop`` writes them to a JSON snapshot and
the next instance's ``on_start`` reads them back, so a re-parameterised copy
swapped in mid-stream picks up where the old one left off.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

import flox_trio as flox

SNAPSHOT = Path("/tmp/strategy_state.json")


def ema(prices: list[float], period: int) -> float | None:
    if len(prices) < period:
        return None
    k = 2.0 / (period + 1)
    value = sum(prices[:period]) / period
    for p in prices[period:]:
        value += k * (p - value)
    return value


class EmaStrategy(flox.Strategy):
    """Long ``qty`` when the fast EMA is above the slow one, flat otherwise.

    ``cooldown``: seconds (of the trades' own time) between two orders, so a
    crossover that flickers does not trade on every trade.
    """

    def __init__(self, symbols: Any, fast: int = 12, slow: int = 26, qty: float = 0.01,
                 snapshot: str | Path = SNAPSHOT, history: int = 500, cooldown: float = 0.0,
                 **params: Any) -> None:
        # Every constructor argument goes to params: the tape records them, and a
        # replay rebuilds the strategy from them.
        super().__init__(symbols, fast=fast, slow=slow, qty=qty, snapshot=str(snapshot), history=history,
                         cooldown=cooldown, **params)
        self.cooldown_ns = int(cooldown * 1e9)
        self.last_order_ns = -(1 << 62)
        if not 0 < fast < slow:
            raise flox.FloxError(f"EmaStrategy needs 0 < fast < slow, got fast={fast} slow={slow}")
        self.fast, self.slow, self.qty = fast, slow, qty
        self.snapshot = Path(snapshot)
        self.prices: deque[float] = deque(maxlen=max(history, slow * 4))
        self.signal = 0  # +1 long wanted, 0 flat
        self.trades_seen = 0

    def on_start(self) -> None:
        if self.snapshot.exists():
            self.prices.extend(json.loads(self.snapshot.read_text())["prices"])

    def on_stop(self) -> None:
        self.snapshot.parent.mkdir(parents=True, exist_ok=True)
        # Whole or not at all: another process (a sweep, a backtest) may read it while a swap writes it.
        part = self.snapshot.with_name(f"{self.snapshot.name}.{os.getpid()}.part")
        part.write_text(json.dumps({"prices": list(self.prices)}))
        os.replace(part, self.snapshot)

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.trades_seen += 1
        self.prices.append(trade.price)
        if len(self.prices) < self.slow:
            return
        window = list(self.prices)[-self.slow * 4:]
        fast, slow = ema(window, self.fast), ema(window, self.slow)
        assert fast is not None and slow is not None
        want = 1 if fast > slow else 0
        if want == self.signal:
            return
        self.signal = want
        if ctx.open_orders:
            return  # one decision in flight at a time
        now = trade.exchange_ts_ns or trade.recv_ts_ns
        if now - self.last_order_ns < self.cooldown_ns:
            return
        if want == 1 and ctx.position <= 0:
            ctx.market_buy(self.qty)
            self.last_order_ns = now
        elif want == 0 and ctx.position > 0:
            ctx.market_sell(ctx.position)
            self.last_order_ns = now
