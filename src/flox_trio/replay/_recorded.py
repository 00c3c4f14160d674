"""The executor of a reproducing replay: what the live executor answered, at the point it answered.

A live session's tape holds, between its market batches, every order update
and fill the engine delivered. ``RecordedExecutor`` hands those back at the
same place in the stream (before the market batch that followed them live),
so a replay's strategies see exactly what the live ones saw: the same acks,
fills, prices, quantities and fees, the same order ids, in the same order,
whatever the latency or the venue was. The orders the strategies submit are
checked against the recording; one the live session did not make (a changed
strategy, a non-deterministic one) is a divergence, counted and reported,
and refused so the replay does not invent a fill.
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal
from pathlib import Path

import attrs

from .._core._events import Fill, OrderUpdate
from .._core._orders import Order, Position, book_fill
from .._core._ports import Executor
from .._core._status import ExecutorSettings, ExecutorStatus
from ..tape import TapeReader

log = logging.getLogger("flox_trio.replay")

_FINAL = frozenset(("filled", "canceled", "rejected"))


@attrs.frozen
class RecordedSettings(ExecutorSettings):
    """A reproducing replay's executor: the recorded answers of ``recorded`` (the live stack's settings)."""

    tape: str


@attrs.frozen(kw_only=True)
class RecordedStatus(ExecutorStatus):
    #: Orders the replay's strategies made that the live session did not (or made differently).
    divergences: int = 0
    first_divergence: str | None = None


class RecordedExecutor(Executor):
    """Answers with the recorded order events of ``tape``; see the module docstring."""

    def __init__(self, tape: str | Path) -> None:
        self.tape = str(tape)
        # (market events published before it live, the batch of order events)
        self._due: deque[tuple[int, list[OrderUpdate | Fill]]] = deque()
        self._recorded: dict[str, OrderUpdate] = {}
        # Market events are counted, not decoded: the feed decodes them when it publishes them.
        for market, orders in TapeReader(tape).order_batches():
            self._due.append((market, orders))
            for e in orders:
                if isinstance(e, OrderUpdate) and e.order_id not in self._recorded:
                    self._recorded[e.order_id] = e
        self._seen = 0
        self._orders: dict[str, Order] = {}
        self._positions: dict[tuple[int, str], Position] = {}
        self._fills: list[Fill] = []
        self.divergences: list[str] = []

    @property
    def settings(self) -> RecordedSettings:
        return RecordedSettings(self.tape)

    # --- the recording, at its place ----------------------------------------------------------

    def before_batch(self, size: int) -> None:
        """Called just before a market batch of ``size`` events is published: hand back what came before it."""
        self._emit_due(self._seen)
        self._seen += size

    def finish(self) -> None:
        """After the last market batch: what the live session delivered after it (the last fills)."""
        self._emit_due(None)

    def _emit_due(self, upto: int | None) -> None:
        while self._due and (upto is None or self._due[0][0] <= upto):
            _, events = self._due.popleft()
            for e in events:
                self._apply(e)
                self._emit(e.slot, e)

    def _apply(self, e: OrderUpdate | Fill) -> None:
        if isinstance(e, Fill):
            key = (e.slot, e.symbol)
            pos = self._positions.get(key) or self._positions.setdefault(key, Position(e.symbol))
            book_fill(pos, e)
            self._fills.append(e)
            return
        order = self._orders.get(e.order_id)
        if order is None:
            # Made live but not (yet) by the replay's strategy: track it as the live one.
            order = self._orders[e.order_id] = Order(e.order_id, e.slot, e.symbol, e.side, e.order_type, e.qty,
                                                     e.price, venue=e.venue)
        order.status = e.status
        order.qty, order.price = e.qty, e.price  # an amend changes them
        order.filled_qty = e.filled_qty
        order.reason = e.reason
        if e.avg_fill_price is not None:
            order.notional = e.avg_fill_price * e.filled_qty

    # --- the executor port --------------------------------------------------------------------

    def submit(self, order: Order) -> None:
        live = self._recorded.get(order.order_id)
        mismatch = None
        if live is None and not self._due:
            # Past the tape's last answer: live, this order was sent and the session
            # ended before anything came back. It stays as it was then: sent.
            self._orders.setdefault(order.order_id, order)
            return
        if live is None:
            mismatch = f"order {order.order_id} ({order.side} {order.qty} {order.symbol}) was not made live"
        elif (live.side, live.symbol, live.order_type, live.qty, live.price) != (
                order.side, order.symbol, order.order_type, order.qty, order.price):
            mismatch = (f"order {order.order_id} is {order.side} {order.order_type} {order.qty} {order.symbol}"
                        f"{'' if order.price is None else ' @ ' + str(order.price)} here, live it was "
                        f"{live.side} {live.order_type} {live.qty} {live.symbol}"
                        f"{'' if live.price is None else ' @ ' + str(live.price)}")
        if mismatch is not None:
            self.divergences.append(mismatch)
            if len(self.divergences) == 1:
                log.warning("replay diverges from the live session: %s", mismatch)
            order.status, order.reason = "rejected", f"replay: {mismatch}"
            self._orders.setdefault(order.order_id, order)
            self._emit(order.slot, OrderUpdate(order.order_id, order.symbol, order.side, order.order_type, "rejected",
                                   order.qty, Decimal(0), order.price, None, order.reason, slot=order.slot))
            return
        self._orders.setdefault(order.order_id, order)

    def cancel(self, slot: int, order_id: str) -> None:
        """The live outcome of a cancel is on the tape already; nothing to do."""

    def amend(self, slot: int, order_id: str, price: Decimal | None, qty: Decimal | None) -> None:
        """The live outcome of an amend (its "amended" or "amend refused" update) is on the tape already."""

    async def run(self) -> None:
        return None

    def position(self, slot: int, symbol: str) -> Position:
        key = (slot, symbol)
        return self._positions.get(key) or self._positions.setdefault(key, Position(symbol))

    def positions(self) -> dict[tuple[int, str], Position]:
        return dict(self._positions)

    def open_orders(self, slot: int, symbol: str | None = None) -> list[Order]:
        return [o.copy() for o in self._orders.values()
                if o.slot == slot and o.status not in _FINAL and (symbol is None or o.symbol == symbol)]

    def orders(self) -> list[Order]:
        return [o.copy() for o in self._orders.values()]

    def fill_history(self) -> list[Fill]:
        return list(self._fills)

    def status(self) -> RecordedStatus:
        return RecordedStatus(executor="RecordedExecutor", orders=len(self._orders),
                              open_orders=sum(o.status not in _FINAL for o in self._orders.values()),
                              fills=len(self._fills), divergences=len(self.divergences),
                              first_divergence=self.divergences[0] if self.divergences else None)
