"""The Runner: one nursery that owns the feed, the executor and a dispatch task per slot.

Data flows one way: feed → ``publish`` (tape, executor, bars) → routing by
symbol → per-slot bounded channels of batches → slot task → strategy → ctx
intents → executor → order events → the owning slot's channel.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from operator import attrgetter
from typing import Any

import trio

from ._core._clock import TrioClock
from ._core._events import Event
from ._core._market import BarAggregator
from ._errors import FloxError, RunnerError, SymbolMismatchError, UnknownSlotError
from ._host import StrategyHost, make_host
from ._slot import OVERFLOW_POLICIES, Slot, SwapHandle, SwapReport, _Request
from .execution import Executor, Order, PaperExecutor
from .feeds import Feed, ListFeed

log = logging.getLogger("flox_trio.runner")

_symbol_of = attrgetter("symbol")


class Runner:
    """The engine. Get one with ``async with flox.open_runner(feed) as runner``."""

    def __init__(
        self,
        feed: Feed,
        executor: Executor | None = None,
        *,
        tape: Any = None,
        max_errors: int = 10,
        overflow: str = "block",
        capacity: int = 64,
        bar_intervals: Sequence[float] = (60.0,),
        shutdown_timeout: float = 10.0,
        warmup_batches: int = 4096,
        lockstep: bool = False,
    ) -> None:
        if isinstance(feed, list | tuple):
            feed = ListFeed(feed)
        if not isinstance(feed, Feed):
            raise RunnerError(
                f"feed must be a flox_trio feed (a connector, feeds.ListFeed, feeds.TapeFeed), got {feed!r}"
            )
        _check_overflow(overflow)
        if capacity < 1:
            raise RunnerError(f"capacity must be >= 1 batch, got {capacity}")
        self.feed = feed
        self.executor: Executor = executor if executor is not None else PaperExecutor()
        self.max_errors = max_errors
        self.overflow = overflow
        self.capacity = capacity
        self.bar_intervals = tuple(bar_intervals)
        self.shutdown_timeout = shutdown_timeout
        self.lockstep = lockstep
        self._tape_arg = tape
        self.tape: Any = None
        self._slots: list[Slot] = []
        # The tape's tail in memory, for warm-ups: the last few thousand batches.
        self._recent: deque[list[Any]] = deque(maxlen=warmup_batches)
        self._routes: list[Slot] = []
        self._bars: BarAggregator | None = None
        self._seq = 0
        self._outbox: list[tuple[int, Event]] = []
        self._outbox_ready = trio.Event()
        self._lot = trio.lowlevel.ParkingLot()
        self._watch_changed = trio.Event()
        self._watched: frozenset[str] = frozenset()
        self._publishing = 0
        self._feed_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._feed_scope = trio.CancelScope()
        self._closing = False
        #: The engine's one clock: Trio time for scheduling, ``wall_ns()`` for timestamps.
        self.clock = TrioClock()
        self.connector_events: dict[str, int] = {}
        self.strategy_errors = 0

    # --- lifecycle ---------------------------------------------------------------

    async def _open(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.executor.bind(emit=self._emit, quote=self._quote, now_ns=self.now_ns)
        if self._tape_arg is not None:
            self.tape = self._open_tape(self._tape_arg)
        nursery.start_soon(self.executor.run)
        nursery.start_soon(self._outbox_task)
        # start_soon: the feed first runs when the body awaits, so strategies
        # added at the top of the body see the first event.
        nursery.start_soon(self._feed_task)

    def _open_tape(self, tape: Any) -> Any:
        if hasattr(tape, "write_events"):
            return tape
        from .tape import TapeWriter

        # What a replay needs to rebuild the run: the executor's settings.
        # zstd: about 11x smaller tapes for ~13% of write speed (bench/tape.py).
        meta = {"feed": type(self.feed).__name__, "executor": self.executor.status(),
                "bar_intervals": list(self.bar_intervals)}
        return TapeWriter(tape, compression="zstd", meta=meta)

    async def _feed_task(self) -> None:
        try:
            with self._feed_scope:
                await self.feed.run(self)
        finally:
            self._feed_done.set()
            self._progress()

    async def _drain(self) -> None:
        if self.feed.finite:
            await self._feed_done.wait()
        self._feed_scope.cancel()
        await self.wait_idle()
        if self._bars is not None:
            closing = self._bars.flush()
            if closing:
                await self._route(closing)
                await self.wait_idle()

    async def _close(self) -> None:
        self._closing = True
        self._feed_scope.cancel()
        live = [s for s in self._slots if s.active]
        for slot in live:
            slot.scope.cancel()
        for slot in live:
            await slot.finished.wait()
        for slot in live:
            await slot.close()
        if self.tape is not None and self.tape is not self._tape_arg:
            self.tape.close()
        elif self.tape is not None and hasattr(self.tape, "flush"):
            self.tape.flush()

    # --- clock -------------------------------------------------------------------

    def now_ns(self) -> int:
        """Wall-clock nanoseconds, derived from the Trio clock (virtual under a MockClock)."""
        return self.clock.wall_ns()

    # --- slots ---------------------------------------------------------------------

    @property
    def slots(self) -> list[Slot]:
        """Every slot ever added, indexed by slot index (removed ones stay, state "removed")."""
        return list(self._slots)

    def _slot(self, index: int) -> Slot:
        if not isinstance(index, int) or isinstance(index, bool):
            raise UnknownSlotError(f"slot index must be an int, got {index!r}")
        if not 0 <= index < len(self._slots):
            raise UnknownSlotError(
                f"there is no slot {index}: this runner has slots 0..{len(self._slots) - 1}"
                if self._slots else f"there is no slot {index}: add a strategy first with add_strategy()"
            )
        slot = self._slots[index]
        if not slot.active:
            raise UnknownSlotError(f"slot {index} was {slot.state}; add a new strategy with add_strategy()")
        return slot

    def _check_running(self) -> trio.Nursery:
        if self._nursery is None or self._closing:
            raise RunnerError("the runner is not running: use it inside 'async with flox.open_runner(...)'")
        return self._nursery

    def add_strategy(
        self,
        strategy: Any,
        *,
        max_errors: int | None = None,
        overflow: str | None = None,
        capacity: int | None = None,
    ) -> int:
        """Put a strategy in a new slot and return the slot index.

        Its ``on_start`` runs before its first event. The feed subscribes to
        any symbol the strategy watches that it did not serve yet.
        """
        nursery = self._check_running()
        host = make_host(strategy)
        _check_unique_plain_symbols(host)
        if overflow is not None:
            _check_overflow(overflow)
        slot = Slot(
            self, len(self._slots), host,
            max_errors=self.max_errors if max_errors is None else max_errors,
            capacity=capacity or self.capacity,
            overflow=overflow or self.overflow,
        )
        self._slots.append(slot)
        self._routes.append(slot)
        self._rebuild_watch()
        if self.tape is not None:
            self.tape.write_slot(seq=self._seq, slot=slot.index, action="add", hash=host.source_hash,
                                 language=host.language, params=_strategy_params(host),
                                 source=host.source(), spec=host.spec)
        nursery.start_soon(slot.run)
        log.info("slot %d: added %s watching %s", slot.index, host.describe(), [str(s) for s in host.symbols])
        return slot.index

    def _prepare_swap(self, index: int, strategy: Any) -> tuple[Slot, StrategyHost]:
        self._check_running()
        slot = self._slot(index)
        host = make_host(strategy)
        if set(host.symbols) != set(slot.symbols):
            raise SymbolMismatchError(
                f"slot {index} watches {[str(s) for s in slot.symbols]} but the new strategy watches "
                f"{[str(s) for s in host.symbols]}: a swap keeps the slot's symbols; to change them, "
                f"add_strategy() the new one and remove_strategy({index})"
            )
        return slot, host

    def replace_strategy(self, index: int, strategy: Any, *, warmup: Any = None) -> SwapHandle:
        """Swap the strategy in slot ``index``; await the result for a ``SwapReport``.

        Order: old ``on_stop`` → pointer swap → new ``on_start`` → the new
        strategy's first event. A dispatch in flight finishes on the old
        strategy first. Bad arguments raise at once and change nothing. If
        the new ``on_start`` raises, the old strategy is put back and the
        awaited handle raises ``SwapError``.

        ``warmup`` (an event count, or seconds as a float) replays the slot's
        most recent events from the tape through the new strategy, after its
        ``on_start`` and with its order intents suppressed, before it goes live.
        """
        if warmup is not None and self.tape is None:
            raise RunnerError("warm-up replays events from the tape: open the runner with tape=PATH")
        slot, host = self._prepare_swap(index, strategy)
        req = _Request("swap", host, warmup=warmup)
        slot.request(req)
        return SwapHandle(req)

    def schedule_replace(self, index: int, strategy: Any, at_market_event: int) -> SwapHandle:
        """Swap once slot ``index`` has dispatched exactly ``at_market_event`` market events.

        This is how a replay performs a recorded swap at the recorded point.
        """
        slot, host = self._prepare_swap(index, strategy)
        if at_market_event < 0:
            raise RunnerError(f"at_market_event must be >= 0, got {at_market_event}")
        req = _Request("swap", host)
        slot.schedule(at_market_event, req)
        return SwapHandle(req)

    def request_replace(self, index: int, strategy: Any) -> SwapHandle:
        """Synchronous swap request; it takes effect at slot ``index``'s next event boundary.

        Safe to call from inside a strategy callback, including the slot's own.
        """
        return self.replace_strategy(index, strategy)

    async def remove_strategy(self, index: int) -> None:
        """Stop the strategy in slot ``index`` (its ``on_stop`` runs) and retire the slot."""
        slot = self._slot(index)
        self._routes.remove(slot)
        self._rebuild_watch()
        req = _Request("remove")
        slot.request(req)
        await req.done.wait()
        if self.tape is not None:
            self.tape.write_slot(seq=self._seq, slot=index, action="remove", hash=slot.source_hash,
                                 language=slot.language)
        log.info("slot %d removed", index)

    async def wait_idle(self) -> None:
        """Wait until every event published so far has been dispatched.

        With a finite feed (a list, a tape) this first waits for the feed to
        publish everything.
        """
        while True:
            if self.feed.finite and not self._feed_done.is_set() and not self._closing:
                await self._feed_done.wait()
                continue
            if (not self._publishing and not self._outbox and (not self.feed.pending or self._feed_done.is_set())
                    and all(s.idle or s.finished.is_set() for s in self._slots)):
                return
            await self._lot.park()

    async def _wait_slots_idle(self) -> None:
        # Lockstep: the next batch is published only after every slot handled
        # this one and the order events it caused, so replays do not depend on
        # how the scheduler interleaves the feed and the slots.
        while self._outbox or not all(s.idle or s.finished.is_set() for s in self._slots):
            if self._outbox:
                await self._flush_outbox()
                continue
            await self._lot.park()

    def _progress(self) -> None:
        if self._lot:
            self._lot.unpark_all()

    # --- the FeedHub face: what feeds call -----------------------------------------------

    @property
    def watched_symbols(self) -> frozenset[str]:
        return self._watched

    async def wait_watch_changed(self) -> None:
        await self._watch_changed.wait()

    def _rebuild_watch(self) -> None:
        watched = frozenset().union(*(s.watch for s in self._routes))
        self._bars = BarAggregator(self.bar_intervals) if any(
            s.host.wants_bars for s in self._routes) and self.bar_intervals else None
        if watched != self._watched:
            self._watched = watched
            event, self._watch_changed = self._watch_changed, trio.Event()
            event.set()

    def connector_event(self, kind: str, **info: Any) -> None:
        self.connector_events[kind] = self.connector_events.get(kind, 0) + 1
        log.log(logging.WARNING if kind in ("gap", "error", "disconnect") else logging.INFO,
                "connector %s: %s", kind, info)
        if self.tape is not None:
            self.tape.write_connector(kind, _jsonable(info), self.now_ns())

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish a batch of market events to every slot that watches their symbols."""
        batch = events if type(events) is list else list(events)
        if not batch:
            return
        self._publishing += 1
        try:
            if self.tape is not None:
                self.tape.write_events(self._seq, batch)
                self._recent.append(batch)
            self._seq += len(batch)
            self.executor.on_market(batch)
            if self._bars is not None:
                batch = self._bars.process(batch)
            await self._route(batch)
            if self._outbox:
                await self._flush_outbox()
            if self.lockstep:
                await self._wait_slots_idle()
        finally:
            self._publishing -= 1
            self._progress()

    async def _route(self, batch: list[Any]) -> None:
        routes = self._routes
        if not routes:
            return
        symbols = set(map(_symbol_of, batch))
        for slot in tuple(routes):
            watch = slot.watch
            if slot.venues:
                venues = slot.venues
                sub = [e for e in batch if e.symbol in watch
                       and venues.get(e.symbol, e.venue) in (e.venue, "")]
            elif symbols <= watch:
                sub = batch
            elif symbols.isdisjoint(watch):
                continue
            else:
                sub = [e for e in batch if e.symbol in watch]
            if sub and slot.active:
                try:
                    await slot.enqueue(sub)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the slot was removed while we waited for room

    # --- orders ----------------------------------------------------------------------------

    def submit(self, order: Order) -> None:
        """Hand an order to the executor (called by the slot's ctx)."""
        self.executor.submit(order)

    def _emit(self, slot: int, event: Event) -> None:
        self._outbox.append((slot, event))
        self._outbox_ready.set()

    def _quote(self, slot: int, symbol: str) -> tuple[float | None, float | None, float | None]:
        ctx = self._slots[slot].ctxs.get(symbol) if 0 <= slot < len(self._slots) else None
        if ctx is None:
            return None, None, None
        return ctx.last_price, ctx.best_bid, ctx.best_ask

    async def _outbox_task(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        while self._outbox:
            out, self._outbox = self._outbox, []
            if self.tape is not None:
                self.tape.write_events(self._seq, [ev for _, ev in out])
            self._seq += len(out)
            per_slot: dict[int, list[Event]] = {}
            for index, ev in out:
                per_slot.setdefault(index, []).append(ev)
            for index, events in per_slot.items():
                slot = self._slots[index]
                if slot.active:
                    try:
                        await slot.enqueue_orders(events)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
        self._progress()

    # --- hooks from slots ----------------------------------------------------------------

    def _on_strategy_error(self, slot: Slot, exc: BaseException, where: str) -> None:
        self.strategy_errors += 1
        if self.tape is not None:
            self.tape.write_error(seq=self._seq, slot=slot.index, message=f"{where}: {type(exc).__name__}: {exc}")

    def _on_quarantine(self, slot: Slot, reason: str) -> None:
        self._progress()

    def _on_swap(self, slot: Slot, report: SwapReport, old: StrategyHost, new: StrategyHost) -> None:
        self._rebuild_watch()
        log.info("slot %d: swapped %s -> %s at event %d (%.3f ms)", slot.index, old.describe(),
                 new.describe(), report.at_event, report.pause_s * 1e3)
        if self.tape is not None:
            self.tape.write_swap(
                seq=report.at_market_event, slot=slot.index, old_hash=old.source_hash, new_hash=new.source_hash,
                old_language=old.language, new_language=new.language,
                params={"global_seq": report.global_seq, "at_event": report.at_event,
                        "new": _strategy_params(new), "old": _strategy_params(old)},
                old_source=old.source(), new_source=new.source(), old_spec=old.spec, new_spec=new.spec,
            )

    def _recent_events(self, slot: Slot, warmup: int | float) -> list[Any]:
        """The slot's most recent market events from the tape's in-memory tail.

        An int is a count of events; a float is a duration in seconds before
        the newest event.
        """
        if self.tape is None:
            raise RunnerError("warm-up replays events from the tape: open the runner with tape=PATH")
        watch = slot.watch
        events = [e for batch in self._recent for e in batch if e.symbol in watch]
        if isinstance(warmup, bool) or not isinstance(warmup, int | float) or warmup <= 0:
            raise RunnerError(f"warmup must be a positive event count (int) or seconds (float), got {warmup!r}")
        if isinstance(warmup, int):
            return events[-warmup:]
        if not events:
            return events
        newest = _ts(events[-1])
        cutoff = newest - int(warmup * 1e9)
        return [e for e in events if _ts(e) >= cutoff]

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot of the engine for ``flox-trio status`` and dashboards."""
        ex = self.executor
        slots = []
        for s in self._slots:
            positions = {sym: ex.position(s.index, sym) for sym in s.ctxs}
            slots.append({
                "index": s.index, "state": s.state, "language": s.language,
                "strategy": type(s.strategy).__name__, "spec": s.host.spec,
                "source_hash": s.source_hash[:12], "symbols": [str(x) for x in s.symbols],
                "dispatched": s.dispatched, "queue_depth": s.queue_depth, "dropped": s.dropped,
                "errors": s.errors, "last_error": s.last_error, "quarantined": s.quarantined,
                "swaps": s.swaps,
                "latency_us": None if s.latency_ns is None else round(s.latency_ns / 1e3, 1),
                "last_swap_at_event": s.last_swap.at_event if s.last_swap else None,
                "open_orders": len(ex.open_orders(s.index)),
                "position": {k: str(p.qty) for k, p in positions.items()},
                "realized_pnl": str(sum((p.realized_pnl for p in positions.values()), 0)),
                "unrealized_pnl": str(sum((p.unrealized_pnl(ex.mark_price(s.index, k))
                                           for k, p in positions.items()), 0)),
            })
        return {
            "published": self._seq,
            "feed": self.feed.status(),
            "executor": ex.status(),
            "slots": slots,
            "connector_events": dict(self.connector_events),
        }


@asynccontextmanager
async def open_runner(
    feed: Feed,
    executor: Executor | None = None,
    *,
    tape: Any = None,
    max_errors: int = 10,
    overflow: str = "block",
    capacity: int = 64,
    bar_intervals: Sequence[float] = (60.0,),
    drain: bool = True,
    shutdown_timeout: float = 10.0,
    lockstep: bool = False,
) -> AsyncIterator[Runner]:
    """Run the engine for the duration of the ``async with`` body.

    The feed starts publishing when the body first awaits. When the body
    ends normally and ``drain`` is true, a finite feed is played to its end
    and everything published is dispatched; then every slot's strategy gets
    ``on_stop``, whatever way the body ended.

    ``tape`` is a path (or a ``TapeWriter``) to record everything to.
    ``overflow`` is the per-slot policy when a slot's queue of ``capacity``
    batches is full: "block" (lossless backpressure), "drop_newest" or
    "drop_oldest" (counted in ``slot.dropped``; order events are never dropped).
    ``lockstep`` publishes a batch only once every slot has handled the
    previous one: slower, but deterministic (replays use it).
    """
    runner = Runner(feed, executor, tape=tape, max_errors=max_errors, overflow=overflow,
                    capacity=capacity, bar_intervals=bar_intervals, shutdown_timeout=shutdown_timeout,
                    lockstep=lockstep)
    async with trio.open_nursery() as nursery:
        await runner._open(nursery)
        try:
            yield runner
            if drain:
                await runner._drain()
        finally:
            with trio.CancelScope(shield=True) as cs:
                cs.deadline = trio.current_time() + shutdown_timeout
                await runner._close()
            if cs.cancelled_caught:
                log.error("runner shutdown took longer than %.1f s; some on_stop calls did not finish",
                          shutdown_timeout)
            nursery.cancel_scope.cancel(reason="runner closed")


def _ts(ev: Any) -> int:
    return int(getattr(ev, "exchange_ts_ns", 0) or getattr(ev, "recv_ts_ns", 0) or 0)


def _check_overflow(overflow: str) -> None:
    if overflow not in OVERFLOW_POLICIES:
        raise RunnerError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")


def _check_unique_plain_symbols(host: StrategyHost) -> None:
    plain = [s.symbol for s in host.symbols]
    if len(set(plain)) != len(plain):
        raise FloxError(
            f"a strategy cannot watch one symbol on two venues ({[str(s) for s in host.symbols]}): "
            "use one slot per venue"
        )


def _strategy_params(host: StrategyHost) -> dict[str, Any]:
    """What rebuilds the strategy: its symbols and constructor keyword arguments."""
    return {"symbols": [str(s) for s in host.symbols], **_jsonable(host.params)}


def _jsonable(value: Any) -> Any:
    """Parameters as JSON-friendly values for the tape (no secrets are ever passed here)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return str(value)
