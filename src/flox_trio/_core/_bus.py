"""The bus: published batches routed by symbol to bounded per-slot queues; order events to the slot that owns them.

A slot's queue holds batches, never single events: a batch is the unit the
hot path moves. When a queue is full its overflow policy decides: ``block``
waits (lossless backpressure), ``drop_newest`` / ``drop_oldest`` drop a
market batch and count it. Order events are never dropped, whatever the
policy: they are the executor's truth about the slot's money.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from ._events import Event, Gap, Trade
from ._ports import TradeTarget
from ._states import Overflow


class OrderBatch(list[Event]):
    """A batch of order events: never dropped by an overflow policy."""

    __slots__ = ()


#: Sent to a waiting slot to make it look at its requests; not an event batch.
WAKE: list[Any] = []


def not_now(event: Any) -> bool:
    return True


class SlotQueue:
    """One slot's bounded channel of batches under an overflow policy, with its counters."""

    __slots__ = ("_progress", "_send", "_unreported", "capacity", "consumed", "dropped", "dropped_by_symbol",
                 "enqueued", "inlined", "on_event", "overflow", "ready", "recv", "trades", "waiting")

    def __init__(self, capacity: int, overflow: Overflow, progress: Callable[[], None]) -> None:
        self._send, self.recv = trio.open_memory_channel[list[Any]](capacity)
        #: Batches the queue holds at most.
        self.capacity = capacity
        self.overflow = overflow
        self._progress = progress
        #: Market events the bus delivered one by one in its own task (never queued), and
        #: how: one event into the slot's strategy, True when not now; a trade, while the
        #: queue is ``ready``, into ``trades`` when there is one (both set by the slot).
        self.inlined = 0
        self.on_event: Callable[[Any], bool] = not_now
        self.trades: TradeTarget | None = None
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
        #: True while the bus may deliver in its own task (the slot's task is parked on an
        #: empty queue, nothing is pending for it): set by the slot, cleared by anything put here.
        self.ready = False

    @property
    def unreported(self) -> bool:
        """Drops the slot was not told about yet (a Gap goes ahead of its next batch)."""
        return bool(self._unreported)

    @property
    def depth(self) -> int:
        """Events queued and not yet dispatched (or dropped)."""
        return self.enqueued - self.consumed

    async def put_market(self, batch: list[Any]) -> None:
        full = self.put_market_nowait(batch)
        if full is not None:
            await self._send.send(full)

    def put_market_nowait(self, batch: list[Any]) -> list[Any] | None:
        """``put_market`` without waiting: None when it is queued (or dropped by the policy); the batch,
        counted and not yet sent, when the queue is full under ``block`` (send it, waiting)."""
        self.ready = False
        if self._unreported:
            batch = self._with_gaps(batch)
        n = len(batch)
        self.enqueued += n
        try:
            # No checkpoint when there is room: `send` would yield to the
            # scheduler twice per batch, which is most of the cost of a small
            # batch. The feed yields when it waits for data or for room.
            self._send.send_nowait(batch)
            return None
        except trio.WouldBlock:
            if self.overflow is Overflow.BLOCK:
                return batch
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
                return None
        self._dropped(batch)
        return None

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
        self.ready = False
        self.enqueued += len(events)
        try:
            self._send.send_nowait(OrderBatch(events))
        except trio.WouldBlock:
            await self._send.send(OrderBatch(events))

    def wake(self) -> None:
        self.ready = False
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

    @property
    def takes_nowait(self) -> bool:
        """Whether ``deliver_nowait`` would dispatch a market batch now (not hand it back whole)."""

    def deliver_nowait(self, batch: list[Any], *, orders: bool = False) -> list[Any] | None:
        """Dispatch ``batch`` (order events with ``orders``) in the caller's task if the slot can take it now;
        what is left goes to its queue."""


log = logging.getLogger("flox_trio.bus")

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)

#: Events delivered in the publishing task between two checkpoints: inline delivery
#: never waits, so without one a fast feed would keep every other task off the CPU.
_INLINE_CHECKPOINT = 1024


class Bus:
    """Routes market batches to the slots that watch their symbols and order events to their owner.

    A batch is split once by symbol and each slot gets its part, whatever the
    number of slots: the cost of routing grows with the events, not with the
    slots. A slot that is idle and synchronous takes its part in the
    publishing task (``deliver_nowait``); the others get it through their
    queue.
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._by_index: dict[int, Route] = {}
        self._by_symbol: dict[str, tuple[Route, ...]] = {}
        #: Symbols with one route that watches only that symbol, under ``block``: the per-event path.
        self._solo: dict[str, SlotQueue] = {}
        self._inline = 0
        self._outbox: list[tuple[int, Event]] = []
        self._outbox_ready = trio.Event()
        #: Order events that reached no strategy, per slot index (see ``RunnerStatus``).
        self.undelivered_orders: dict[int, int] = {}

    @property
    def routes(self) -> Sequence[Route]:
        return self._routes

    def add(self, route: Route) -> None:
        self._routes.append(route)
        self._by_index[route.index] = route
        for sym in route.watch:
            self._by_symbol[sym] = (*self._by_symbol.get(sym, ()), route)
            self._resolo(sym)

    def remove(self, route: Route) -> None:
        """No more market batches for ``route``; order events for it are still delivered while it lives."""
        if route in self._routes:
            self._routes.remove(route)
            for sym in route.watch:
                rest = tuple(r for r in self._by_symbol.get(sym, ()) if r is not route)
                if rest:
                    self._by_symbol[sym] = rest
                else:
                    self._by_symbol.pop(sym, None)
                self._resolo(sym)

    def _resolo(self, sym: str) -> None:
        routes = self._by_symbol.get(sym, ())
        # Under a drop policy a slot never takes events one by one (its inline dispatch is timed,
        # per batch): trying each of its events first would only be paid again by the grouping.
        if (len(routes) == 1 and len(routes[0].watch) == 1 and not routes[0].venues
                and routes[0].queue.overflow is Overflow.BLOCK):
            self._solo[sym] = routes[0].queue
        else:
            self._solo.pop(sym, None)

    def watched(self) -> frozenset[str]:
        return frozenset(self._by_symbol)

    async def route(self, batch: list[Any]) -> None:
        if not self._by_symbol or not batch:
            return
        solo = self._solo
        symbols: set[str] | None = None
        # A whole market's batch seldom starts and ends with one symbol: then the per-event path
        # needs no set of the batch's symbols, which costs 30 ns an event (a comprehension, not
        # set(map(attrgetter(...))), 55 ns). Else the set says whether there are several.
        if solo and (batch[0].symbol != batch[-1].symbol or len(symbols := {ev.symbol for ev in batch}) > 1):
            batch = self._serve_each(batch, solo)
            symbols = None
        if batch:
            await self._route_grouped(batch, {ev.symbol for ev in batch} if symbols is None else symbols)
        if self._inline >= _INLINE_CHECKPOINT:
            self._inline = 0
            await trio.lowlevel.checkpoint()

    def _serve_each(self, batch: list[Any], solo: dict[str, SlotQueue]) -> list[Any]:
        """A batch of several symbols (a whole market), each event straight into the slot that can take
        it now, a trade into its on_trade; what is left, in order, for the grouped way.

        Cheaper than grouping from two symbols a batch up, whatever their share of it (bench/scale.py).
        """
        spill = []
        for ev in batch:
            q = solo.get(ev.symbol)
            if q is None or not q.ready:
                spill.append(ev)
            elif ev.__class__ is Trade and (target := q.trades) is not None:
                ctx, on_trade, slot = target
                ctx.last_price = ev.price
                try:
                    on_trade(ctx, ev)
                except Exception as exc:
                    slot.record_error(exc, ev)
                q.inlined += 1
            elif q.on_event(ev):
                spill.append(ev)
        self._inline += len(batch) - len(spill)
        return spill

    def sole_route(self, batch: list[Any]) -> tuple[bool, Route | None, set[str]]:
        """For ``Runner.publish_nowait``: whether ``batch`` can be routed in one call without waiting,
        the slot it goes to (None: nobody watches it), and the batch's symbols.

        Yes when every slot that watches one of its symbols is one and the same slot,
        pinned to no venue, running, idle and synchronous, with room in its queue for a
        wake-up and what a request in the middle of the batch leaves of it: then
        ``deliver_sole`` never has to wait, and the slot sees what ``route`` would give it.
        """
        by_symbol = self._by_symbol
        symbols = {ev.symbol for ev in batch}
        found: Route | None = None
        for sym in symbols:
            routes = by_symbol.get(sym)
            if routes is None:
                continue
            if len(routes) != 1 or (found is not None and routes[0] is not found):
                return False, None, symbols
            found = routes[0]
        if found is None:
            return True, None, symbols
        ok = not found.venues and found.active and found.takes_nowait and found.queue.capacity >= 2
        return ok, found if ok else None, symbols

    def deliver_sole(self, route: Route, batch: list[Any], symbols: set[str]) -> None:
        """Deliver ``batch`` (of ``symbols``) to the one slot ``sole_route`` found for it, in this call."""
        watch = route.watch
        part = batch if symbols <= watch else [ev for ev in batch if ev.symbol in watch]
        rest = route.deliver_nowait(part)
        self._inline += len(part) - (len(rest) if rest else 0)
        if not rest:
            return
        try:
            full = route.queue.put_market_nowait(rest)
        except _GONE:
            return  # the slot was removed, as _deliver finds it
        if full is not None:
            # sole_route saw an empty queue with room for a wake-up and this: nothing else fills it.
            raise RuntimeError(f"slot {route.index}: its queue filled during an inline delivery")

    async def _route_grouped(self, batch: list[Any], symbols: set[str]) -> None:
        by_symbol = self._by_symbol
        if len(symbols) == 1:
            for route in by_symbol.get(batch[0].symbol, ()):
                await self._deliver(route, self._part(route, batch, batch, symbols))
        else:
            groups: dict[str, list[Any]] = {sym: [] for sym in symbols}
            for ev in batch:
                groups[ev.symbol].append(ev)
            served: set[int] = set()
            for sym, group in groups.items():
                for route in by_symbol.get(sym, ()):
                    if len(route.watch) > 1:
                        # Its symbols interleave in the batch: one part, in batch order.
                        if route.index in served:
                            continue
                        served.add(route.index)
                    await self._deliver(route, self._part(route, group, batch, symbols))

    @staticmethod
    def _part(route: Route, group: list[Any], batch: list[Any], symbols: set[str]) -> list[Any]:
        """What of ``batch`` goes to ``route``; ``group`` is the part of its symbol when it watches one."""
        watch = route.watch
        if route.venues:
            venues = route.venues
            return [e for e in batch if e.symbol in watch and venues.get(e.symbol, e.venue) in (e.venue, "")]
        if len(watch) == 1:
            return group
        if symbols <= watch:
            return batch
        return [e for e in batch if e.symbol in watch]

    async def _deliver(self, route: Route, part: list[Any]) -> None:
        if not part or not route.active:
            return
        rest = route.deliver_nowait(part)
        if rest is part:
            try:
                await route.queue.put_market(part)
            except _GONE:
                pass  # the slot was removed while we waited for room
            return
        self._inline += len(part)
        if rest:
            try:
                await route.queue.put_market(rest)
            except _GONE:
                pass

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
                    # An idle slot takes them here, as it takes market batches: a strategy that
                    # trades every batch would otherwise switch tasks twice a batch (bench/replay.py).
                    rest = route.deliver_nowait(events, orders=True)
                    if not rest:
                        continue
                    try:
                        await route.queue.put_orders(rest)
                        continue
                    except _GONE:
                        pass
                    events = rest
                self._undelivered(index, len(events))

    def _undelivered(self, index: int, n: int) -> None:
        if index not in self.undelivered_orders:
            log.warning("order events for slot %d reach no strategy (no such slot, or it is not running); "
                        "they are counted in status", index)
        self.undelivered_orders[index] = self.undelivered_orders.get(index, 0) + n
