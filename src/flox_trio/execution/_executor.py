"""The executor contract: where a slot's order intents go."""

from __future__ import annotations

import abc
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .._core._events import Event
from .._core._orders import Order, Position

#: (slot index, symbol) -> (last trade price, best bid, best ask) as the slot sees the market.
QuoteFn = Callable[[int, str], tuple[float | None, float | None, float | None]]
#: Hand an order event to the runner for delivery to a slot (buffered; delivered in order).
EmitFn = Callable[[int, Event], None]


class Executor(abc.ABC):
    """Owns orders and positions. Survives every strategy swap: strategies come and go, orders stay."""

    def bind(self, *, emit: EmitFn, quote: QuoteFn, now_ns: Callable[[], int]) -> None:
        """Called once by the runner before anything else."""
        self._emit = emit
        self._quote = quote
        self._now_ns = now_ns

    @abc.abstractmethod
    def submit(self, order: Order) -> None:
        """Take a new order (status "new"); acknowledge it asynchronously."""

    @abc.abstractmethod
    def cancel(self, slot: int, order_id: str) -> None:
        """Request a cancel; a cancel of a final or unknown order is answered with a rejected update."""

    def on_market(self, batch: list[Any]) -> None:  # noqa: B027 - optional hook
        """See every published market batch (to fill resting orders). Must be cheap."""

    @abc.abstractmethod
    async def run(self) -> None:
        """The executor's task in the runner's nursery (timers, venue sessions)."""

    @abc.abstractmethod
    def position(self, slot: int, symbol: str) -> Position: ...

    @abc.abstractmethod
    def open_orders(self, slot: int, symbol: str | None = None) -> list[Order]: ...

    @abc.abstractmethod
    def orders(self) -> list[Order]:
        """Every order the executor has seen, in submission order."""

    def positions(self) -> dict[tuple[int, str], Position]:
        return {}

    def mark_price(self, slot: int, symbol: str) -> Decimal | None:
        last, bid, ask = self._quote(slot, symbol)
        if bid is not None and ask is not None:
            return Decimal(repr((bid + ask) / 2))
        return Decimal(repr(last)) if last is not None else None

    def status(self) -> dict[str, Any]:
        return {"executor": type(self).__name__}
