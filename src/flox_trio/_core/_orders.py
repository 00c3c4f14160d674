"""Orders and positions: the exact-arithmetic half of the engine."""

from __future__ import annotations

from collections import deque
from decimal import Decimal

import attrs

from ._events import Fill, OrderStatus, OrderType, OrderUpdate, Side, quote_currency
from ._money import ZERO

OPEN_STATES: frozenset[OrderStatus] = frozenset({"new", "accepted", "partially_filled"})


@attrs.define(slots=True, eq=False)
class Order:
    """An order as the executor tracks it. Strategies see copies via ``ctx.open_orders``."""

    order_id: str
    slot: int
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    price: Decimal | None = None
    status: OrderStatus = "new"
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


#: The reason of the update that answers an amend which took effect.
AMENDED = "amended"


def order_update(order: Order, reason: str, ts_ns: int) -> OrderUpdate:
    """The order as it stands, as an update whose reason is ``reason``."""
    return OrderUpdate(order.order_id, order.symbol, order.side, order.order_type, order.status, order.qty,
                       order.filled_qty, order.price, order.avg_fill_price, reason, ts_ns, order.slot, order.venue)


def amend_refused(order: Order, why: str, ts_ns: int) -> OrderUpdate:
    """The answer to an amend that did not take effect: the order unchanged, its status as it stands."""
    return order_update(order, f"amend refused: {why}", ts_ns)


def amend_problem(order: Order, price: Decimal | None, qty: Decimal | None) -> str | None:
    """Why ``order`` cannot take this amend whatever the venue says (None: it can)."""
    if not order.is_open:
        return f"order is {order.status}"
    if order.order_type != "limit":
        return "only a resting limit order can be amended"
    if price is None and qty is None:
        return "give a new price, a new qty or both"
    if qty is not None and qty <= order.filled_qty:
        return f"new qty {qty} is not above the {order.filled_qty} already filled; cancel the order instead"
    return None


@attrs.define(slots=True)
class Position:
    """A slot's position in one symbol. ``qty`` is signed: long > 0, short < 0.

    Lots are closed first-in first-out, so realized PnL is a sum of exact
    products and never a division: realized + unrealized equals cash plus
    inventory at the mark to the last digit, after any number of fills.
    """

    symbol: str
    qty: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    cost_basis: Decimal = ZERO  # sum of price * signed qty over the open lots
    _lots: deque[list[Decimal]] = attrs.field(factory=deque, repr=False)  # [price, signed qty]

    @property
    def avg_entry_price(self) -> Decimal | None:
        """Quantity-weighted price of the open lots (rounded only here, for display and logic)."""
        return self.cost_basis / self.qty if self.qty else None

    def apply_fill(self, side: Side, price: Decimal, qty: Decimal, fee: Decimal = ZERO) -> None:
        signed = qty if side == "buy" else -qty
        self.fees += fee
        self.realized_pnl -= fee
        lots = self._lots
        remaining = signed
        while remaining and lots and (lots[0][1] > 0) != (remaining > 0):
            lot = lots[0]
            closed = min(abs(remaining), abs(lot[1]))
            direction = 1 if lot[1] > 0 else -1
            self.realized_pnl += (price - lot[0]) * closed * direction
            self.cost_basis -= lot[0] * closed * direction
            lot[1] -= closed * direction
            remaining += closed * direction
            if not lot[1]:
                lots.popleft()
        if remaining:
            if lots and lots[-1][0] == price:
                lots[-1][1] += remaining
            else:
                lots.append([price, remaining])
            self.cost_basis += price * remaining
        self.qty += signed

    def unrealized_pnl(self, mark: Decimal | None) -> Decimal:
        if mark is None or self.qty == 0:
            return ZERO
        return mark * self.qty - self.cost_basis


def book_fill(position: Position, fill: Fill) -> None:
    """Book ``fill`` on ``position`` as the account sees it.

    A fee in the quote asset (``fee_asset`` "" or the quote) is a fee. A fee in
    the base asset comes out of what the account holds, so the position stays
    what the venue lets the strategy sell: a buy adds ``qty - fee``, a sell
    takes ``qty + fee``, and the fee's value at the fill price is the cost. A
    fee in any other asset (BNB) is not in this symbol's PnL.
    """
    asset, symbol = fill.fee_asset, fill.symbol
    quote = quote_currency([symbol])
    if not asset or asset == quote:
        position.apply_fill(fill.side, fill.price, fill.qty, fill.fee)
    elif fill.fee and symbol.endswith(quote) and asset == symbol[: -len(quote)]:
        net = fill.qty - fill.fee if fill.side == "buy" else fill.qty + fill.fee
        position.apply_fill(fill.side, fill.price, net, fill.fee * fill.price)
    else:
        position.apply_fill(fill.side, fill.price, fill.qty, ZERO)
