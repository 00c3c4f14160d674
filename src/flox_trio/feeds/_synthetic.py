"""A seeded random walk of trades: a market to try a strategy on without a venue or a tape."""

from __future__ import annotations

import random

from .._core._events import Trade

#: 2023-11-14T22:13:20Z: far from zero, so the trades look like real ones.
_T0_NS = 1_700_000_000_000_000_000


def random_walk(n: int, *, seed: int = 7, symbol: str = "BTCUSDT", rate: float = 200.0,
                start_price: float = 43_000.0, t0_ns: int = _T0_NS) -> list[Trade]:
    """``n`` trades ``1/rate`` seconds apart, the price a Gaussian walk with 0.01 ticks.

    Give the list to ``ListFeed(trades, pace=True)`` to replay it at its own pace
    (on virtual time under a ``MockClock``).
    """
    rng = random.Random(seed)
    price = start_price
    step_ns = int(1e9 / rate)
    out = []
    for i in range(n):
        price = round(max(1.0, price + rng.gauss(0, 4.0)), 2)
        ts = t0_ns + i * step_ns
        out.append(Trade(symbol, price, round(rng.expovariate(20), 5) + 0.0001,
                         "buy" if rng.random() < 0.5 else "sell", str(i), ts, ts))
    return out
