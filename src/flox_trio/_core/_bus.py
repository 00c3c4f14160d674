"""The bus: published batches routed by symbol to bounded per-slot queues; order events to the slot that owns them.

A slot's queue holds batches, never single events: a batch is the unit the
hot path moves. When a queue is full its overflow policy decides: ``block``
waits (lossless backpressure), ``drop_newest`` / ``drop_oldest`` drop a
market batch and count it. Order events are never dropped, whatever the
policy: they are the executor's truth about the slot's money.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Protocol

import trio

from ._events import Event, Gap
from ._states import Overflow


class OrderBatch(list[Event]):
    """A batch of order events: never dropped by an overflow policy."""

    __slots__ = ()


#: Sent to a waiting slot to make it look at its requests; not an event batch.
WAKE: list[Any] = []


class SlotQueue:
    """One slot's bounded channel of batches under an overflow policy, with its counters."""

    __slots__ = ("_progress", "_send", "_unreported", "consumed", "dropped", "dropped_by_symbol", "enqueued",
                 "overflow", "recv", "waiting")

    def __init__(self, capacity: int, overflow: Overflow, progress: Callable[[], None]) -> None:
        self._send, self.recv = trio.open_memory_channel[list[Any]](capacity)
        self.overflow = overflow
        self._progress = progress
        self.enqueued = 0
        self.consumed = 0
        self.dropped = 0
        #: What the overflow policy dropped, per symbol; never silent: see ``_unreported``.
        self.dropped_by_symbol: dict[str, int] = {}
        # Drops the slot was not told about yet: a Gap per symbol goes ahead of the next batch.
        self._unreported: dict[str, int] = {}
        #: True while the slot's task waits for a batch: a wake-up then sends WAKE down
        #: the (empty, so never full) channel instead of cancelling the wait.
        self.waiting = False

    @property
    def depth(self) -> int:
        """Events queued and not yet dispatched (or dropped)."""
        return self.enqueued - self.consumed

    async def put_market(self, batch: list[Any]) -> None:
        if self._unreported:
            batch = self._with_gaps(batch)
        n = len(batch)
        self.enqueued += n
        try:
            # No checkpoint when there is room: `send` would yield to the
            # scheduler twice per batch, which is most of the cost of a small
            # batch. The feed yields when it waits for data or for room.
            self._send.send_nowait(batch)
            return
        except trio.WouldBlock:
            if self.overflow is Overflow.BLOCK:
                await self._send.send(batch)
                return
        if self.overflow is Overflow.DROP_OLDEST:
            try:
                oldest = self.recv.receive_nowait()
            except trio.WouldBlock:
                oldest = None
            if isinstance(oldest, OrderBatch):
                # Order events are never dropped: requeue it and drop this batch instead.
                self._send.send_nowait(oldest)
            elif oldest is not None:
                self._dropped(oldest)
                self._send.send_nowait(batch)
                return
        self._dropped(batch)

    def _dropped(self, batch: list[Any]) -> None:
        self.consumed += len(batch)
        for ev in batch:
            sym = ev.symbol
            if type(ev) is Gap and ev.reason == "dropped":
                # A notice of earlier drops was dropped itself: it is told again with the next batch.
                self._unreported[sym] = self._unreported.get(sym, 0) + max(ev.missing, 0)
                continue
            self.dropped += 1
            self.dropped_by_symbol[sym] = self.dropped_by_symbol.get(sym, 0) + 1
            self._unreported[sym] = self._unreported.get(sym, 0) + 1
        self._progress()

    def _with_gaps(self, batch: list[Any]) -> list[Any]:
        gaps = [Gap(sym, "dropped", n) for sym, n in self._unreported.items()]
        self._unreported = {}
        return [*gaps, *batch]

    async def put_orders(self, events: list[Event]) -> None:
        self.enqueued += len(events)
        try:
            self._send.send_nowait(OrderBatch(events))
        except trio.WouldBlock:
            await self._send.send(OrderBatch(events))

    def wake(self) -> None:
        if self.waiting:
            self.waiting = False
            try:
                self._send.send_nowait(WAKE)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # not actually idle, or gone: the slot sees its request anyway

    def close(self) -> None:
        self.recv.close()


class Route(Protocol):
    """A slot as the bus sees it."""

    index: int
    #: Plain symbols the slot watches, and the venue each is pinned to (if any).
    watch: frozenset[str]
    venues: dict[str, str]
    queue: SlotQueue

    @property
    def active(self) -> bool: ...

    @property
    def wants_bars(self) -> bool: ...


_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
_symbol_of = attrgetter("symbol")


class Bus:
    """Routes market batches to the slots that watch their symbols and order events to their owner."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._by_index: dict[int, Route] = {}
        self._outbox: list[tuple[int, Event]] = []
        self._outbox_ready = trio.Event()

    @property
    def routes(self) -> Sequence[Route]:
        return self._routes

    def add(self, route: Route) -> None:
        self._routes.append(route)
        self._by_index[route.index] = route

    def remove(self, route: Route) -> None:
        """No more market batches for ``route``; order events for it are still delivered while it lives."""
        if route in self._routes:
            self._routes.remove(route)

    def watched(self) -> frozenset[str]:
        return frozenset().union(*(r.watch for r in self._routes))

    async def route(self, batch: list[Any]) -> None:
        routes = self._routes
        if not routes:
            return
        symbols = set(map(_symbol_of, batch))
        for route in tuple(routes):
            watch = route.watch
            if route.venues:
                venues = route.venues
                sub = [e for e in batch if e.symbol in watch
                       and venues.get(e.symbol, e.venue) in (e.venue, "")]
            elif symbols <= watch:
                sub = batch
            elif symbols.isdisjoint(watch):
                continue
            else:
                sub = [e for e in batch if e.symbol in watch]
            if sub and route.active:
                try:
                    await route.queue.put_market(sub)
                except _GONE:
                    pass  # the slot was removed while we waited for room

    # --- order events --------------------------------------------------------------------------

    def emit(self, slot: int, event: Event) -> None:
        """Queue an order event for ``slot`` (the executor calls this; delivered by ``flush_orders``)."""
        self._outbox.append((slot, event))
        self._outbox_ready.set()

    @property
    def orders_pending(self) -> bool:
        return bool(self._outbox)

    async def wait_orders(self) -> None:
        await self._outbox_ready.wait()
        self._outbox_ready = trio.Event()

    async def flush_orders(self, record: Callable[[list[Event]], None]) -> None:
        """Deliver queued order events to their slots, in order; ``record`` sees each run first."""
        while self._outbox:
            out, self._outbox = self._outbox, []
            record([ev for _, ev in out])
            per_slot: dict[int, list[Event]] = {}
            for index, ev in out:
                per_slot.setdefault(index, []).append(ev)
            for index, events in per_slot.items():
                route = self._by_index.get(index)
                if route is not None and route.active:
                    try:
                        await route.queue.put_orders(events)
                    except _GONE:
                        pass
