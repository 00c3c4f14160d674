"""Orders and positions: the exact-arithmetic half of the engine."""

from __future__ import annotations

from decimal import Decimal

import attrs

from .._money import ZERO

OPEN_STATES = frozenset({"new", "accepted", "partially_filled"})
FINAL_STATES = frozenset({"filled", "canceled", "rejected"})


@attrs.define(slots=True, eq=False)
class Order:
    """An order as the executor tracks it. Strategies see copies via ``ctx.open_orders``."""

    order_id: str
    slot: int
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    price: Decimal | None = None
    status: str = "new"
    filled_qty: Decimal = ZERO
    notional: Decimal = ZERO  # sum of price * qty over fills, for the average fill price
    reason: str = ""
    created_ts_ns: int = 0
    venue: str = ""

    @property
    def remaining_qty(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def avg_fill_price(self) -> Decimal | None:
        return self.notional / self.filled_qty if self.filled_qty else None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    def copy(self) -> Order:
        return attrs.evolve(self)


@attrs.define(slots=True)
class Position:
    """A slot's position in one symbol. ``qty`` is signed: long > 0, short < 0."""

    symbol: str
    qty: Decimal = ZERO
    avg_entry_price: Decimal | None = None
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO

    def apply_fill(self, side: str, price: Decimal, qty: Decimal, fee: Decimal = ZERO) -> None:
        signed = qty if side == "buy" else -qty
        self.fees += fee
        self.realized_pnl -= fee
        old = self.qty
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            # Opening or adding: the entry price is the quantity-weighted average.
            base = self.avg_entry_price or ZERO
            self.avg_entry_price = (base * abs(old) + price * qty) / abs(new)
        else:
            closed = min(abs(signed), abs(old))
            direction = 1 if old > 0 else -1
            assert self.avg_entry_price is not None
            self.realized_pnl += (price - self.avg_entry_price) * closed * direction
            if new == 0:
                self.avg_entry_price = None
            elif (new > 0) != (old > 0):
                self.avg_entry_price = price  # flipped: the remainder opened at this price
        self.qty = new

    def unrealized_pnl(self, mark: Decimal | None) -> Decimal:
        if mark is None or self.avg_entry_price is None or self.qty == 0:
            return ZERO
        return (mark - self.avg_entry_price) * self.qty
