"""The Runner: one nursery that owns the feed, the executor and a dispatch task per slot.

Data flows one way: feed → ``publish`` (recorder, executor, bars) → the bus
routes by symbol → per-slot bounded queues of batches → slot task → host →
strategy → ctx intents → executor → order events → the bus → the owning
slot's queue. Control flows one way too: callers (and strategies, through
``StrategyRequests``) ask the runner; the runner queues requests on slots;
slots answer through ``EngineHooks``, never through the runner's insides.

This is the core runner: it takes ready-made ports. ``flox_trio.open_runner``
is the one users call; it fills in the defaults (a paper executor, a tape
writer for ``tape=PATH``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Literal

import trio

from .._errors import (
    FloxError,
    RequestRefusedError,
    RunnerError,
    SymbolMismatchError,
    UnknownSlotError,
)
from ._bus import Bus
from ._clock import TrioClock
from ._events import Event, Fill, OrderUpdate
from ._host import StrategyHost, jsonable, make_host
from ._market import BarAggregator
from ._metrics import SweepIteration, copy_position, measure
from ._orders import Order
from ._ports import Clock, Executor, Feed, Portfolio, Recorder, RequestPolicy
from ._slot import Slot
from ._states import RequestKind, parse_overflow
from ._status import RunnerStatus, SlotStatus, StrategyInfo, SwapReport
from ._strategy import Strategy
from ._swap import Request, SwapHandle

log = logging.getLogger("flox_trio.runner")

QuarantineOrders = Literal["cancel", "keep"]


class Runner:
    """The engine. Get one with ``async with flox.open_runner(feed) as runner``."""

    def __init__(
        self,
        feed: Feed,
        executor: Executor,
        *,
        recorder: Recorder | None = None,
        max_errors: int = 10,
        overflow: str = "block",
        capacity: int = 64,
        bar_intervals: Sequence[float] = (60.0,),
        warmup_batches: int = 4096,
        lockstep: bool = False,
        clock: Clock | None = None,
        quarantine_orders: QuarantineOrders = "cancel",
    ) -> None:
        if not isinstance(feed, Feed):
            raise RunnerError(
                f"feed must be a flox_trio feed (a connector, feeds.ListFeed, feeds.TapeFeed), got {feed!r}"
            )
        if not isinstance(executor, Executor):
            raise RunnerError(f"executor must be a flox_trio executor (flox.PaperExecutor(), ...), got {executor!r}")
        if capacity < 1:
            raise RunnerError(f"capacity must be >= 1 batch, got {capacity}")
        self.feed = feed
        self.executor = executor
        self.max_errors = max_errors
        self.overflow = parse_overflow(overflow)
        self.capacity = capacity
        self.bar_intervals = tuple(bar_intervals)
        BarAggregator(self.bar_intervals)  # refuse bad intervals now, not at the first bar
        self.lockstep = lockstep
        if quarantine_orders not in ("cancel", "keep"):
            raise RunnerError(f"quarantine_orders must be 'cancel' or 'keep', got {quarantine_orders!r}")
        #: What happens to a quarantined slot's open orders: nobody is left to manage them.
        self.quarantine_orders = quarantine_orders
        #: The engine's one clock: Trio time for scheduling, ``wall_ns()`` for timestamps.
        self.clock: Clock = clock if clock is not None else TrioClock()
        #: Where everything is recorded (a TapeWriter), or None.
        self.tape: Recorder | None = recorder
        self._slots: list[Slot] = []
        self._bus = Bus()
        self._hooks = _Hooks(self)
        # The newest batches in memory, for warm-ups.
        self._recent: deque[list[Event]] = deque(maxlen=warmup_batches)
        self._bars: BarAggregator | None = None
        self._seq = 0
        self._market_seq = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._watch_changed = trio.Event()
        self._watched: frozenset[str] = frozenset()
        self._publishing = 0
        self._new_slots = False
        self._feed_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._feed_scope = trio.CancelScope()
        self._closing = False
        self.connector_events: dict[str, int] = {}
        self.strategy_errors = 0
        #: Called with every batch of order updates and fills as it is delivered (a sweep's window).
        self._order_listeners: list[Callable[[list[Event]], None]] = []

    # --- lifecycle ---------------------------------------------------------------

    async def _open(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.executor.bind(emit=self._bus.emit, quote=self._quote, clock=self.clock)
        nursery.start_soon(self.executor.run)
        nursery.start_soon(self._outbox_task)
        # start_soon: the feed first runs when the body awaits, so strategies
        # added at the top of the body see the first event.
        nursery.start_soon(self._feed_task)

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
                await self._bus.route(closing)
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

    # --- slots ---------------------------------------------------------------------

    @property
    def slots(self) -> list[Slot]:
        """Every slot ever added, indexed by slot index (removed ones stay, state "removed")."""
        return list(self._slots)

    def slot(self, index: int) -> Slot:
        """The live slot ``index``; ``UnknownSlotError`` if it was never added or is gone."""
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
        slot = Slot(
            self._hooks, len(self._slots), host,
            max_errors=self.max_errors if max_errors is None else max_errors,
            capacity=capacity or self.capacity,
            overflow=self.overflow if overflow is None else parse_overflow(overflow),
            measure_latency=self.feed.stamps_receive_time,
        )
        self._slots.append(slot)
        self._bus.add(slot)
        self._new_slots = True
        self._rebuild_watch(added=slot)
        if self.tape is not None:
            info = host.info
            self.tape.write_slot(seq=self._seq, slot=slot.index, action="add", hash=info.source_hash,
                                 language=info.language, params=info.params, source=info.source, spec=info.spec)
        nursery.start_soon(slot.run)
        log.info("slot %d: added %s watching %s", slot.index, host.describe(), [str(s) for s in host.symbols])
        return slot.index

    def _prepare_swap(self, index: int, strategy: Any) -> tuple[Slot, StrategyHost]:
        self._check_running()
        slot = self.slot(index)
        host = make_host(strategy)
        if set(host.symbols) != set(slot.symbols):
            raise SymbolMismatchError(
                f"slot {index} watches {[str(s) for s in slot.symbols]} but the new strategy watches "
                f"{[str(s) for s in host.symbols]}: a swap keeps the slot's symbols; to change them, "
                f"add_strategy() the new one and remove_strategy({index})"
            )
        return slot, host

    def replace_strategy(self, index: int, strategy: Any, *, warmup: int | float | None = None) -> SwapHandle:
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
        if warmup is not None:
            _check_warmup(warmup)
            if self.tape is None:
                raise RunnerError("warm-up replays events from the tape: open the runner with tape=PATH")
        slot, host = self._prepare_swap(index, strategy)
        req = Request(RequestKind.SWAP, host, warmup=warmup)
        slot.request(req)
        return SwapHandle(req)

    def schedule_replace(self, index: int, strategy: Any, at_market_event: int) -> SwapHandle:
        """Swap once slot ``index`` has dispatched exactly ``at_market_event`` market events.

        This is how a replay performs a recorded swap at the recorded point.
        """
        slot, host = self._prepare_swap(index, strategy)
        if at_market_event < 0:
            raise RunnerError(f"at_market_event must be >= 0, got {at_market_event}")
        req = Request(RequestKind.SWAP, host)
        slot.schedule(at_market_event, req)
        return SwapHandle(req)

    def request_replace(self, index: int, strategy: Any) -> SwapHandle:
        """Synchronous swap request; it takes effect at slot ``index``'s next event boundary.

        Safe to call from inside a strategy callback, including the slot's own.
        """
        return self.replace_strategy(index, strategy)

    def subscribe_orders(self, listener: Callable[[list[Event]], None]) -> Callable[[], None]:
        """Call ``listener`` with every batch of order updates and fills as it is delivered; returns the unsubscribe.

        ``listener`` runs on the engine's path to the slots: it must be quick and must not raise.
        """
        self._order_listeners.append(listener)
        return lambda: self._order_listeners.remove(listener)

    async def sweep(self, index: int, variants: Sequence[Any], *, each: float, rounds: int = 1,
                    flat_between: bool = False) -> list[SweepIteration]:
        """Run ``variants`` one after another in slot ``index``, ``each`` seconds apiece; their results.

        A variant is a factory (a callable returning a new strategy: each
        window needs a fresh instance) or a ``(label, factory)`` pair. Each
        window is a swap on the live slot: the connection, the subscriptions
        and the executor stay, and the strategy's own ``on_stop``/``on_start``
        carry its state across. ``rounds`` repeats the list (ABC ABC: drift in
        the market does not favour the first). ``flat_between`` closes the
        slot's position (and cancels its orders) before each window, so one
        variant's inventory does not count in the next one's PnL.
        """
        if not (each > 0 and each < float("inf")):
            raise RunnerError(f"each must be a positive number of seconds, got {each!r}")
        if rounds < 1:
            raise RunnerError(f"rounds must be >= 1, got {rounds!r}")
        named = [v if isinstance(v, tuple) else (f"variant {i}", v) for i, v in enumerate(variants)]
        if not named or not all(callable(f) for _, f in named):
            raise RunnerError("variants must be strategy factories (callables) or (label, factory) pairs")
        slot = self.slot(index)
        window: list[Event] = []

        def listen(events: list[Event]) -> None:
            window.extend(e for e in events if getattr(e, "slot", None) == index)

        results: list[SweepIteration] = []
        unsubscribe = self.subscribe_orders(listen)
        try:
            for n in range(rounds * len(named)):
                k = n % len(named)
                label, factory = named[k]
                flattened = await self._flatten(index) if flat_between and n else {}
                await self.replace_strategy(index, factory())
                # From here on, synchronously: what the window starts with (copied, the
                # executor's positions move on) and the first of its fills.
                start = {s.symbol: copy_position(self.executor.position(index, s.symbol)) for s in slot.symbols}
                window.clear()
                dispatched, t0 = slot.market_dispatched, self.clock.wall_ns()
                await trio.sleep(each)
                await self._flush_orders()
                fills = [e for e in window if isinstance(e, Fill)]
                orders = {e.order_id for e in window if isinstance(e, OrderUpdate)}
                marks = {s.symbol: self.executor.mark_price(index, s.symbol) for s in slot.symbols}
                feed = self.feed.status()
                info = slot.host.info
                results.append(SweepIteration(
                    n, n // len(named), k, label, info.spec, info.source_hash,
                    {key: v for key, v in info.params.items() if key != "symbols"}, t0, self.clock.wall_ns(),
                    slot.market_dispatched - dispatched, len(orders),
                    measure(fills, marks, start),
                    getattr(feed, "connection_id", None), flattened))
                log.info("sweep of slot %d: window %d (%s) %d events, %d fills, PnL %s", index, n, label,
                         results[-1].events, results[-1].stats.fills, results[-1].stats.pnl)
        finally:
            unsubscribe()
        return results

    async def _flatten(self, index: int, timeout: float = 30.0) -> dict[str, Decimal]:
        """Close slot ``index``'s positions and cancel its orders, with a do-nothing strategy in the slot meanwhile.

        An order the old strategy had in flight may still fill after the close
        was sent, so this repeats until the slot is flat with nothing open.
        """
        slot = self.slot(index)
        await self.replace_strategy(index, Strategy([str(s) for s in slot.symbols]))
        ex = self.executor
        closed: dict[str, Decimal] = {}
        with trio.move_on_after(timeout):
            while True:
                for order in ex.open_orders(index):
                    ex.cancel(index, order.order_id)
                while ex.open_orders(index):
                    await trio.sleep(0.01)
                held = {s.symbol: q for s in slot.symbols if (q := ex.position(index, s.symbol).qty)}
                if not held:
                    break
                for symbol, qty in held.items():
                    slot.submit_order(symbol, "sell" if qty > 0 else "buy", "market", abs(qty), None)
                    closed[symbol] = closed.get(symbol, Decimal(0)) + qty
                await trio.sleep(0.01)
        left = {s.symbol: q for s in slot.symbols if (q := ex.position(index, s.symbol).qty)}
        if left:
            log.warning("sweep of slot %d: could not flatten %s within %.0f s", index, left, timeout)
        return closed

    async def remove_strategy(self, index: int) -> None:
        """Stop the strategy in slot ``index`` (its ``on_stop`` runs) and retire the slot."""
        slot = self.slot(index)
        self._bus.remove(slot)
        self._rebuild_watch()
        req = Request(RequestKind.REMOVE)
        slot.request(req)
        await req.done.wait()
        if self.tape is not None:
            self.tape.write_slot(seq=self._seq, slot=index, action="remove", hash=slot.source_hash,
                                 language=slot.language)
        log.info("slot %d removed", index)

    def strategy_requests(self, origin: RequestPolicy | None = None) -> SlotRequests:
        """The narrow request API for strategies of ``origin`` (a JS script's ``runner`` global)."""
        return SlotRequests(self, origin)

    async def wait_idle(self) -> None:
        """Wait until every event published so far has been dispatched.

        With a finite feed (a list, a tape) this first waits for the feed to
        publish everything.
        """
        while True:
            if self.feed.finite and not self._feed_done.is_set() and not self._closing:
                await self._feed_done.wait()
                continue
            if (not self._publishing and not self._bus.orders_pending
                    and (not self.feed.pending or self._feed_done.is_set())
                    and all(s.idle or s.finished.is_set() for s in self._slots)):
                return
            await self._lot.park()

    async def _wait_slots_idle(self) -> None:
        # Lockstep: the next batch is published only after every slot handled
        # this one and the order events it caused, so replays do not depend on
        # how the scheduler interleaves the feed and the slots. A slot served in this
        # task is idle already, but the executor may have work due for its intents.
        while (self._bus.orders_pending or self.executor.due
               or not all(s.idle or s.finished.is_set() for s in self._slots)):
            if self._bus.orders_pending:
                await self._flush_orders()
            elif self.executor.due:
                await trio.lowlevel.checkpoint()
            else:
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

    def _rebuild_watch(self, added: Slot | None = None) -> None:
        if added is not None:
            # Adding a slot can only start the bars, not stop them: no scan of every slot
            # (a thousand slots added one by one would be a million checks).
            wants_bars = self._bars is not None or added.wants_bars
        else:
            wants_bars = any(r.wants_bars for r in self._bus.routes)
        if not self.bar_intervals or not wants_bars:
            self._bars = None
        elif self._bars is None:
            # One aggregator for the life of the runner while anyone wants bars: a
            # swap or a new slot must not cut the bars in progress short.
            self._bars = BarAggregator(self.bar_intervals)
        watched = self._bus.watched()
        if watched != self._watched:
            self._watched = watched
            event, self._watch_changed = self._watch_changed, trio.Event()
            event.set()

    def connector_event(self, kind: str, **info: Any) -> None:
        self.connector_events[kind] = self.connector_events.get(kind, 0) + 1
        log.log(logging.WARNING if kind in ("gap", "error", "disconnect") else logging.INFO,
                "connector %s: %s", kind, info)
        if self.tape is not None:
            self.tape.write_connector(kind, jsonable(info), self.clock.wall_ns())

    def record_control(self, action: str, reason: str) -> None:
        """Record an operator's ``halt`` or ``resume`` at this point of the stream (a replay repeats it here)."""
        if self.tape is not None:
            self.tape.write_control(seq=self._seq, at_market_event=self._market_seq, action=action, reason=reason,
                                    ts_ns=self.clock.wall_ns())

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish a batch of market events to every slot that watches their symbols."""
        batch = events if type(events) is list else list(events)
        if not batch:
            return
        if self._new_slots:
            # Let slots added since the last batch run their on_start and park first, so that
            # the bus can deliver to them in this task instead of queueing for each of them.
            self._new_slots = False
            await trio.lowlevel.checkpoint()
        self._publishing += 1
        try:
            # The executor sees the batch first (fills of resting orders it crosses), and order
            # events that came before the batch or of it reach the slots before it: on the tape
            # too, so that a reproducing replay hands them back before the batch, as here.
            self.executor.on_market(batch)
            if self._bus.orders_pending:
                await self._flush_orders()
            await self._bus.route(self._admit(batch))
            if self._bus.orders_pending:
                await self._flush_orders()
            if self.lockstep:
                await self._wait_slots_idle()
        finally:
            self._publishing -= 1
            self._progress()

    def publish_nowait(self, events: Sequence[Event]) -> bool:
        """``publish``, done in this call when nothing in it has to wait; else False, and nothing done.

        For a feed's reader: it takes a batch this way when one idle, synchronous
        slot is all it goes to (and publishes it the usual way otherwise), and saves
        the task switch to a publishing task of its own, most of the latency of a
        frame at a few thousand a second. It has to wait, so this refuses, when
        another publish is under way, order events wait to be delivered first, the
        executor may fill an order on the batch, the runner is in lockstep, or the
        batch goes to more than one slot or to one that is busy (or not started yet).
        Order events the strategy's intents cause go out from the runner's order task.
        """
        batch = events if type(events) is list else list(events)
        if not batch:
            return True
        bus = self._bus
        # A slot added since the last batch is in the bus, and not ready until its on_start ran.
        if self._publishing or self.lockstep or bus.orders_pending:
            return False
        ok, route, symbols = bus.sole_route(batch)
        if not ok or self.executor.may_emit_on_market():
            return False
        self._publishing += 1
        try:
            self.executor.on_market(batch)
            # Bars it adds are of the batch's own symbols.
            batch = self._admit(batch)
            if route is not None:
                bus.deliver_sole(route, batch, symbols)
        finally:
            self._publishing -= 1
            self._progress()
        return True

    def _admit(self, batch: list[Event]) -> list[Event]:
        """A market batch counted, recorded and given its bars: what the slots get of it."""
        if self.tape is not None:
            self.tape.write_events(self._seq, batch)
            self._recent.append(batch)
        self._seq += len(batch)
        self._market_seq += len(batch)
        if self._bars is not None:
            batch = self._bars.process(batch)
        return batch

    # --- orders ----------------------------------------------------------------------------

    def _quote(self, slot: int, symbol: str) -> tuple[float | None, float | None, float | None]:
        ctx = self._slots[slot].ctxs.get(symbol) if 0 <= slot < len(self._slots) else None
        if ctx is None:
            return None, None, None
        return ctx.last_price, ctx.best_bid, ctx.best_ask

    async def _outbox_task(self) -> None:
        while True:
            await self._bus.wait_orders()
            await self._flush_orders()

    def _record_orders(self, events: list[Event]) -> None:
        for listener in self._order_listeners:
            listener(events)
        if self.tape is not None:
            self.tape.write_events(self._seq, events)
        self._seq += len(events)

    async def _flush_orders(self) -> None:
        await self._bus.flush_orders(self._record_orders)
        self._progress()

    # --- what slots report (through _Hooks) ------------------------------------------------

    def _on_strategy_error(self, slot: int, message: str) -> None:
        self.strategy_errors += 1
        if self.tape is not None:
            self.tape.write_error(seq=self._seq, slot=slot, message=message)

    def _on_quarantine(self, index: int, reason: str) -> None:
        ex = self.executor
        orders = ex.open_orders(index)
        canceled = 0
        if self.quarantine_orders == "cancel":
            for order in orders:
                try:
                    ex.cancel(index, order.order_id)
                    canceled += 1
                except FloxError as exc:  # final meanwhile: nothing to cancel
                    log.info("slot %d: could not cancel %s: %s", index, order.order_id, exc)
        held = {sym: ex.position(index, sym).qty for sym in self._slots[index].ctxs}
        held = {sym: q for sym, q in held.items() if q}
        log.warning("slot %d quarantined with %s and %d open orders (%s); swap in a strategy to manage them",
                    index, ", ".join(f"position {q} {sym}" for sym, q in held.items()) or "no position",
                    len(orders), f"{canceled} being canceled" if self.quarantine_orders == "cancel" else "kept")

    def _on_swap(self, slot: int, report: SwapReport, old: StrategyInfo, new: StrategyInfo) -> None:
        self._rebuild_watch()
        log.info("slot %d: swapped %s %s -> %s %s at event %d (%.3f ms)", slot, old.language, old.spec,
                 new.language, new.spec, report.at_event, report.pause_s * 1e3)
        if self.tape is not None:
            self.tape.write_swap(
                seq=report.global_seq, slot=slot, at_market_event=report.global_market_event,
                slot_market_event=report.at_market_event, old_hash=old.source_hash, new_hash=new.source_hash,
                old_language=old.language, new_language=new.language,
                params={"at_event": report.at_event, "new": new.params, "old": old.params},
                old_source=old.source, new_source=new.source, old_spec=old.spec, new_spec=new.spec,
            )

    def _recent_events(self, watch: frozenset[str], warmup: int | float) -> list[Event]:
        """The slot's most recent market events from the in-memory tail of the tape.

        An int is a count of events; a float is a duration in seconds before
        the newest event.
        """
        events = [e for batch in self._recent for e in batch if e.symbol in watch]
        if isinstance(warmup, int):
            return events[-warmup:]
        if not events:
            return events
        newest = _ts(events[-1])
        cutoff = newest - int(warmup * 1e9)
        return [e for e in events if _ts(e) >= cutoff]

    # --- status ------------------------------------------------------------------------------

    def status(self) -> RunnerStatus:
        """A snapshot of the engine for ``flox-trio status`` and dashboards."""
        ex = self.executor
        feed = self.feed.status()
        # Connectors report the symbols the venue refused; a slot watching one hears nothing.
        failing: dict[str, str] = getattr(feed, "failing", None) or {}
        slots = []
        for s in self._slots:
            refused = [f"{sym}: {failing[sym]}" for sym in sorted(s.watch) if sym in failing]
            positions = {sym: ex.position(s.index, sym) for sym in s.ctxs}
            info = s.host.info
            slots.append(SlotStatus(
                index=s.index, state=s.state, language=s.language, strategy=info.name, spec=info.spec,
                source_hash=s.source_hash[:12], symbols=tuple(str(x) for x in s.symbols),
                params=info.params, dispatched=s.dispatched, queue_depth=s.queue_depth, dropped=s.dropped,
                dropped_by_symbol=dict(s.queue.dropped_by_symbol), missed=dict(s.missed),
                errors=s.errors, last_error=s.last_error, quarantine_reason=s.quarantine_reason,
                swaps=s.swaps, latency_us=None if s.latency_ns is None else round(s.latency_ns / 1e3, 1),
                last_swap=s.last_swap, open_orders=len(ex.open_orders(s.index)),
                position={k: p.qty for k, p in positions.items()},
                realized_pnl=sum((p.realized_pnl for p in positions.values()), Decimal(0)),
                unrealized_pnl=sum((p.unrealized_pnl(ex.mark_price(s.index, k)) for k, p in positions.items()),
                                   Decimal(0)),
                note=f"no data: subscribe refused by venue ({'; '.join(refused)})" if refused else None,
            ))
        return RunnerStatus(
            published=self._seq, market_events=self._market_seq, feed=feed,
            executor=ex.status(), slots=tuple(slots), connector_events=dict(self.connector_events),
            strategy_errors=self.strategy_errors, undelivered_order_events=dict(self._bus.undelivered_orders),
        )


class _Hooks:
    """The runner as its slots see it (``EngineHooks``): the only way from a slot back into the engine."""

    __slots__ = ("_runner", "amend", "cancel", "clock", "portfolio", "progress", "submit")

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self.clock = runner.clock
        self.portfolio: Portfolio = runner.executor
        # Bound once: these run per batch or per order.
        self.progress = runner._progress
        self.submit: Callable[[Order], None] = runner.executor.submit
        self.cancel: Callable[[int, str], None] = runner.executor.cancel
        self.amend: Callable[[int, str, Decimal | None, Decimal | None], None] = runner.executor.amend

    @property
    def published(self) -> int:
        return self._runner._seq

    @property
    def market_events(self) -> int:
        return self._runner._market_seq

    def requests_for(self, origin: RequestPolicy | None) -> SlotRequests:
        return SlotRequests(self._runner, origin)

    def strategy_error(self, slot: int, message: str) -> None:
        self._runner._on_strategy_error(slot, message)

    def quarantined(self, slot: int, reason: str) -> None:
        self._runner._on_quarantine(slot, reason)

    def swapped(self, slot: int, report: SwapReport, old: StrategyInfo, new: StrategyInfo) -> None:
        self._runner._on_swap(slot, report, old, new)

    def recent_events(self, watch: frozenset[str], warmup: int | float) -> list[Event]:
        return self._runner._recent_events(watch, warmup)


class SlotRequests:
    """What a strategy may ask of the engine: swap a slot, or add one (``ctx.runner``, JS ``runner``).

    Every request goes through the runner's checks (the slot exists and
    lives, the symbols match) and lands at an event boundary. Strategies of
    an ``origin`` (a loaded script) may swap only the slots its strategies
    occupy, plus what the operator granted, and add only so many slots;
    Python strategies (origin None) are the operator's own code.
    """

    __slots__ = ("_runner", "origin")

    def __init__(self, runner: Runner, origin: RequestPolicy | None) -> None:
        self._runner = runner
        self.origin = origin

    def owned(self) -> list[int]:
        """The live slots this origin's strategies occupy."""
        return [s.index for s in self._runner.slots if s.active and s.host.origin is self.origin]

    def request_replace(self, index: int, strategy: Any) -> SwapHandle:
        origin = self.origin
        if origin is not None and origin.grants is not None and index not in origin.grants:
            owned = self.owned()
            if index not in owned:
                raise RequestRefusedError(
                    f"{origin}: may swap only the slots its strategies occupy ({owned or 'none yet'}); "
                    f"slot {index} is not one of them (the operator can grant more slots when loading the script)")
        return self._runner.replace_strategy(index, strategy)

    def replace_strategy(self, index: int, strategy: Any) -> SwapHandle:
        return self.request_replace(index, strategy)

    def add_strategy(self, strategy: Any) -> int:
        origin = self.origin
        if origin is not None:
            if origin.new_slots >= origin.max_new_slots:
                raise RequestRefusedError(f"{origin}: may add at most {origin.max_new_slots} slots, and did")
            index = self._runner.add_strategy(strategy)
            origin.new_slots += 1
            return index
        return self._runner.add_strategy(strategy)

    def __repr__(self) -> str:
        return f"<SlotRequests origin={self.origin!r}>"


@asynccontextmanager
async def open_core_runner(
    feed: Feed,
    executor: Executor,
    *,
    recorder: Recorder | None = None,
    drain: bool = True,
    shutdown_timeout: float = 10.0,
    **options: Any,
) -> AsyncIterator[Runner]:
    """Run the core engine for the duration of the ``async with`` body (see ``flox_trio.open_runner``)."""
    runner = Runner(feed, executor, recorder=recorder, **options)
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


def _check_warmup(warmup: object) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int | float) or not warmup > 0:
        raise RunnerError(f"warmup must be a positive event count (int) or seconds (float), got {warmup!r}")


def _check_unique_plain_symbols(host: StrategyHost) -> None:
    plain = [s.symbol for s in host.symbols]
    if len(set(plain)) != len(plain):
        raise FloxError(
            f"a strategy cannot watch one symbol on two venues ({[str(s) for s in host.symbols]}): "
            "use one slot per venue"
        )
