"""The ports of the core: what the engine needs from the parts plugged into it, and what it offers them.

Nothing here imports an implementation. A feed sees the engine as a
``FeedHub``; the engine sees a feed as a ``Feed``, its executor as an
``Executor``, reads time from a ``Clock`` and writes what happened to a
``Recorder`` (a tape). Inside the engine, a strategy host and a strategy's
``ctx`` see their slot as a ``SlotPort``; a slot sees the runner as
``EngineHooks``; a strategy asks for swaps through ``StrategyRequests``,
never through the runner itself.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Generator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .._errors import OrderError
from ._events import Event, Fill, Gap, OrderType, Side, SymbolRef
from ._orders import Order, Position, amend_refused
from ._status import ExecutorSettings, ExecutorStatus, FeedStatus, StrategyInfo, SwapReport

if TYPE_CHECKING:  # Protocols name the types their members use; no runtime import
    from ._strategy import Context


class Clock(Protocol):
    """The engine's clock (see ``_core/_clock.py``): one for scheduling, one wall-clock source."""

    def now(self) -> float:
        """Seconds on the Trio clock: timers, timeouts, rate windows."""

    def wall_ns(self) -> int:
        """Wall-clock nanoseconds for timestamps (receive times, order update times)."""


class FeedHub(Protocol):
    """The runner as a feed sees it."""

    @property
    def clock(self) -> Clock:
        """Stamp receive times with ``clock.wall_ns()``: latency is measured against it."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Hand a batch of events to the engine, in order.

        Lossless: waits while a slot that uses backpressure is full. Batches
        are the unit of the hot path: publish everything one frame (or one
        chunk of a file) decoded in one call.
        """

    @property
    def watched_symbols(self) -> frozenset[str]:
        """The plain symbols (``"BTCUSDT"``) that the slots watch right now."""

    async def wait_watch_changed(self) -> None:
        """Return when ``watched_symbols`` changes (a slot was added or removed)."""

    def connector_event(self, kind: str, **info: Any) -> None:
        """Report a session event ("connect", "disconnect", "gap", "resync", "error", ...).

        It is logged, counted in status and recorded on the tape.
        """


class Feed(abc.ABC):
    """Where events come from: ``run(hub)`` publishes batches into the engine.

    The runner starts ``run`` in its nursery once the body of
    ``async with open_runner(...)`` first awaits, and cancels it when the
    runner closes. Connectors, ``ListFeed``, ``PushFeed`` and ``TapeFeed``
    are feeds.
    """

    #: A finite feed (a list, a tape) is played to its end when the runner's
    #: body exits normally; a live feed is simply stopped.
    finite: bool = False

    #: True when the feed stamps ``recv_ts_ns`` with ``hub.clock.wall_ns()`` as
    #: events arrive (connectors): only then is receive-to-dispatch latency real.
    stamps_receive_time: bool = False

    #: Symbols the feed serves whether or not a slot watches them.
    symbols: tuple[str, ...] = ()

    @property
    def pending(self) -> int:
        """Events the feed has accepted but not yet published (``wait_idle`` waits for them)."""
        return 0

    @abc.abstractmethod
    async def run(self, hub: FeedHub) -> None:
        """Publish events into ``hub`` until the data ends or the task is cancelled."""

    def status(self) -> FeedStatus:
        """What ``flox-trio status`` shows for this feed."""
        return FeedStatus(type(self).__name__)


class Recorder(Protocol):
    """Where the runner records what happened (a ``TapeWriter``)."""

    def write_events(self, seq: int, events: Sequence[Event]) -> None: ...

    def write_swap(
        self, *, seq: int, slot: int, at_market_event: int, slot_market_event: int, old_hash: str,
        new_hash: str, old_language: str, new_language: str, params: dict[str, Any] | None = None,
        old_source: str | None = None, new_source: str | None = None, old_spec: str | None = None,
        new_spec: str | None = None,
    ) -> None: ...

    def write_slot(
        self, *, seq: int, slot: int, action: str, hash: str, language: str,
        params: dict[str, Any] | None = None, source: str | None = None, spec: str | None = None,
    ) -> None: ...

    def write_connector(self, kind: str, info: dict[str, Any], ts_ns: int) -> None: ...

    def write_error(self, *, seq: int, slot: int, message: str) -> None: ...

    def write_control(self, *, seq: int, at_market_event: int, action: str, reason: str, ts_ns: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# --- execution ---------------------------------------------------------------------------

#: (slot index, symbol) -> (last trade price, best bid, best ask) as the slot sees the market.
QuoteFn = Callable[[int, str], tuple[float | None, float | None, float | None]]
#: Hand an order event to the engine for delivery to its slot (buffered; delivered in order).
EmitFn = Callable[[int, Event], None]


class Portfolio(Protocol):
    """The read side of an executor: what a ``ctx`` shows a strategy."""

    def position(self, slot: int, symbol: str) -> Position: ...

    def open_orders(self, slot: int, symbol: str | None = None) -> list[Order]: ...


class Executor(abc.ABC):
    """Owns orders and positions. Survives every strategy swap: strategies come and go, orders stay."""

    _emit: EmitFn
    _quote: QuoteFn
    _clock: Clock

    def bind(self, *, emit: EmitFn, quote: QuoteFn, clock: Clock) -> None:
        """Called once by the runner before anything else."""
        self._emit = emit
        self._quote = quote
        self._clock = clock

    @property
    @abc.abstractmethod
    def settings(self) -> ExecutorSettings:
        """How this executor (and any it wraps) was configured: recorded on tapes, rebuilt by replays."""

    @abc.abstractmethod
    def submit(self, order: Order) -> None:
        """Take a new order (status "new"); acknowledge it asynchronously."""

    @abc.abstractmethod
    def cancel(self, slot: int, order_id: str) -> None:
        """Request a cancel; a cancel of a final or unknown order is answered with a rejected update."""

    def amend(self, slot: int, order_id: str, price: Decimal | None, qty: Decimal | None) -> None:
        """Request a change of a resting limit order's price and/or total quantity.

        Answered asynchronously by an ``OrderUpdate`` with the order's status as it
        stands: reason "amended" (and the new price and qty) when the change took
        effect, "amend refused: ..." when it did not. An executor that cannot amend
        refuses every amend so; an unknown order raises ``OrderError`` as for a cancel.
        """
        order = next((o for o in self.open_orders(slot) if o.order_id == order_id), None)
        if order is None:
            raise OrderError(f"slot {slot} has no open order {order_id!r}; ctx.open_orders lists the live ones")
        self._emit(slot, amend_refused(order, f"{type(self).__name__} cannot amend orders; cancel the order and "
                                              f"place a new one", self._clock.wall_ns()))

    def on_market(self, batch: list[Any]) -> None:  # noqa: B027 - optional hook
        """See every published market batch (to fill resting orders). Must be cheap."""

    def may_emit_on_market(self) -> bool:
        """Whether ``on_market`` may emit order events now (fill a resting order): a publish that
        cannot wait for their delivery (``Runner.publish_nowait``) asks first. An executor that
        does not override ``on_market`` never does."""
        return type(self).on_market is not Executor.on_market

    @property
    def due(self) -> bool:
        """Work is due now in the executor's task (an acknowledgement with no latency left).

        A lockstep runner yields until it is done before the next batch, so that
        what the executor does does not depend on how the scheduler orders tasks.
        """
        return False

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

    def fill_history(self) -> list[Fill]:
        """The fills the executor keeps, oldest first (a live run keeps a bounded history)."""
        return []

    def positions(self) -> dict[tuple[int, str], Position]:
        return {}

    def mark_price(self, slot: int, symbol: str) -> Decimal | None:
        last, bid, ask = self._quote(slot, symbol)
        if bid is not None and ask is not None:
            return Decimal(repr((bid + ask) / 2))
        return Decimal(repr(last)) if last is not None else None

    @abc.abstractmethod
    def status(self) -> ExecutorStatus: ...


# --- inside the engine ----------------------------------------------------------------------


class SwapOutcome(Protocol):
    """A requested swap: ``await`` it for the ``SwapReport`` (or the ``SwapError``)."""

    @property
    def done(self) -> bool: ...

    def __await__(self) -> Generator[Any, None, SwapReport]: ...


class RequestPolicy(Protocol):
    """What a strategy's origin (a loaded script) may ask for besides the slots it occupies.

    ``grants``: further slots it may swap (None: any slot); ``max_new_slots``:
    how many slots it may add, ``new_slots`` how many it did.
    """

    grants: frozenset[int] | None
    max_new_slots: int
    new_slots: int


class StrategyRequests(Protocol):
    """What a strategy may ask of the engine (``ctx.runner``, the JavaScript ``runner`` global).

    Requests are checked and take effect at the target slot's next event
    boundary; they never hand out the engine itself.
    """

    def request_replace(self, index: int, strategy: Any) -> SwapOutcome: ...

    def replace_strategy(self, index: int, strategy: Any) -> SwapOutcome: ...

    def add_strategy(self, strategy: Any) -> int: ...


class InlineGate(Protocol):
    """Whether the bus may deliver to a slot in the publishing task right now (see ``Slot.deliver_nowait``)."""

    ready: bool
    #: Market events delivered through the gate (the slot counts them as dispatched).
    inlined: int


class SlotPort(Protocol):
    """A slot as its strategy host and its strategies' ``ctx`` see it."""

    index: int
    symbols: tuple[SymbolRef, ...]
    ctxs: dict[str, Context]
    #: Set when the host must stop after the current event (a request, a quarantine).
    interrupted: bool
    #: The next order number the slot mints ("<slot>-<n>").
    order_seq: int
    portfolio: Portfolio

    @property
    def requests(self) -> StrategyRequests:
        """Where the slot's current strategy asks for swaps and new slots."""

    @property
    def errors_left(self) -> int | None: ...

    def submit_order(self, symbol: str, side: Side, order_type: OrderType, qty: Any, price: Any,
                     order_id: str | None = None) -> str: ...

    def cancel_order(self, order_id: str) -> None: ...

    def amend_order(self, order_id: str, price: Any = None, qty: Any = None) -> None: ...

    def record_error(self, exc: BaseException, event: Event | None = None, where: str = "") -> None: ...

    def quarantine(self, reason: str) -> None: ...

    def note_gap(self, gap: Gap) -> None:
        """The host delivered ``gap``: count what the venue says was missed."""


#: A slot's trades as the bus delivers them one at a time in the publishing task
#: (``StrategyHost.trade_nowait``): ``(ctx, on_trade, slot)``. The bus does what the
#: host's loop does for a trade: ``ctx.last_price``, ``on_trade(ctx, trade)``, an
#: exception to ``slot.record_error``. A plain tuple: it is unpacked once per event.
TradeTarget: TypeAlias = tuple[Any, Callable[[Any, Any], object], SlotPort]


class EngineHooks(Protocol):
    """The runner as a slot sees it: where orders go, what it reports, what it may read."""

    clock: Clock
    portfolio: Portfolio

    @property
    def published(self) -> int:
        """Every event (market and order) that went through the engine so far."""

    @property
    def market_events(self) -> int:
        """Market events published so far."""

    def requests_for(self, origin: RequestPolicy | None) -> StrategyRequests:
        """The request API for strategies of ``origin`` (None: the operator's own Python code)."""

    def submit(self, order: Order) -> None: ...

    def cancel(self, slot: int, order_id: str) -> None: ...

    def amend(self, slot: int, order_id: str, price: Decimal | None, qty: Decimal | None) -> None: ...

    def progress(self) -> None:
        """Something a ``wait_idle`` may be waiting for happened."""

    def strategy_error(self, slot: int, message: str) -> None: ...

    def quarantined(self, slot: int, reason: str) -> None:
        """The slot stopped receiving events: its open orders and position are the engine's to settle."""

    def swapped(self, slot: int, report: SwapReport, old: StrategyInfo, new: StrategyInfo) -> None: ...

    def recent_events(self, watch: frozenset[str], warmup: int | float) -> list[Event]:
        """The newest published market events of these symbols, for a warm-up."""
