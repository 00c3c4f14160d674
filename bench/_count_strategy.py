"""A Python strategy that only counts its trades, for bench/replay.py: what the engine costs, nothing else.

A file of its own so that a replay rebuilds it from its recorded source, as it
rebuilds any strategy.
"""

from __future__ import annotations

from typing import Any

import flox_trio as flox


class CountTrades(flox.Strategy):
    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.n = 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
