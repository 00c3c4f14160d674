"""Swap requests, their handles, and the warm-up a new strategy may get before it goes live.

A request is queued on its slot and served by the slot's own task at an
event boundary (``_slot.py`` does the swap itself); the caller holds a
``SwapHandle`` and may await it for the ``SwapReport``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import attrs
import trio

from .._errors import SwapError, describe_exception
from ._events import Event, Gap, OrderType, Side, SymbolRef
from ._host import StrategyHost
from ._ports import Portfolio, SlotPort, StrategyRequests
from ._states import RequestKind
from ._status import SwapReport
from ._strategy import Context

log = logging.getLogger("flox_trio.slot")


@attrs.define(eq=False)
class Request:
    """A swap or a removal waiting for its slot's next event boundary."""

    kind: RequestKind
    host: StrategyHost | None = None
    warmup: int | float | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    report: SwapReport | None = None

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class SwapHandle:
    """Returned by ``replace_strategy``: the swap is already requested; await it for the outcome.

    Awaiting returns a ``SwapReport`` or raises ``SwapError`` (the old
    strategy is back in place). Not awaiting is fine: the swap still happens
    at the slot's next event boundary and failures are logged.
    """

    __slots__ = ("_req",)

    def __init__(self, req: Request) -> None:
        self._req = req

    @property
    def done(self) -> bool:
        return self._req.done.is_set()

    async def wait(self) -> SwapReport:
        await self._req.done.wait()
        if self._req.error is not None:
            raise self._req.error
        assert self._req.report is not None
        return self._req.report

    def __await__(self) -> Generator[Any, None, SwapReport]:
        return self.wait().__await__()


class DrySlot:
    """Stands in for a slot during a warm-up: same symbols and portfolio, order intents go nowhere."""

    def __init__(self, slot: SlotPort) -> None:
        self.index = slot.index
        self.symbols: tuple[SymbolRef, ...] = slot.symbols
        self.portfolio: Portfolio = slot.portfolio
        self._slot = slot
        self.ctxs = {sym: Context(self, sym, c.venue) for sym, c in slot.ctxs.items()}
        self.interrupted = False
        self.errors = 0
        self.order_seq = 1

    @property
    def requests(self) -> StrategyRequests:
        return self._slot.requests

    @property
    def errors_left(self) -> int | None:
        return None

    def submit_order(self, symbol: str, side: Side, order_type: OrderType, qty: Any, price: Any,
                     order_id: str | None = None) -> str:
        oid = order_id or f"warmup-{self.order_seq}"
        self.order_seq += 1
        return oid

    def cancel_order(self, order_id: str) -> None:
        pass

    def amend_order(self, order_id: str, price: Any = None, qty: Any = None) -> None:
        pass

    def record_error(self, exc: BaseException, event: Event | None = None, where: str = "") -> None:
        self.errors += 1
        log.warning("slot %d: the new strategy raised during warm-up on %r: %s", self.index, event,
                    describe_exception(exc))

    def note_gap(self, gap: Gap) -> None:
        pass

    def quarantine(self, reason: str) -> None:
        raise SwapError(f"slot {self.index}: the new strategy failed its warm-up: {reason}")


async def warm_up(host: StrategyHost, slot: SlotPort, events: list[Event]) -> None:
    """Run ``events`` through ``host`` attached to a dry slot: its ctx tracks prices, intents vanish."""
    dry = DrySlot(slot)
    host.attach(dry)
    try:
        i = 0
        while i < len(events):
            i = await host.dispatch(events, i)
            dry.interrupted = False
    finally:
        host.attach(slot)
    log.info("slot %d: warmed up the new strategy on %d recent events (%d errors)",
             slot.index, len(events), dry.errors)

