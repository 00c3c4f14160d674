"""Strategy hosts: what a slot holds. One host per strategy object and language.

A slot never calls a strategy directly; it asks its host to start, stop and
dispatch a batch. The Python host calls methods; the JavaScript host
(``flox_trio.js``) crosses into QuickJS once per batch. Both obey the same
contract, so a swap works the same whatever the languages on either side.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import inspect
import math
import sys
import weakref
from collections.abc import Callable
from typing import Any

from .._errors import StrategyTypeError
from ._events import Bar, Book, Fill, Gap, OrderUpdate, SymbolRef, Trade
from ._ports import InlineGate, RequestPolicy, SlotPort, TradeTarget
from ._status import StrategyInfo
from ._strategy import Strategy, strategy_symbols


class StrategyHost(abc.ABC):
    """The contract between a slot and one strategy.

    ``dispatch(batch, start)`` delivers ``batch[start:]`` in order and returns
    the index after the last event it delivered. It stops early, right after
    an event, when ``slot.interrupted`` becomes true (a swap or removal was
    requested, or the slot was quarantined): that is what makes a swap land at
    an event boundary. Errors raised by the strategy are reported with
    ``slot.record_error(exc, event)`` and never propagate.
    """

    language: str = "?"
    #: The user-facing strategy object.
    strategy: Any
    symbols: tuple[SymbolRef, ...]
    #: sha256 of the strategy's source: identifies before/after on the tape.
    source_hash: str = ""
    #: Where the strategy came from, e.g. "py_strategies/ema.py:EmaStrategy".
    spec: str = ""
    params: dict[str, Any]
    wants_bars: bool = False
    slot: SlotPort
    #: Where the strategy came from, for the request policy: a loaded script, or
    #: None for Python code (which runs with the engine's own rights anyway).
    origin: RequestPolicy | None = None
    #: ``dispatch`` as a plain call, for a host whose callbacks never await: the bus then
    #: delivers to an idle slot in the publishing task (``Slot.deliver_nowait``). None: never.
    dispatch_nowait: Callable[[list[Any], int], int] | None = None

    def attach(self, slot: SlotPort) -> None:
        """Called when the slot's pointer is set to this host."""
        self.slot = slot

    @functools.cached_property
    def info(self) -> StrategyInfo:
        """Who this strategy is, as the tape records it (and a replay rebuilds it from)."""
        params = {"symbols": [str(s) for s in self.symbols], **jsonable(self.params)}
        return StrategyInfo(self.language, self.spec, self.name, self.source_hash, params, self.source())

    @property
    def name(self) -> str:
        """A short name for people: the class or factory."""
        return type(self.strategy).__name__

    @abc.abstractmethod
    async def start(self) -> None:
        """Run the strategy's on_start; exceptions propagate (the slot decides)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Run the strategy's on_stop; exceptions propagate."""

    @abc.abstractmethod
    async def dispatch(self, batch: list[Any], start: int) -> int:
        """Deliver events from ``batch[start:]``; see the class docstring."""

    def event_nowait(self, slot: SlotPort, gate: InlineGate) -> Callable[[Any], bool] | None:
        """A one-event delivery for the bus's per-event path, or None if this host has none.

        The function delivers one market event and returns False, or returns True
        without delivering it when ``gate.ready`` is false (the event then goes
        through the slot's queue, and so do the slot's later events of that batch).
        """
        return None

    def trade_nowait(self, slot: SlotPort) -> TradeTarget | None:
        """Where the bus's per-event path may hand a trade itself, saving the call of ``event_nowait``'s
        function (see ``TradeTarget``); None: every event goes through that function."""
        return None

    def source(self) -> str | None:
        """The strategy's source text if known (recorded in bundles)."""
        return None

    def describe(self) -> str:
        return f"{self.language} {self.spec or self.name}"


def make_host(obj: Any) -> StrategyHost:
    """The host for a strategy object: Python ``flox.Strategy`` or a JavaScript strategy."""
    if isinstance(obj, StrategyHost):
        return obj
    if isinstance(obj, Strategy):
        return PythonHost(obj)
    factory = getattr(type(obj), "__flox_host__", None)
    if factory is not None:
        host = factory(obj)
        if not isinstance(host, StrategyHost):  # pragma: no cover - misuse by an extension
            raise StrategyTypeError(f"{type(obj).__name__}.__flox_host__ returned {host!r}, not a StrategyHost")
        return host
    raise StrategyTypeError(
        f"{obj!r} is not a strategy: subclass flox_trio.Strategy, or load a JavaScript "
        "strategy with flox_trio.js.load(path).registered"
    )


_CALLBACKS = ("on_start", "on_stop", "on_trade", "on_book", "on_bar", "on_gap", "on_order_update", "on_fill")


class PythonHost(StrategyHost):
    """Hosts a ``flox.Strategy`` subclass instance."""

    language = "python"

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.symbols = strategy_symbols(strategy)
        cls = type(strategy)
        self.params = dict(getattr(strategy, "params", {}) or {})
        module = sys.modules.get(cls.__module__)
        file = getattr(module, "__file__", None)
        self.spec = f"{file or cls.__module__}:{cls.__qualname__}"
        self._source, self.source_hash = _class_source(cls)
        # Resolve each callback once; None means "not overridden", so the hot loop skips it.
        self._cb: dict[str, Callable[..., Any] | None] = {}
        self._async: set[str] = set()
        for name in _CALLBACKS:
            fn = getattr(strategy, name, None)
            if fn is None or getattr(cls, name, None) is getattr(Strategy, name):
                self._cb[name] = None
                continue
            if not callable(fn):
                raise StrategyTypeError(f"{cls.__name__}.{name} is not callable")
            self._cb[name] = fn
            if inspect.iscoroutinefunction(fn):
                self._async.add(name)
        self.wants_bars = self._cb["on_bar"] is not None
        self.is_async = bool(self._async - {"on_start", "on_stop"})
        self.dispatch_nowait = None if self.is_async else self._dispatch_sync

    def source(self) -> str | None:
        return self._source

    async def _call(self, name: str) -> None:
        fn = self._cb[name]
        if fn is None:
            return
        result = fn()
        if name in self._async:
            await result

    async def start(self) -> None:
        await self._call("on_start")

    async def stop(self) -> None:
        await self._call("on_stop")

    async def dispatch(self, batch: list[Any], start: int) -> int:
        if self.is_async:
            return await self._dispatch_async(batch, start)
        return self._dispatch_sync(batch, start)

    def _dispatch_sync(self, batch: list[Any], start: int) -> int:
        # The hot loop: one type test, a ctx update and a call per event.
        slot = self.slot
        ctxs = slot.ctxs
        cb = self._cb
        on_trade, on_book = cb["on_trade"], cb["on_book"]
        if len(ctxs) == 1 and on_trade is not None:
            # One symbol, so one context: the usual slot, and the loop with the least per trade.
            (ctx,) = ctxs.values()
            k = start
            for ev in batch if start == 0 else batch[start:]:
                if ev.__class__ is not Trade:
                    break
                k += 1
                ctx.last_price = ev.price
                try:
                    on_trade(ctx, ev)
                except Exception as exc:
                    slot.record_error(exc, ev)
                if slot.interrupted:
                    return k
            else:
                return k
            start = k  # an event of another kind: the general loop from there
        done = start
        for ev in batch if start == 0 else batch[start:]:
            done += 1
            cls = ev.__class__
            if cls is Trade:
                ctx = ctxs[ev.symbol]
                ctx.last_price = ev.price
                if on_trade is not None:
                    try:
                        on_trade(ctx, ev)
                    except Exception as exc:
                        slot.record_error(exc, ev)
            elif cls is Book:
                ctx = ctxs[ev.symbol]
                if ev.bids:
                    ctx.best_bid = ev.bids[0][0]
                if ev.asks:
                    ctx.best_ask = ev.asks[0][0]
                if on_book is not None:
                    try:
                        on_book(ctx, ev)
                    except Exception as exc:
                        slot.record_error(exc, ev)
            else:
                if cls is Gap:
                    slot.note_gap(ev)
                fn = cb[_OTHER[cls]]
                if fn is not None:
                    try:
                        fn(ctxs[ev.symbol], ev)
                    except Exception as exc:
                        slot.record_error(exc, ev)
            if slot.interrupted:
                break
        return done

    def event_nowait(self, slot: SlotPort, gate: InlineGate) -> Callable[[Any], bool] | None:
        if self.is_async or len(slot.ctxs) != 1:
            return None
        dispatch = self._dispatch_sync

        def on_event(ev: Any) -> bool:
            # A trade seldom comes this way: the bus hands it to trade_nowait's on_trade itself.
            if not gate.ready:
                return True
            gate.inlined += dispatch([ev], 0)
            return False

        return on_event

    def trade_nowait(self, slot: SlotPort) -> TradeTarget | None:
        on_trade = self._cb["on_trade"]
        if self.is_async or len(slot.ctxs) != 1 or on_trade is None:
            return None
        (ctx,) = slot.ctxs.values()
        return ctx, on_trade, slot

    async def _dispatch_async(self, batch: list[Any], start: int) -> int:
        slot = self.slot
        ctxs = slot.ctxs
        cb = self._cb
        is_async = self._async
        done = start
        for ev in batch if start == 0 else batch[start:]:
            done += 1
            cls = ev.__class__
            ctx = ctxs[ev.symbol]
            if cls is Trade:
                ctx.last_price = ev.price
                name = "on_trade"
            elif cls is Book:
                if ev.bids:
                    ctx.best_bid = ev.bids[0][0]
                if ev.asks:
                    ctx.best_ask = ev.asks[0][0]
                name = "on_book"
            else:
                if cls is Gap:
                    slot.note_gap(ev)
                name = _OTHER[cls]
            fn = cb[name]
            if fn is not None:
                try:
                    if name in is_async:
                        await fn(ctx, ev)
                    else:
                        fn(ctx, ev)
                except Exception as exc:
                    slot.record_error(exc, ev)
            if slot.interrupted:
                break
        return done


_OTHER: dict[type, str] = {Bar: "on_bar", Gap: "on_gap", OrderUpdate: "on_order_update", Fill: "on_fill"}


def jsonable(value: Any) -> Any:
    """Parameters as JSON-friendly values for tapes and status (a repr for anything else)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return str(value)


#: Per class, as long as the class lives: a whole market adds a slot per symbol, all of one
#: class, and reading and hashing its module's source each time was a third of
#: ``add_strategy`` (1,000 slots: 82 - 132 ms, 56 without). A reloaded module's class is a new key.
_SOURCES: weakref.WeakKeyDictionary[type, tuple[str, str]] = weakref.WeakKeyDictionary()


def _class_source(cls: type) -> tuple[str, str]:
    """The source of the strategy's module (or class), and its sha256."""
    known = _SOURCES.get(cls)
    if known is None:
        source = _read_class_source(cls)
        known = _SOURCES[cls] = (source, hashlib.sha256(source.encode()).hexdigest())
    return known


def _read_class_source(cls: type) -> str:
    """The source of the strategy's module (or class); falls back to its qualified name."""
    module = sys.modules.get(cls.__module__)
    # A strategy rebuilt from a tape or bundle carries the source it was built from.
    recorded = getattr(module, "__flox_source__", None)
    if isinstance(recorded, str):
        return recorded
    try:
        if module is not None and getattr(module, "__file__", None):
            return inspect.getsource(module)
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}"
