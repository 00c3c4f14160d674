"""Strategy slots: one dispatch task per slot, and the swap that happens inside it.

The slot's task is the only code that ever calls into the slot's strategy.
Swaps and removals are requests the task serves at an event boundary, so an
event is always delivered whole to exactly one strategy, and a dispatch that
is awaiting (an ``async def on_trade``) finishes before the swap starts.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import trio

from .._errors import JSError, OrderError, SwapError, describe_exception
from ._bus import WAKE, OrderBatch, SlotQueue, not_now
from ._clock import real_ns
from ._events import ORDER_TYPES, SIDES, Event, Gap, OrderType, Side
from ._host import StrategyHost
from ._money import order_amount
from ._orders import Order
from ._ports import EngineHooks, Portfolio, StrategyRequests
from ._states import ACTIVE, Overflow, RequestKind, SlotState, transition
from ._status import SwapReport, change_label
from ._strategy import Context
from ._swap import Request, warm_up

log = logging.getLogger("flox_trio.slot")

# Reading an enum member off its class goes through EnumType's lookup (~0.2 us):
# the dispatch loop compares against these module globals instead.
_RUNNING = SlotState.RUNNING

#: An inline dispatch longer than this sends the slot's next batches through its queue.
_INLINE_BUDGET_NS = 1_000_000
_INLINE_COOLDOWN = 64


class Slot:
    """A place in the runner that holds one strategy at a time.

    Read-only for users: ``index, strategy, language, dispatched, state,
    errors, last_error, swaps, last_swap, dropped, queue_depth, symbols``.
    """

    def __init__(
        self,
        engine: EngineHooks,
        index: int,
        host: StrategyHost,
        *,
        max_errors: int,
        capacity: int,
        overflow: Overflow,
        measure_latency: bool,
    ) -> None:
        self._engine = engine
        self.index = index
        self._host = host
        self.symbols = host.symbols
        self.watch = frozenset(r.symbol for r in host.symbols)
        self.venues: dict[str, str] = {r.symbol: r.venue for r in host.symbols if r.venue}
        self.portfolio: Portfolio = engine.portfolio
        self.ctxs: dict[str, Context] = {r.symbol: Context(self, r.symbol, r.venue) for r in host.symbols}
        self.max_errors = max_errors
        self.queue = SlotQueue(capacity, overflow, engine.progress)
        self.state = SlotState.STARTING
        self._market = 0
        self.order_dispatched = 0
        self.errors = 0
        self._tenure_errors = 0
        self.last_error: str | None = None
        #: Events the venue said were missed (trade-id gaps), per symbol.
        self.missed: dict[str, int] = {}
        self.quarantine_reason: str | None = None
        self.swaps = 0
        self.last_swap: SwapReport | None = None
        self.order_seq = 1
        self.interrupted = False
        self._requests: deque[Request] = deque()
        self._scheduled: deque[tuple[int, Request]] = deque()
        self._serving = False
        #: Batches to send through the queue after an inline dispatch took too long.
        self._inline_cooldown = 0
        self._measure_latency = measure_latency
        #: Smoothed receive-to-dispatch latency of market events, in ns (None before any).
        self.latency_ns: int | None = None
        self.scope = trio.CancelScope()
        self.finished = trio.Event()

    # --- read-only face ---------------------------------------------------------

    @property
    def market_dispatched(self) -> int:
        """Market events delivered to the slot's strategies (per-event inline deliveries included)."""
        return self._market + self.queue.inlined

    @property
    def dispatched(self) -> int:
        """Events delivered to the slot's strategies: market events and order events."""
        return self.market_dispatched + self.order_dispatched

    @property
    def strategy(self) -> Any:
        return self._host.strategy

    @property
    def host(self) -> StrategyHost:
        return self._host

    @property
    def language(self) -> str:
        return self._host.language

    @property
    def source_hash(self) -> str:
        return self._host.source_hash

    @property
    def quarantined(self) -> bool:
        return self.state is SlotState.QUARANTINED

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def requests(self) -> StrategyRequests:
        return self._engine.requests_for(self._host.origin)

    @property
    def wants_bars(self) -> bool:
        return self._host.wants_bars

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    @property
    def queue_depth(self) -> int:
        return self.queue.depth

    @property
    def errors_left(self) -> int | None:
        """Errors the current strategy may still raise before quarantine (None: no limit)."""
        return max(0, self.max_errors - self._tenure_errors) if self.max_errors else None

    @property
    def idle(self) -> bool:
        q = self.queue
        return (q.consumed >= q.enqueued and not self._requests and not self._serving
                and not (self._scheduled and self._scheduled[0][0] <= self.market_dispatched))

    def _become(self, state: SlotState) -> None:
        self.state = transition(self.state, state, self.index)
        self.queue.ready = False

    def __repr__(self) -> str:
        return (f"<Slot {self.index} {self.language} {self._host.name} "
                f"state={self.state} dispatched={self.dispatched}>")

    # --- intents (from ctx and the JS host): checked once here for every host -----------

    def submit_order(self, symbol: str, side: Side, order_type: OrderType, qty: Any, price: Any,
                     order_id: str | None = None) -> str:
        ctx = self.ctxs.get(symbol) if isinstance(symbol, str) else None
        if ctx is None:
            raise OrderError(f"slot {self.index} does not watch {symbol!r}; it can only trade {sorted(self.ctxs)}")
        if side not in SIDES:
            raise OrderError(f"order side must be 'buy' or 'sell', got {side!r}")
        if order_type not in ORDER_TYPES:
            raise OrderError(f"order type must be 'market' or 'limit', got {order_type!r}")
        q = order_amount(qty, "qty")
        p = order_amount(price, "price") if order_type == "limit" else None
        if order_id is None:
            order_id = f"{self.index}-{self.order_seq}"
            self.order_seq += 1
        else:
            prefix, _, n = order_id.partition("-")
            if prefix != str(self.index) or not n.isdigit() or int(n) < self.order_seq:
                raise OrderError(f"order id {order_id!r} was not minted by slot {self.index}")
            self.order_seq = int(n) + 1
        self._engine.submit(Order(order_id, self.index, symbol, side, order_type, q, p, venue=ctx.venue))
        return order_id

    def cancel_order(self, order_id: str) -> None:
        self._engine.cancel(self.index, str(order_id))

    def amend_order(self, order_id: str, price: Any = None, qty: Any = None) -> None:
        p = order_amount(price, "price") if price is not None else None
        q = order_amount(qty, "qty") if qty is not None else None
        if p is None and q is None:
            raise OrderError(f"an amend of order {order_id!r} needs a new price, a new qty or both")
        self._engine.amend(self.index, str(order_id), p, q)

    # --- errors ------------------------------------------------------------------------

    def record_error(self, exc: BaseException, event: Event | None = None, where: str = "") -> None:
        self.errors += 1
        self._tenure_errors += 1
        self.last_error = describe_exception(exc)
        what = where or (f"on {type(event).__name__.lower()} {event!r}" if event is not None else "")
        # A Python strategy's traceback points into its own code; a script's error carries its JS stack.
        trace = exc if self._tenure_errors <= 3 and not isinstance(exc, JSError) else None
        log.error("slot %d (%s) raised %s: %s", self.index, self._host.describe(), what, self.last_error,
                  exc_info=trace)
        self._engine.strategy_error(self.index, f"{what}: {self.last_error}" if what else self.last_error)
        if self.max_errors and self._tenure_errors >= self.max_errors and self.state is SlotState.RUNNING:
            self.quarantine(f"{self._tenure_errors} errors; last: {self.last_error}")

    def quarantine(self, reason: str) -> None:
        """Stop delivering events to this slot until a new strategy is swapped in."""
        if self.state not in (SlotState.STARTING, SlotState.RUNNING, SlotState.SWAPPING):
            return
        self._become(SlotState.QUARANTINED)
        self.quarantine_reason = reason
        self.interrupted = True
        log.warning("slot %d quarantined: %s", self.index, reason)
        self._engine.quarantined(self.index, reason)
        self._engine.progress()

    def note_gap(self, gap: Gap) -> None:
        if gap.reason != "dropped":  # drops are counted by the queue already
            self.missed[gap.symbol] = self.missed.get(gap.symbol, 0) + max(gap.missing, 0)

    # --- requests ----------------------------------------------------------------------

    def request(self, req: Request) -> None:
        self._requests.append(req)
        self.interrupted = True
        self.queue.ready = False
        self.queue.wake()

    def schedule(self, at_market_event: int, req: Request) -> None:
        """Perform ``req`` once exactly ``at_market_event`` market events were dispatched."""
        self._scheduled.append((at_market_event, req))
        self.queue.ready = False
        self._scheduled = deque(sorted(self._scheduled, key=lambda x: x[0]))
        if self._take_due_schedule():
            self.queue.wake()

    def _take_due_schedule(self) -> bool:
        due = False
        while self._scheduled and self._scheduled[0][0] <= self.market_dispatched:
            self._requests.append(self._scheduled.popleft()[1])
            self.interrupted = due = True
        return due

    # --- inline delivery ---------------------------------------------------------------

    @property
    def takes_nowait(self) -> bool:
        return self.queue.ready and self._host.dispatch_nowait is not None

    def deliver_nowait(self, batch: list[Any], *, orders: bool = False) -> list[Any] | None:
        """Dispatch a market batch (or, with ``orders``, order events) in the caller's task when the slot is idle.

        Only a running slot whose host has a synchronous dispatch, whose queue is
        empty and whose task is parked waiting for a batch takes this path: what
        the strategy sees, and when requests land, is then exactly what the queue
        would give, without its task switch. Returns ``batch`` itself when the slot
        cannot take it now, the rest when a request stopped the dispatch (it lands
        before the rest, through the queue), or None.
        """
        q = self.queue
        dispatch = self._host.dispatch_nowait
        if not q.ready or dispatch is None:
            return batch
        n = len(batch)
        timed = q.overflow is not Overflow.BLOCK
        t0 = real_ns() if timed else 0
        j = dispatch(batch, 0)
        while j < n and self.state is _RUNNING and not self._requests:
            self.interrupted = False  # spurious stop: carry on, as the dispatch task does
            j = dispatch(batch, j)
        if timed and real_ns() - t0 > _INLINE_BUDGET_NS:
            # Too slow to run in the publisher: the others would wait for it, whatever its
            # overflow policy says. Its queue (and the policy) takes the next batches.
            self._inline_cooldown = _INLINE_COOLDOWN
            q.ready = False
        if orders:
            self.order_dispatched += j
        else:
            self._market += j
        # What was not dispatched and is not handed back was for a slot that stopped
        # running (quarantined): discarded, as the dispatch task would.
        rest = batch[j:] if j < n and self.state is _RUNNING else None
        if self._measure_latency and j and not orders:
            received = getattr(batch[j - 1], "recv_ts_ns", 0)
            if received:
                lat = self._engine.clock.wall_ns() - received
                self.latency_ns = lat if self.latency_ns is None else (self.latency_ns * 7 + lat) // 8
        self._engine.progress()
        return rest

    def _attach(self, host: StrategyHost) -> None:
        self._host = host
        host.attach(self)
        per_event = host.event_nowait(self, self.queue) if self.queue.overflow is Overflow.BLOCK else None
        # Only under ``block``: a dispatch in the per-event path is not timed (see deliver_nowait).
        self.queue.on_event = per_event or not_now
        self.queue.trades = host.trade_nowait(self) if per_event is not None else None

    def _may_inline(self) -> bool:
        """Called as the task parks on an empty queue: may the bus deliver in its own task until then?"""
        return (self.state is _RUNNING and not self._requests and not self._scheduled and not self._serving
                and not self.interrupted and not self._inline_cooldown and not self.queue.unreported
                and self._host.dispatch_nowait is not None)

    # --- the dispatch task -------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                await self._start_first()
                await self._loop()
        finally:
            self.finished.set()
            self._engine.progress()

    async def _start_first(self) -> None:
        self._attach(self._host)
        try:
            await self._host.start()
        except Exception as exc:
            self.record_error(exc, where="in on_start")
            self.quarantine(f"on_start raised {describe_exception(exc)}")
        else:
            if self.state is SlotState.STARTING:
                self._become(SlotState.RUNNING)
        self.interrupted = bool(self._requests) or self.state is not SlotState.RUNNING

    async def _loop(self) -> None:
        queue = self.queue
        recv = queue.recv
        engine = self._engine
        while True:
            if self._requests:
                await self._serve_requests()
                if not self.active:
                    return
                continue
            try:
                batch = recv.receive_nowait()
            except trio.WouldBlock:
                queue.waiting = True
                queue.ready = self._may_inline()
                try:
                    batch = await recv.receive()
                except trio.EndOfChannel:
                    return
                finally:
                    queue.waiting = queue.ready = False
            except trio.EndOfChannel:
                return
            if batch is WAKE:
                continue
            if self._inline_cooldown:
                self._inline_cooldown -= 1
            n = len(batch)
            i = 0
            is_market = type(batch) is not OrderBatch
            while i < n:
                if self.state is not _RUNNING:
                    break
                end = n
                if is_market and self._scheduled:
                    # A swap pinned to a market-event count (tape replay) lands exactly there.
                    end = min(n, i + max(0, self._scheduled[0][0] - self.market_dispatched))
                if end > i:
                    j = await self._host.dispatch(batch if end == n else batch[:end], i)
                    if is_market:
                        self._market += j - i
                    else:
                        self.order_dispatched += j - i
                    i = j
                self._take_due_schedule()
                if self.interrupted and self._requests:
                    await self._serve_requests()
                    if not self.active:
                        queue.consumed += n
                        return
                elif i < n and self.state is _RUNNING:  # spurious stop: carry on
                    self.interrupted = False
            queue.consumed += n
            if is_market and n and self._measure_latency:
                received = getattr(batch[-1], "recv_ts_ns", 0)  # a bar has no receive time
                if received:
                    # Receive (stamped by the connector on the engine's clock) to delivered, for the
                    # last event of the batch: a cheap, honest view of the live path.
                    lat = engine.clock.wall_ns() - received
                    self.latency_ns = lat if self.latency_ns is None else (self.latency_ns * 7 + lat) // 8
            engine.progress()

    async def _serve_requests(self) -> None:
        self._serving = True
        try:
            while self._requests:
                req = self._requests.popleft()
                try:
                    if req.kind is RequestKind.SWAP:
                        await self._swap(req)
                    else:
                        await self._remove()
                finally:
                    req.done.set()
                if not self.active:
                    for rest in self._requests:
                        rest.fail(SwapError(f"slot {self.index} was removed before this request ran"))
                    self._requests.clear()
                    break
            self.interrupted = bool(self._requests) or self.state is not SlotState.RUNNING
        finally:
            self._serving = False
        self._engine.progress()

    async def _swap(self, req: Request) -> None:
        old, new = self._host, req.host
        assert new is not None
        t0 = trio.current_time()
        prev_state = self.state
        self._become(SlotState.SWAPPING)
        stop_error: str | None = None
        try:
            await old.stop()
        except Exception as exc:
            stop_error = describe_exception(exc)
            self.record_error(exc, where="in on_stop during a swap")
        self._attach(new)
        try:
            await new.start()
            if req.warmup:
                await warm_up(new, self, self._engine.recent_events(self.watch, req.warmup))
        except Exception as exc:
            await self._restore(old, prev_state)
            err = SwapError(
                f"slot {self.index}: the new strategy's on_start raised {describe_exception(exc)}; "
                f"the old strategy was put back and keeps receiving events"
            )
            err.__cause__ = exc
            req.error = err
            log.error("%s", err)
            return
        self._become(SlotState.RUNNING)
        self.quarantine_reason = None
        self._tenure_errors = 0
        self.swaps += 1
        engine = self._engine
        report = SwapReport(
            self.index, self.dispatched, self.market_dispatched, engine.published, engine.market_events,
            old.source_hash, new.source_hash, old.language, new.language, trio.current_time() - t0, stop_error,
            change_label(old.info.name, old.info.params, new.info.name, new.info.params, old.source_hash,
                         new.source_hash),
        )
        self.last_swap = report
        req.report = report
        engine.swapped(self.index, report, old.info, new.info)

    async def _restore(self, old: StrategyHost, prev_state: SlotState) -> None:
        """Put the old strategy back after a failed swap; its on_start runs again."""
        self._attach(old)
        try:
            await old.start()
        except Exception as exc:
            self.record_error(exc, where="in on_start while restoring after a failed swap")
            self.quarantine(f"restored strategy's on_start raised {describe_exception(exc)}")
        else:
            self._become(prev_state)

    async def _remove(self) -> None:
        try:
            await self._host.stop()
        except Exception as exc:
            self.record_error(exc, where="in on_stop during removal")
        self._become(SlotState.REMOVED)
        self.queue.close()

    async def close(self) -> None:
        """The runner is closing: give the strategy its on_stop (the dispatch task is already gone)."""
        for req in [*self._requests, *(r for _, r in self._scheduled)]:
            req.fail(SwapError(f"slot {self.index}: the runner closed before this request ran"))
        self._requests.clear()
        self._scheduled.clear()
        if not self.active:
            return
        try:
            await self._host.stop()
        except Exception as exc:
            self.record_error(exc, where="in on_stop at shutdown")
        self._become(SlotState.CLOSED)
