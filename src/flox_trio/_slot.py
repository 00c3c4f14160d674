"""Strategy slots: one dispatch task per slot, and the swap that happens inside it.

The slot's task is the only code that ever calls into the slot's strategy.
Swaps and removals are requests the task serves at an event boundary, so an
event is always delivered whole to exactly one strategy, and a dispatch that
is awaiting (an ``async def on_trade``) finishes before the swap starts.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._core._events import Event
from ._core._money import to_decimal
from ._errors import OrderError, SwapError
from ._host import StrategyHost
from ._strategy import Context
from .execution import Order

if TYPE_CHECKING:
    from ._runner import Runner

log = logging.getLogger("flox_trio.slot")

OVERFLOW_POLICIES = ("block", "drop_newest", "drop_oldest")


@attrs.frozen(slots=True)
class SwapReport:
    """What a completed swap did.

    ``at_event`` is the slot's dispatched count at the swap point (all events);
    ``at_market_event`` counts market events only: it is what a tape records,
    because it does not depend on when order events happened to arrive.
    """

    slot: int
    at_event: int
    at_market_event: int
    global_seq: int
    old_hash: str
    new_hash: str
    old_language: str
    new_language: str
    pause_s: float
    stop_error: str | None = None


#: Sent to an idle slot to make it look at its requests; not an event batch.
_WAKE: list[Any] = []


class _OrderBatch(list[Event]):
    """A batch of order events: never dropped by an overflow policy."""

    __slots__ = ()


@attrs.define(eq=False)
class _Request:
    kind: str  # "swap" | "remove"
    host: StrategyHost | None = None
    warmup: Any = None
    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    report: SwapReport | None = None


class SwapHandle:
    """Returned by ``replace_strategy``: the swap is already requested; await it for the outcome.

    Awaiting returns a ``SwapReport`` or raises ``SwapError`` (the old
    strategy is back in place). Not awaiting is fine: the swap still happens
    at the slot's next event boundary and failures are logged.
    """

    __slots__ = ("_req",)

    def __init__(self, req: _Request) -> None:
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


class Slot:
    """A place in the runner that holds one strategy at a time.

    Read-only for users: ``index, strategy, language, dispatched, state,
    errors, last_error, swaps, last_swap, dropped, queue_depth, symbols``.
    States: "starting", "running", "swapping", "quarantined", "removed", "closed".
    """

    def __init__(
        self,
        runner: Runner,
        index: int,
        host: StrategyHost,
        *,
        max_errors: int,
        capacity: int,
        overflow: str,
    ) -> None:
        self.runner = runner
        self.index = index
        self._host = host
        self.symbols = host.symbols
        self.watch = frozenset(r.symbol for r in host.symbols)
        self.venues: dict[str, str] = {r.symbol: r.venue for r in host.symbols if r.venue}
        self.ctxs: dict[str, Context] = {r.symbol: Context(self, r.symbol, r.venue) for r in host.symbols}
        self.max_errors = max_errors
        self.overflow = overflow
        self._send, self._recv = trio.open_memory_channel[list[Any]](capacity)
        self.state = "starting"
        self.dispatched = 0
        self.errors = 0
        self._tenure_errors = 0
        self.last_error: str | None = None
        self.quarantine_reason: str | None = None
        self.dropped = 0
        self.swaps = 0
        self.last_swap: SwapReport | None = None
        self.order_seq = 1
        self.interrupted = False
        self._requests: deque[_Request] = deque()
        self._scheduled: deque[tuple[int, _Request]] = deque()
        self._serving = False
        self.market_dispatched = 0
        #: Smoothed receive-to-dispatch latency of market events, in ns (None before any).
        self.latency_ns: int | None = None
        # True while the task waits for a batch: a request then sends _WAKE down
        # the (empty, so never full) channel instead of cancelling the wait.
        self._waiting = False
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self._enqueued = 0
        self._consumed = 0

    # --- read-only face ---------------------------------------------------------

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
        return self.state == "quarantined"

    @property
    def active(self) -> bool:
        return self.state not in ("removed", "closed")

    @property
    def queue_depth(self) -> int:
        return self._enqueued - self._consumed

    @property
    def errors_left(self) -> int | None:
        """Errors the current strategy may still raise before quarantine (None: no limit)."""
        return max(0, self.max_errors - self._tenure_errors) if self.max_errors else None

    @property
    def idle(self) -> bool:
        return (self._consumed >= self._enqueued and not self._requests and not self._serving
                and not (self._scheduled and self._scheduled[0][0] <= self.market_dispatched))

    def __repr__(self) -> str:
        return (f"<Slot {self.index} {self.language} {type(self.strategy).__name__} "
                f"state={self.state} dispatched={self.dispatched}>")

    # --- intents (called by ctx and the JS host) -------------------------------------

    def submit_order(
        self, symbol: str, side: str, order_type: str, qty: Any, price: Any, order_id: str | None = None
    ) -> str:
        if symbol not in self.ctxs:
            raise OrderError(f"slot {self.index} does not watch {symbol!r}; it can only trade {sorted(self.ctxs)}")
        q = to_decimal(qty, "qty")
        if q <= 0:
            raise OrderError(f"order qty must be > 0, got {qty!r}")
        p = None
        if order_type == "limit":
            p = to_decimal(price, "price")
            if p <= 0:
                raise OrderError(f"limit price must be > 0, got {price!r}")
        if order_id is None:
            order_id = f"{self.index}-{self.order_seq}"
            self.order_seq += 1
        else:
            prefix, _, n = order_id.partition("-")
            if prefix != str(self.index) or not n.isdigit() or int(n) < self.order_seq:
                raise OrderError(f"order id {order_id!r} was not minted by slot {self.index}")
            self.order_seq = int(n) + 1
        order = Order(order_id, self.index, symbol, side, order_type, q, p, venue=self.ctxs[symbol].venue)
        self.runner.submit(order)
        return order_id

    def cancel_order(self, order_id: str) -> None:
        self.runner.executor.cancel(self.index, str(order_id))

    # --- errors ------------------------------------------------------------------------

    def record_error(self, exc: BaseException, event: Event | None = None, where: str = "") -> None:
        self.errors += 1
        self._tenure_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        what = where or (f"on {type(event).__name__.lower()} {event!r}" if event is not None else "")
        log.error("slot %d (%s) raised %s: %s", self.index, self._host.describe(), what, self.last_error,
                  exc_info=exc if self._tenure_errors <= 3 else None)
        self.runner._on_strategy_error(self, exc, what)
        if self.max_errors and self._tenure_errors >= self.max_errors and self.state == "running":
            self.quarantine(f"{self._tenure_errors} errors; last: {self.last_error}")

    def quarantine(self, reason: str) -> None:
        """Stop delivering events to this slot until a new strategy is swapped in."""
        if self.state in ("removed", "closed", "quarantined"):
            return
        self.state = "quarantined"
        self.quarantine_reason = reason
        self.interrupted = True
        log.warning("slot %d quarantined: %s", self.index, reason)
        self.runner._on_quarantine(self, reason)

    # --- requests ----------------------------------------------------------------------

    def request(self, req: _Request) -> None:
        self._requests.append(req)
        self.interrupted = True
        self._wake()

    def _wake(self) -> None:
        if self._waiting:
            self._waiting = False
            try:
                self._send.send_nowait(_WAKE)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # not actually idle, or gone: the loop sees the request anyway

    # --- the bus side --------------------------------------------------------------------

    async def enqueue(self, batch: list[Any]) -> None:
        """Queue a market batch under the slot's overflow policy."""
        n = len(batch)
        self._enqueued += n
        try:
            # No checkpoint when there is room: `send` would yield to the
            # scheduler twice per batch, which is most of the cost of a small
            # batch. The feed yields when it waits for data or for room.
            self._send.send_nowait(batch)
            return
        except trio.WouldBlock:
            if self.overflow == "block":
                await self._send.send(batch)
                return
        if self.overflow == "drop_oldest":
            try:
                oldest = self._recv.receive_nowait()
            except trio.WouldBlock:
                oldest = None
            if isinstance(oldest, _OrderBatch):
                # Order events are never dropped: requeue it and drop this batch instead.
                self._send.send_nowait(oldest)
            elif oldest is not None:
                self.dropped += len(oldest)
                self._consumed += len(oldest)
                self._send.send_nowait(batch)
                return
        self.dropped += n
        self._consumed += n
        self.runner._progress()

    async def enqueue_orders(self, events: list[Event]) -> None:
        """Queue order updates and fills: lossless whatever the policy."""
        self._enqueued += len(events)
        try:
            self._send.send_nowait(_OrderBatch(events))
        except trio.WouldBlock:
            await self._send.send(_OrderBatch(events))

    # --- the dispatch task -------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                await self._start_first()
                await self._loop()
        finally:
            self.finished.set()
            self.runner._progress()

    async def _start_first(self) -> None:
        self._host.attach(self)
        try:
            await self._host.start()
        except Exception as exc:
            self.state = "running"  # so quarantine() applies
            self.record_error(exc, where="in on_start")
            self.quarantine(f"on_start raised {type(exc).__name__}: {exc}")
        else:
            if self.state == "starting":
                self.state = "running"
        self.interrupted = bool(self._requests) or self.state != "running"

    async def _loop(self) -> None:
        recv = self._recv
        while True:
            if self._requests:
                await self._serve_requests()
                if not self.active:
                    return
                continue
            try:
                batch = recv.receive_nowait()
            except trio.WouldBlock:
                self._waiting = True
                try:
                    batch = await recv.receive()
                except trio.EndOfChannel:
                    return
                finally:
                    self._waiting = False
                if batch is _WAKE:
                    continue
            except trio.EndOfChannel:
                return
            if batch is _WAKE:
                continue
            n = len(batch)
            i = 0
            is_market = type(batch) is not _OrderBatch
            while i < n:
                if self.state != "running":
                    break
                end = n
                if is_market and self._scheduled:
                    # A swap pinned to a market-event count (tape replay) lands exactly there.
                    end = min(n, i + max(0, self._scheduled[0][0] - self.market_dispatched))
                if end > i:
                    j = await self._host.dispatch(batch if end == n else batch[:end], i)
                    self.dispatched += j - i
                    if is_market:
                        self.market_dispatched += j - i
                    i = j
                self._take_due_schedule()
                if self.interrupted and self._requests:
                    await self._serve_requests()
                    if not self.active:
                        self._consumed += n
                        return
                elif i < n and self.state == "running":  # spurious stop: carry on
                    self.interrupted = False
            self._consumed += n
            if is_market and n:
                received = getattr(batch[-1], "recv_ts_ns", 0)
                if received:
                    # Receive (stamped by the connector) to delivered, for the last event of the
                    # batch: a cheap, honest view of the live path for status and metrics.
                    lat = time.time_ns() - received
                    self.latency_ns = lat if self.latency_ns is None else (self.latency_ns * 7 + lat) // 8
            self.runner._progress()

    def schedule(self, at_market_event: int, req: _Request) -> None:
        """Perform ``req`` once exactly ``at_market_event`` market events were dispatched."""
        self._scheduled.append((at_market_event, req))
        self._scheduled = deque(sorted(self._scheduled, key=lambda x: x[0]))
        if self._take_due_schedule():
            self._wake()

    def _take_due_schedule(self) -> bool:
        due = False
        while self._scheduled and self._scheduled[0][0] <= self.market_dispatched:
            self._requests.append(self._scheduled.popleft()[1])
            self.interrupted = due = True
        return due

    async def _serve_requests(self) -> None:
        self._serving = True
        try:
            await self._serve_all()
        finally:
            self._serving = False

    async def _serve_all(self) -> None:
        while self._requests:
            req = self._requests.popleft()
            try:
                if req.kind == "swap":
                    await self._swap(req)
                else:
                    await self._remove(req)
            finally:
                req.done.set()
            if not self.active:
                for rest in self._requests:
                    rest.error = SwapError(f"slot {self.index} was removed before this request ran")
                    rest.done.set()
                self._requests.clear()
                break
        self.interrupted = bool(self._requests) or self.state != "running"
        self.runner._progress()

    async def _swap(self, req: _Request) -> None:
        old, new = self._host, req.host
        assert new is not None
        t0 = trio.current_time()
        prev_state = self.state
        self.state = "swapping"
        stop_error: str | None = None
        try:
            await old.stop()
        except Exception as exc:
            stop_error = f"{type(exc).__name__}: {exc}"
            self.record_error(exc, where="in on_stop during a swap")
        new.attach(self)
        self._host = new
        try:
            await new.start()
            if req.warmup:
                await self._warm_up(new, req.warmup)
        except Exception as exc:
            self._host = old
            old.attach(self)
            try:
                await old.start()
            except Exception as exc2:
                self.record_error(exc2, where="in on_start while restoring after a failed swap")
                self.state = "running"
                self.quarantine(f"restored strategy's on_start raised {exc2!r}")
            else:
                self.state = prev_state if prev_state != "swapping" else "running"
            err = SwapError(
                f"slot {self.index}: the new strategy's on_start raised {type(exc).__name__}: {exc}; "
                f"the old strategy was put back and keeps receiving events"
            )
            err.__cause__ = exc
            req.error = err
            log.error("%s", err)
            return
        self.state = "running"
        self.quarantine_reason = None
        self._tenure_errors = 0
        self.swaps += 1
        report = SwapReport(
            self.index, self.dispatched, self.market_dispatched, self.runner._seq, old.source_hash, new.source_hash,
            old.language, new.language, trio.current_time() - t0, stop_error,
        )
        self.last_swap = report
        req.report = report
        self.runner._on_swap(self, report, old, new)

    async def _warm_up(self, host: StrategyHost, warmup: int | float) -> None:
        """Run the slot's recent events through ``host`` with its order intents suppressed.

        The host is attached to a dry slot for the replay: its ctx tracks
        prices and reads the real position, but intents only return ids.
        """
        events = self.runner._recent_events(self, warmup)
        dry = _DrySlot(self)
        host.attach(dry)  # type: ignore[arg-type]
        try:
            i = 0
            while i < len(events):
                i = await host.dispatch(events, i)
                dry.interrupted = False
        finally:
            host.attach(self)
        log.info("slot %d: warmed up the new strategy on %d recent events (%d errors)",
                 self.index, len(events), dry.errors)

    async def _remove(self, req: _Request) -> None:
        try:
            await self._host.stop()
        except Exception as exc:
            self.record_error(exc, where="in on_stop during removal")
        self.state = "removed"
        self._recv.close()

    async def close(self) -> None:
        """The runner is closing: give the strategy its on_stop (the dispatch task is already gone)."""
        for req in [*self._requests, *(r for _, r in self._scheduled)]:
            req.error = SwapError(f"slot {self.index}: the runner closed before this request ran")
            req.done.set()
        self._requests.clear()
        self._scheduled.clear()
        if not self.active:
            return
        try:
            await self._host.stop()
        except Exception as exc:
            self.record_error(exc, where="in on_stop at shutdown")
        self.state = "closed"


class _DrySlot:
    """Stands in for a slot during warm-up: same symbols and runner, no real orders."""

    def __init__(self, slot: Slot) -> None:
        self.index = slot.index
        self.runner = slot.runner
        self.symbols = slot.symbols
        self.ctxs = {sym: Context(self, sym, c.venue) for sym, c in slot.ctxs.items()}  # type: ignore[arg-type]
        self.interrupted = False
        self.errors = 0
        self.order_seq = 1
        self.state = "warmup"

    def submit_order(self, symbol: str, side: str, order_type: str, qty: Any, price: Any,
                     order_id: str | None = None) -> str:
        oid = order_id or f"warmup-{self.order_seq}"
        self.order_seq += 1
        return oid

    def cancel_order(self, order_id: str) -> None:
        pass

    def record_error(self, exc: BaseException, event: Event | None = None, where: str = "") -> None:
        self.errors += 1
        log.warning("slot %d: the new strategy raised during warm-up on %r: %s", self.index, event, exc)

    def quarantine(self, reason: str) -> None:
        raise SwapError(f"slot {self.index}: the new strategy failed its warm-up: {reason}")
