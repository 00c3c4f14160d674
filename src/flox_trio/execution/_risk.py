"""Pre-trade risk controls: an executor that wraps another and refuses what breaks a limit.

Every refusal reaches the strategy as a rejected ``OrderUpdate`` whose
``reason`` says which limit and by how much, delivered through the runner's
emit path like any other order update. The kill switch ``halt()`` cancels
every open order and refuses every new intent until ``resume()``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from .._core._convert import converter
from .._core._events import Fill, OrderUpdate
from .._core._money import ZERO
from .._core._orders import Order, Position, amend_refused
from .._core._ports import Clock, EmitFn, Executor, QuoteFn
from .._core._status import ExecutorSettings, ExecutorStatus
from .._errors import OrderError

log = logging.getLogger("flox_trio.risk")

#: The window of the order-rate limit, in seconds of the Trio clock.
RATE_WINDOW_S = 1.0


def _opt_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


@attrs.frozen
class Limits:
    """One set of limits; ``None`` means not enforced.

    ``max_order_qty``: largest quantity of one order. ``max_position``:
    largest absolute position per symbol, counting the open orders that would
    grow it. ``max_orders_per_second``: most orders accepted in any window of
    one second.
    """

    max_order_qty: Decimal | None = attrs.field(default=None, converter=_opt_decimal)
    max_position: Decimal | None = attrs.field(default=None, converter=_opt_decimal)
    max_orders_per_second: int | None = None


@attrs.frozen
class RiskLimits:
    """Limits for a ``RiskExecutor``.

    ``per_slot`` applies to each slot on its own (``slots`` overrides it for
    given slot indexes); ``total`` applies to all slots together: the net
    position per symbol across slots and the order rate of the whole engine.
    """

    per_slot: Limits = Limits()
    total: Limits = Limits()
    slots: Mapping[int, Limits] = attrs.field(factory=dict)

    def for_slot(self, slot: int) -> Limits:
        return self.slots.get(slot, self.per_slot)


@attrs.frozen
class RiskSettings(ExecutorSettings):
    """A ``RiskExecutor``: its limits and the settings of the executor it wraps."""

    limits: RiskLimits
    inner: ExecutorSettings


@attrs.frozen(kw_only=True)
class RiskStatus(ExecutorStatus):
    inner: ExecutorStatus
    halted: bool
    halt_reason: str
    refused: int


# JSON object keys are strings: per-slot overrides travel as {"0": {...}}.
converter.register_unstructure_hook(RiskLimits, lambda rl: {
    "per_slot": converter.unstructure(rl.per_slot), "total": converter.unstructure(rl.total),
    "slots": {str(k): converter.unstructure(v) for k, v in rl.slots.items()},
})
converter.register_structure_hook(RiskLimits, lambda d, _: RiskLimits(
    converter.structure(d.get("per_slot", {}), Limits), converter.structure(d.get("total", {}), Limits),
    {int(k): converter.structure(v, Limits) for k, v in d.get("slots", {}).items()},
))


class RiskExecutor(Executor):
    """An executor in front of another one that enforces ``RiskLimits`` and a kill switch."""

    def __init__(self, inner: Executor, limits: RiskLimits | None = None, *, history: int | None = 10_000) -> None:
        if not isinstance(inner, Executor):
            raise OrderError(f"RiskExecutor wraps an Executor, got {inner!r}")
        self.inner = inner
        self.limits = limits if limits is not None else RiskLimits()
        self.halted = False
        self.halt_reason = ""
        self.refused = 0
        # The refused orders, for orders() and for answering a cancel of one: the last
        # `history` of them in a live run (replays keep all: their outputs are the whole run).
        self.history = history
        self._refused: dict[str, Order] = {}
        self._refused_order: deque[str] = deque()
        self._slot_times: dict[int, deque[float]] = {}
        self._all_times: deque[float] = deque()

    def bind(self, *, emit: EmitFn, quote: QuoteFn, clock: Clock) -> None:
        super().bind(emit=emit, quote=quote, clock=clock)
        self.inner.bind(emit=emit, quote=quote, clock=clock)

    @property
    def settings(self) -> RiskSettings:
        return RiskSettings(self.limits, self.inner.settings)

    # --- the kill switch ------------------------------------------------------------

    def halt(self, reason: str = "halted by operator") -> int:
        """Refuse every new order and cancel every open one; returns how many cancels were sent."""
        self.halted = True
        self.halt_reason = reason or "halted by operator"
        cancels = 0
        for order in self.inner.orders():
            if order.is_open:
                try:
                    self.inner.cancel(order.slot, order.order_id)
                    cancels += 1
                except OrderError as exc:  # already final or unknown: nothing to cancel
                    log.info("halt: could not cancel %s: %s", order.order_id, exc)
        log.warning("trading halted (%s): %d open orders being canceled", self.halt_reason, cancels)
        return cancels

    def resume(self) -> None:
        """Accept orders again (within the limits)."""
        if self.halted:
            log.warning("trading resumed after halt (%s)", self.halt_reason)
        self.halted = False
        self.halt_reason = ""

    # --- intents ----------------------------------------------------------------------

    def submit(self, order: Order) -> None:
        reason = self._check(order)
        if reason is not None:
            self._refuse(order, reason)
            return
        now = self._clock.now()
        for times in (self._slot_times.setdefault(order.slot, deque()), self._all_times):
            times.append(now)
            while times[0] <= now - RATE_WINDOW_S:  # only the last second counts
                times.popleft()
        self.inner.submit(order)

    def cancel(self, slot: int, order_id: str) -> None:
        refused = self._refused.get(order_id)
        if refused is not None and refused.slot == slot:
            self._emit(slot, _update(refused, "cancel refused: order is rejected", self._clock.wall_ns()))
            return
        self.inner.cancel(slot, order_id)

    def amend(self, slot: int, order_id: str, price: Decimal | None, qty: Decimal | None) -> None:
        """An amend is checked as the order it would make: the kill switch, the size and the position limits."""
        refused = self._refused.get(order_id)
        if refused is not None and refused.slot == slot:
            self._emit(slot, amend_refused(refused, "order is rejected", self._clock.wall_ns()))
            return
        order = next((o for o in self.inner.open_orders(slot) if o.order_id == order_id), None)
        reason = None
        if order is not None:
            if self.halted:
                reason = self._halted_reason
            elif qty is not None and qty > order.qty:
                # Only what the amend adds can break a limit: the order as it would be, its
                # remaining quantity the increase alone (the rest is counted as open already).
                grown = attrs.evolve(order, qty=qty, price=price if price is not None else order.price)
                reason = self._limit_breach(grown, qty - order.qty)
            if reason is not None:
                self.refused += 1
                log.warning("slot %d amend of %s refused: %s", slot, order_id, reason)
                self._emit(slot, amend_refused(order, reason, self._clock.wall_ns()))
                return
        self.inner.amend(slot, order_id, price, qty)

    def _check(self, order: Order) -> str | None:
        if self.halted:
            return self._halted_reason
        reason = self._limit_breach(order, order.qty)
        if reason is not None:
            return reason
        mine, total = self.limits.for_slot(order.slot), self.limits.total
        now = self._clock.now()
        for scope, limits, times in ((f"slot {order.slot}", mine, self._slot_times.get(order.slot)),
                                     ("global", total, self._all_times)):
            cap_rate = limits.max_orders_per_second
            if cap_rate is not None and times is not None:
                while times and times[0] <= now - RATE_WINDOW_S:
                    times.popleft()
                if len(times) >= cap_rate:
                    return (f"risk: {scope} order rate limit of {cap_rate} per second reached; "
                            f"next order possible in {times[0] + RATE_WINDOW_S - now:.3f} s")
        return None

    @property
    def _halted_reason(self) -> str:
        return f"risk: trading halted ({self.halt_reason}); `flox-trio resume` to trade again"

    def _limit_breach(self, order: Order, adds: Decimal) -> str | None:
        """Which size or position limit ``order`` breaks, its open quantity growing by ``adds``."""
        mine, total = self.limits.for_slot(order.slot), self.limits.total
        for scope, limits in ((f"slot {order.slot}", mine), ("global", total)):
            cap = limits.max_order_qty
            if cap is not None and order.qty > cap:
                return f"risk: order qty {order.qty} exceeds the {scope} max order size {cap}"
        for scope, limits, slots in ((f"slot {order.slot}", mine, (order.slot,)), ("global", total, None)):
            cap = limits.max_position
            if cap is not None:
                worst = self._worst_position(order, slots, adds)
                if abs(worst) > cap:
                    return (f"risk: {order.side} {order.qty} {order.symbol} could take the {scope} position "
                            f"to {worst} (open orders included), beyond max position {cap}")
        return None

    def _worst_position(self, order: Order, slots: tuple[int, ...] | None, adds: Decimal) -> Decimal:
        """Position after every open order on ``order``'s side fills, with ``adds`` more of it."""
        sign = 1 if order.side == "buy" else -1
        if slots is None:
            pos = sum((p.qty for (_, sym), p in self.inner.positions().items() if sym == order.symbol), ZERO)
            opens = [o for o in self.inner.orders() if o.is_open and o.symbol == order.symbol]
        else:
            pos = sum((self.inner.position(s, order.symbol).qty for s in slots), ZERO)
            opens = [o for s in slots for o in self.inner.open_orders(s, order.symbol)]
        pending = sum((o.remaining_qty for o in opens if o.side == order.side), ZERO)
        return pos + sign * (pending + adds)

    def _refuse(self, order: Order, reason: str) -> None:
        self.refused += 1
        order.status = "rejected"
        order.reason = reason
        order.created_ts_ns = self._clock.wall_ns()
        self._refused[order.order_id] = order
        if self.history is not None:
            self._refused_order.append(order.order_id)
            while len(self._refused_order) > self.history:
                self._refused.pop(self._refused_order.popleft(), None)
        log.warning("slot %d order %s refused: %s", order.slot, order.order_id, reason)
        self._emit(order.slot, _update(order, reason, order.created_ts_ns))

    # --- delegation ---------------------------------------------------------------------

    def on_market(self, batch: list[Any]) -> None:
        self.inner.on_market(batch)

    def may_emit_on_market(self) -> bool:
        return self.inner.may_emit_on_market()

    @property
    def due(self) -> bool:
        return self.inner.due

    async def run(self) -> None:
        await self.inner.run()

    def position(self, slot: int, symbol: str) -> Position:
        return self.inner.position(slot, symbol)

    def positions(self) -> dict[tuple[int, str], Position]:
        return self.inner.positions()

    def open_orders(self, slot: int, symbol: str | None = None) -> list[Order]:
        return self.inner.open_orders(slot, symbol)

    def orders(self) -> list[Order]:
        """Every order, including the ones risk refused (status "rejected")."""
        inner = self.inner.orders()
        if not self._refused:
            return inner
        refused = [o.copy() for o in self._refused.values()]
        return sorted(inner + refused, key=lambda o: o.created_ts_ns)

    def fill_history(self) -> list[Fill]:
        return self.inner.fill_history()

    def mark_price(self, slot: int, symbol: str) -> Decimal | None:
        return self.inner.mark_price(slot, symbol)

    def status(self) -> RiskStatus:
        inner = self.inner.status()
        return RiskStatus(executor="RiskExecutor", orders=inner.orders, open_orders=inner.open_orders,
                          fills=inner.fills, inner=inner, halted=self.halted, halt_reason=self.halt_reason,
                          refused=self.refused)

def _update(order: Order, reason: str, ts_ns: int) -> OrderUpdate:
    return OrderUpdate(order.order_id, order.symbol, order.side, order.order_type, "rejected",
                       order.qty, order.filled_qty, order.price, None, reason, ts_ns, order.slot, order.venue)
