"""What a window of trading did: PnL, fees, drawdown, position, from its fills.

One computation for the live sweep, the A/B test and the offline backtest, so
their numbers mean the same thing. PnL is the exact Decimal arithmetic of
``Position`` (FIFO lots); the equity curve is marked at each fill's price and
at the window's end at ``mark``; the drawdown is the largest fall of that curve
from its running peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from ._events import Fill
from ._orders import Position, book_fill

ZERO = Decimal(0)


@attrs.frozen
class WindowStats:
    """A window's result. Money is in the symbols' quote currency."""

    fills: int
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    max_drawdown: Decimal
    #: symbol -> quantity held at the end of the window
    position: dict[str, Decimal]
    #: (fill index, equity after it): the curve the drawdown was measured on
    equity: tuple[Decimal, ...] = ()

    @property
    def pnl(self) -> Decimal:
        return self.realized_pnl + self.unrealized_pnl

    def to_json(self) -> dict[str, object]:
        return {"fills": self.fills, "realized_pnl": str(self.realized_pnl),
                "unrealized_pnl": str(self.unrealized_pnl), "pnl": str(self.pnl), "fees": str(self.fees),
                "max_drawdown": str(self.max_drawdown),
                "position": {k: str(v) for k, v in self.position.items()}}


def measure(fills: Iterable[Fill], marks: Mapping[str, Decimal | None],
            start: Mapping[str, Position] | None = None) -> WindowStats:
    """The stats of ``fills`` (in order), marked at the end at ``marks``; ``start``: positions held before.

    A position held at the window's start counts with its cost basis, so a
    window's PnL includes what the inventory it inherited did in it (use a
    flat start to leave it out).
    """
    positions = {sym: copy_position(p) for sym, p in (start or {}).items()}
    last_price: dict[str, Decimal] = {}
    base = sum((p.realized_pnl for p in positions.values()), ZERO)
    curve: list[Decimal] = []
    n = 0
    for f in fills:
        pos = positions.get(f.symbol) or positions.setdefault(f.symbol, Position(f.symbol))
        book_fill(pos, f)
        last_price[f.symbol] = f.price
        curve.append(_equity(positions, last_price) - base)
        n += 1
    final_marks = {sym: marks.get(sym) or last_price.get(sym) for sym in positions}
    realized = sum((p.realized_pnl for p in positions.values()), ZERO) - base
    unrealized = sum((p.unrealized_pnl(final_marks[sym]) for sym, p in positions.items()), ZERO)
    curve.append(realized + unrealized)
    peak, drawdown = ZERO, ZERO
    for value in curve:
        peak = max(peak, value)
        drawdown = max(drawdown, peak - value)
    fees = sum((p.fees for p in positions.values()), ZERO) - sum(
        (p.fees for p in (start or {}).values()), ZERO)
    return WindowStats(n, realized, unrealized, fees, drawdown, {s: p.qty for s, p in positions.items()},
                       tuple(curve))


def _equity(positions: Mapping[str, Position], prices: Mapping[str, Decimal]) -> Decimal:
    return sum((p.realized_pnl + p.unrealized_pnl(prices.get(sym)) for sym, p in positions.items()), ZERO)


def copy_position(p: Position) -> Position:
    """An independent copy of ``p``: its lots, realized PnL and fees."""
    out = Position(p.symbol)
    for price, qty in p._lots:
        out.apply_fill("buy" if qty > 0 else "sell", price, abs(qty))
    out.realized_pnl, out.fees = p.realized_pnl, p.fees
    return out


@attrs.frozen
class SweepIteration:
    """One window of a live sweep: which variant ran, when, and what it did."""

    iteration: int
    round: int
    variant: int
    label: str
    #: The strategy that ran: its spec ("file.py:Class") and the sha256 of its source.
    strategy: str
    source_hash: str
    params: dict[str, Any]
    window_start_ns: int
    window_end_ns: int
    events: int
    orders: int
    stats: WindowStats
    #: The feed's connection id at the window's end (a connector's; None for other feeds).
    connection_id: int | None = None
    #: Flattened before the window started (``flat_between``): what was closed, by symbol.
    flattened: dict[str, Decimal] = attrs.Factory(dict)
