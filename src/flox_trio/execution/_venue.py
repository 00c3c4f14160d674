"""What the venue executors share: engine client ids, decimals, the order state machine, request slots, connections.

``BinanceExecutor`` and ``BybitExecutor`` both track orders the same way
(``VenueOrders``): statuses only move forward (``new`` → ``accepted`` →
``partially_filled`` → ``filled`` | ``canceled`` | ``rejected``), each change is
emitted once to the owning slot, final orders leave the open set and, past
``history``, the indexes. Client ids are ``flx`` + a 10-character run id + a
separator + the engine's order id, so an order of a previous run names its slot.

Both send requests on one order connection at a time and move it the same way
(``VenueOrders._handover``, make before break): a new connection is opened and
made ready first, new requests go out on it, and the old one is closed once the
requests sent on it are answered.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import secrets
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from .._core._clock import unix_time_ns
from .._core._events import Fill, OrderStatus, OrderUpdate
from .._core._orders import AMENDED, Order, Position, amend_problem, amend_refused, order_update
from .._core._ports import Executor
from .._core._status import ExecutorStatus
from .._errors import ConfigError, FloxError, OrderError, first_leaf

log = logging.getLogger("flox_trio.execution")

_log = logging.getLogger("flox_trio.execution")

#: Our client ids: ``flx`` + a 10-character run id + ``.`` (Binance) or ``_`` (Bybit) + the engine's order id.
_OURS = re.compile(r"flx([0-9a-z]{10})[._](\d+)-(\d+)")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


#: What a venue executor queues for its order connection.
IntentKind = Literal["place", "cancel", "amend"]


def plain(value: Decimal) -> str:
    """A Decimal as a plain decimal string ("0.001", "100"): never an exponent."""
    return f"{value.normalize():f}"


def dec(value: Any) -> Decimal:
    """A venue's decimal string (or number) as an exact, finite Decimal."""
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal: {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return out


def new_run_id() -> str:
    """Ten base-36 characters: the time in milliseconds (sortable, unique across restarts) and two random ones."""
    ms = unix_time_ns() // 1_000_000
    digits = []
    for _ in range(8):
        ms, r = divmod(ms, 36)
        digits.append(_BASE36[r])
    return "".join(reversed(digits)) + "".join(secrets.choice(_BASE36) for _ in range(2))


def parse_client_id(client_id: str) -> tuple[str, int, str] | None:
    """(run id, slot, engine order id) of one of our client ids, None for anyone else's."""
    m = _OURS.fullmatch(client_id)
    if m is None:
        return None
    return m[1], int(m[2]), f"{m[2]}-{m[3]}"


@attrs.frozen(kw_only=True)
class VenueStatus(ExecutorStatus):
    """What a venue executor reports beyond every executor's counts (its subclass adds its settings)."""

    connected: bool
    #: Connected, reconciled, taking intents.
    ready: bool
    connects: int
    reconciliations: int
    #: Orders whose outcome is unknown until the venue tells (engine order ids).
    pending_unknown: tuple[str, ...]
    queued_intents: int
    #: Free balance per asset, as the venue last reported it.
    balances: dict[str, Decimal]
    #: Open venue orders not placed by this engine (client ids), left alone.
    foreign_orders: tuple[str, ...]
    #: Open venue orders of a previous run of this engine, adopted (client ids).
    adopted_orders: tuple[str, ...]
    last_error: str
    #: Connections replaced by a new one without losing the session (make before break).
    handovers: int = 0
    #: Signed position size per symbol, as the venue last reported it (derivatives only; spot holdings
    #: are balances). Account-wide: the slots' own positions are built from their fills.
    venue_positions: dict[str, Decimal] = attrs.field(factory=dict)


class Pending:
    """One request in flight: completes with the venue's response, or a failure."""

    __slots__ = ("done", "failure", "method", "response")

    def __init__(self, method: str) -> None:
        self.method = method
        self.done = trio.Event()
        self.response: dict[str, Any] | None = None
        self.failure = ""


class SessionLost(Exception):
    """A venue connection ended (or was never there) while a request needed it."""


#: What can go wrong opening a connection: a handover that meets one keeps the connection it has.
CONNECT_ERRORS = (OSError, HandshakeError, ConnectionClosed, SessionLost, trio.BrokenResourceError,
                  trio_websocket.DisconnectionTimeout)


def check_max_age(value: float) -> float:
    """``session_max_age`` as a float, or a ``ConfigError`` saying what it must be."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"session_max_age must be a positive number of seconds, got {value!r}")
    return float(value)


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@asynccontextmanager
async def open_websocket(url: str, connect_timeout: float) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket on a TCP (or TLS) stream we own and close forcefully.

    trio-websocket's ``open_websocket`` leaves the socket open after an abnormal closure (1006).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"a WebSocket URL must be ws://... or wss://..., got {url!r}")
    host, secure = parts.hostname, parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream | None = None
    try:
        async with trio.open_nursery() as ws_nursery:
            try:
                with trio.fail_after(connect_timeout):
                    if secure:
                        stream = await trio.open_ssl_over_tcp_stream(
                            host, port, ssl_context=ssl.create_default_context(), https_compatible=True)
                    else:
                        stream = await trio.open_tcp_stream(host, port)
                    ws = await trio_websocket.wrap_client_stream(
                        ws_nursery, stream, host if port in (80, 443) else f"{host}:{port}", resource)
            except trio.TooSlowError:
                raise SessionLost(f"no WebSocket handshake with {host}:{port} within {connect_timeout:g} s") from None
            try:
                yield ws
            finally:
                with trio.move_on_after(1.0):
                    await ws.aclose()
                ws_nursery.cancel_scope.cancel()
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


class Fatal(Exception):
    """Ends a venue executor, not just its session: a key, signature or clock no retry fixes."""

    def __init__(self, error: FloxError) -> None:
        super().__init__(str(error))
        self.error = error


@attrs.frozen
class AmendRequest:
    """One ``amend`` of an order on its way to the venue; ``again`` once sent and its answer lost."""

    price: Decimal | None
    qty: Decimal | None
    again: bool = False

    def changes(self, order: Order) -> bool:
        return ((self.price is not None and self.price != order.price)
                or (self.qty is not None and self.qty != order.qty))

    def applied_to(self, order: Order) -> Order:
        """``order`` as it would be with this change (for the venue's rules)."""
        return attrs.evolve(order, price=self.price if self.price is not None else order.price,
                            qty=self.qty if self.qty is not None else order.qty)


class VenueOrders(Executor):
    """The order state machine and the portfolio views of a venue executor.

    The executor's ``__init__`` sets the attributes annotated here.
    """

    history: int | None
    _orders: dict[str, Order]
    _open: dict[str, Order]
    _by_client: dict[str, Order]
    _client_of: dict[str, str]
    _venue_id: dict[str, Any]
    _by_venue: dict[Any, Order]
    _finished: deque[str]
    _sent: set[str]
    _unknown: dict[str, tuple[str, float]]
    #: Set when an order's outcome becomes unknown; ``unknown_after`` s later the venue is asked.
    _unknown_wake: trio.Event
    unknown_after: float
    _cancel_wanted: set[str]
    #: What each queued amend of an order asks for, in order: one answer per ``amend``.
    _amend_wanted: dict[str, deque[AmendRequest]]
    _positions: dict[tuple[int, str], Position]
    fill_log: deque[Fill]
    _ready: bool
    _ready_event: trio.Event
    _intents: deque[tuple[IntentKind, Order]]
    _fatal: FloxError | None
    reconciliations: int
    last_error: str
    backoff_base: float
    backoff_cap: float
    # The order connection (the one requests go out on) and its replacement (make before break).
    #: How the order connection is named in logs ("Binance WebSocket API").
    connection_name: ClassVar[str]
    connect_timeout: float
    request_timeout: float
    session_max_age: float
    connects: int
    handovers: int
    _ws: WebSocketConnection | None
    _ids: itertools.count[int]
    _pending: dict[str, Pending]
    #: The connection each request in flight went out on (a handover waits for the old one's).
    _sent_on: dict[str, WebSocketConnection]
    _intent_wake: trio.Event
    _session_end: trio.Event
    #: Set to move the session to a new order connection before the current one goes.
    _rotate: trio.Event

    async def _session(self) -> None:
        """One connected session: connect, reconcile, serve until it ends."""
        raise NotImplementedError

    # --- the order connection, and moving it to a new one -------------------------------------------------

    @property
    def _order_url(self) -> str:
        raise NotImplementedError

    async def _read(self, ws: WebSocketConnection) -> None:
        """Read the order connection ``ws`` until it ends; only the current one's end ends the session."""
        raise NotImplementedError

    async def _handshake(self) -> None:
        """Make the current order connection ready for requests (time, logon or auth, subscriptions)."""
        raise NotImplementedError

    async def _leaving(self, old: WebSocketConnection) -> None:
        """A handover's new connection is ready; ``old`` still carries its requests in flight."""

    async def _handed_over(self) -> None:
        """The old connection's requests are answered; it is about to be closed."""

    async def _connection(self, *, task_status: trio.TaskStatus[tuple[WebSocketConnection, trio.CancelScope]]
                          = trio.TASK_STATUS_IGNORED) -> None:
        """One order connection, read until it ends or its scope is cancelled (a handover)."""
        with trio.CancelScope() as scope:
            async with open_websocket(self._order_url, self.connect_timeout) as ws:
                self.connects += 1
                log.info("%s connected (%s)", self.connection_name, self._order_url)
                if self._ws is None:
                    self._ws = ws
                task_status.started((ws, scope))
                await self._read(ws)

    async def _serve(self, nursery: trio.Nursery, scope: trio.CancelScope) -> None:
        """Until the session ends, moving to a new order connection each time ``_rotate`` is set.

        ``scope`` is the current connection's (``_connection`` started in ``nursery``).
        """
        nursery.start_soon(self._age_limit)
        while True:
            async with trio.open_nursery() as wait:
                wait.start_soon(_cancel_on, self._session_end, wait.cancel_scope)
                wait.start_soon(_cancel_on, self._rotate, wait.cancel_scope)
            if self._session_end.is_set():
                return
            scope = await self._handover(nursery, scope)
            nursery.start_soon(self._age_limit)

    async def _age_limit(self) -> None:
        """Move to a fresh connection before the current one reaches ``session_max_age``."""
        ws = self._ws
        await trio.sleep(self.session_max_age)
        if ws is self._ws:
            log.info("%s connection is %.0f s old: moving to a new one", self.connection_name, self.session_max_age)
            self._rotate.set()

    async def _handover(self, nursery: trio.Nursery, old_scope: trio.CancelScope) -> trio.CancelScope:
        """Make before break: a new connection, ready for requests, before the old one is let go.

        New intents wait for the new connection's handshake (a few round trips);
        the old connection is read until the requests sent on it are answered
        (``request_timeout`` at most; what is still unanswered then fails as a
        lost connection would), then closed. Returns the new connection's scope.
        """
        self._rotate = trio.Event()
        old = self._ws
        self._ready = False
        new: WebSocketConnection
        scope: trio.CancelScope
        try:
            new, scope = await nursery.start(self._connection)
        except CONNECT_ERRORS as exc:
            log.warning("%s: a new connection failed (%s); keeping the current one", self.connection_name, exc)
            self._ready = True
            self._intent_wake.set()
            return old_scope
        self._ws = new
        await self._handshake()
        self.handovers += 1
        self._ready = True
        self._intent_wake.set()
        if old is not None and old.closed is None:
            await self._leaving(old)
            with trio.move_on_after(self.request_timeout):
                while any(ws is old for ws in self._sent_on.values()):
                    await trio.sleep(0.01)
        await self._handed_over()
        old_scope.cancel()
        if old is not None:
            self._end_requests("the connection was replaced before the answer", on=old)
        log.info("%s: handed over to a new connection (%d so far)", self.connection_name, self.handovers)
        return scope

    # --- sending intents ---------------------------------------------------------------------------------------

    async def _place(self, order: Order) -> None:
        """Check ``order`` and send it (``SessionLost`` if it could not be sent)."""
        raise NotImplementedError

    async def _send_cancel(self, order: Order) -> None:
        """Send the cancel of ``order`` (``SessionLost`` if it could not be sent)."""
        raise NotImplementedError

    async def _send_amend(self, order: Order) -> None:
        """Send the amend wanted for ``order`` (``SessionLost`` if it could not be sent)."""
        raise NotImplementedError

    async def _send_intents(self) -> None:
        """Send queued intents, in order, while the session takes them.

        Not while a new connection is wanted (``_rotate``): what is sent now
        should go out on the new one, and ``_handover`` wakes this when it is ready.
        """
        while True:
            if not (self._ready and self._intents) or self._rotate.is_set():
                await self._intent_wake.wait()
                self._intent_wake = trio.Event()
                continue
            kind, order = self._intents.popleft()
            try:
                if kind == "place":
                    await self._place(order)
                elif kind == "amend":
                    await self._send_amend(order)
                elif order.is_open:
                    await self._send_cancel(order)
            except SessionLost:
                if not (kind == "place" and order.order_id in self._sent):
                    self._intents.appendleft((kind, order))  # never left: send it on the next session

    # --- amends ---------------------------------------------------------------------------------------------------

    def amend(self, slot: int, order_id: str, price: Decimal | None, qty: Decimal | None) -> None:
        order = self._orders.get(order_id)
        if order is None or order.slot != slot:
            raise OrderError(f"slot {slot} has no order {order_id!r}; ctx.open_orders lists the live ones")
        problem = amend_problem(order, price, qty) or self._amend_rule(order, price, qty)
        if problem is not None:
            self._refuse_amend(order, problem)
            return
        if ("place", order) in self._intents:  # not sent yet: it goes out as amended
            self._amended(order, price if price is not None else order.price,
                          qty if qty is not None else order.qty)
            return
        self._amend_wanted.setdefault(order_id, deque()).append(AmendRequest(price, qty))
        self._intents.append(("amend", order))
        self._intent_wake.set()

    def _amend_rule(self, order: Order, price: Decimal | None, qty: Decimal | None) -> str | None:
        """Why the venue cannot take this amend at all (None: it may)."""
        return None

    def _refuse_amend(self, order: Order, why: str) -> None:
        self._emit(order.slot, amend_refused(order, why, self._clock.wall_ns()))

    def _amended(self, order: Order, price: Decimal | None, qty: Decimal) -> None:
        """The venue (or the queue) says the order is now at ``price`` for ``qty``: say so once, if it changed."""
        if order.order_type != "limit" or not order.is_open or not qty or not price:
            return
        if (price, qty) != (order.price, order.qty):
            order.price, order.qty = price, qty
            if order.order_id in self._sent:
                self._accept(order)
            self._emit(order.slot, order_update(order, AMENDED, self._clock.wall_ns()))

    def _next_amend(self, order: Order) -> AmendRequest | None:
        """The order's next queued amend, if there is one to send (the others are answered here)."""
        changes = self._amend_wanted.get(order.order_id)
        if not changes:
            return None
        change = changes.popleft()
        if not changes:
            del self._amend_wanted[order.order_id]
        problem = amend_problem(order, change.price, change.qty)
        if problem is None and not change.changes(order):
            if change.again:
                return None  # the lost answer's order came with reconciliation: that was the answer
            problem = "the order already has that price and qty"
        if problem is not None:
            self._refuse_amend(order, problem)
            return None
        return change

    def _amend_again(self, order: Order, change: AmendRequest) -> None:
        """Send ``change`` again, first among the order's amends (its answer was lost or it was not sent)."""
        self._amend_wanted.setdefault(order.order_id, deque()).appendleft(attrs.evolve(change, again=True))

    # --- orders whose outcome is unknown ----------------------------------------------------------------------

    def _unknown_outcome(self, order: Order, why: str) -> None:
        """No answer says what became of ``order``: pending until the venue tells (its stream or a query)."""
        if order.is_open and order.status == "new" and order.order_id not in self._venue_id:
            _log.warning("order %s: outcome unknown (%s); pending until the venue tells", order.order_id, why)
            self._unknown[order.order_id] = (why, trio.current_time())
            self._unknown_wake.set()

    async def _query_unknown(self, order: Order) -> None:
        """Ask the venue what became of ``order`` and settle it (placed, or never placed)."""
        raise NotImplementedError

    async def _resolve_unknown(self) -> None:
        """Ask the venue about orders whose outcome is unknown and the account stream has not settled.

        Runs in the session's nursery: the account stream may settle an order first, and
        a session that ends leaves the rest to the next one's reconciliation.
        """
        while True:
            now = trio.current_time()
            due = [oid for oid, (_, since) in self._unknown.items() if now - since >= self.unknown_after]
            for order_id in due:
                order = self._orders.get(order_id)
                if order is not None and order_id in self._unknown:
                    try:
                        await self._query_unknown(order)
                    except (KeyError, TypeError, ValueError) as exc:
                        # The venue's answer, not ours to trust: ask again later, not at once.
                        _log.error("order %s: the venue's answer to a status query is not understood (%s); "
                                   "asking again in %g s", order_id, exc, self.unknown_after)
                        if order_id in self._unknown:
                            self._unknown[order_id] = (self._unknown[order_id][0], trio.current_time())
            pending = [since for _, since in self._unknown.values()]
            wait = max(0.05, min(pending) + self.unknown_after - trio.current_time()) if pending else math.inf
            with trio.move_on_after(wait):
                await self._unknown_wake.wait()
            self._unknown_wake = trio.Event()

    # --- requests on the order connection ------------------------------------------------------------------

    async def _request(self, method: str, frame: Callable[[str], dict[str, Any]],
                       ws: WebSocketConnection | None = None) -> Pending:
        """Send ``frame(request id)`` on ``ws`` (the current connection unless told).

        The returned ``Pending`` completes with the answer (``_answered``) or a failure.
        """
        ws = ws or self._ws
        if ws is None or ws.closed is not None:
            raise SessionLost("not connected")
        rid = f"r{next(self._ids)}"
        p = self._pending[rid] = Pending(method)
        self._sent_on[rid] = ws
        try:
            await ws.send_message(orjson.dumps(frame(rid)).decode())
        except ConnectionClosed:
            self._pending.pop(rid, None)
            self._sent_on.pop(rid, None)
            p.failure = "the connection ended while sending"
            p.done.set()
        return p

    def _answered(self, rid: str, msg: dict[str, Any]) -> bool:
        """The answer ``msg`` to request ``rid``: False when no request of ours waits for it."""
        self._sent_on.pop(rid, None)
        p = self._pending.pop(rid, None)
        if p is None:
            return False
        p.response = msg
        p.done.set()
        return True

    def _end_requests(self, why: str, on: WebSocketConnection | None = None) -> None:
        """Fail the requests in flight (those sent on ``on``, or all): their answers will never come."""
        for rid in [r for r, ws in self._sent_on.items() if on is None or ws is on]:
            self._sent_on.pop(rid, None)
            p = self._pending.pop(rid, None)
            if p is not None:
                p.failure = why
                p.done.set()
        if on is None:
            for p in self._pending.values():
                p.failure = why
                p.done.set()
            self._pending.clear()

    async def _supervise(self, scope: trio.CancelScope, venue: str, transient: tuple[type[BaseException], ...]
                         ) -> None:
        """Run sessions one after another, with capped backoff; a ``Fatal`` ends the executor.

        The backoff starts over after a session that got as far as reconciling.
        """
        failures = 0
        while True:
            reason = "the session ended"
            reconciled = self.reconciliations
            try:
                await self._session()
            except* Fatal as group:
                fatal = first_leaf(group)
                assert isinstance(fatal, Fatal)
                self._fatal = fatal.error
            except* transient as group:
                exc = first_leaf(group)
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.last_error = reason
            if self._fatal is not None:
                self._fail(self._fatal)
                scope.cancel()
                return
            failures = 0 if self.reconciliations > reconciled else failures + 1
            delay = min(self.backoff_cap, self.backoff_base * 2.0 ** min(max(failures - 1, 0), 32))
            log.warning("%s session lost (%s); reconnecting in %.2f s", venue, reason, delay)
            await trio.sleep(delay)

    def _fail(self, error: FloxError) -> None:
        """The executor cannot go on: queued orders are rejected, unknown outcomes are said."""
        self._fatal = error
        self.last_error = str(error)
        log.error("%s", error)
        for kind, order in list(self._intents):
            if kind == "place":
                self._reject(order, f"not sent: {error}")
        self._intents.clear()
        for order_id in list(self._unknown):
            log.error("order %s: outcome unknown, and the session cannot be restored", order_id)

    def _update_event(self, order: Order, status: OrderStatus, reason: str) -> OrderUpdate:
        return OrderUpdate(order.order_id, order.symbol, order.side, order.order_type, status, order.qty,
                           order.filled_qty, order.price, order.avg_fill_price, reason, self._clock.wall_ns(),
                           order.slot, order.venue)

    def _update(self, order: Order) -> None:
        if not order.is_open and self._open.pop(order.order_id, None) is not None:
            self._sent.discard(order.order_id)
            self._unknown.pop(order.order_id, None)
            self._cancel_wanted.discard(order.order_id)
            if self.history is not None:
                self._finished.append(order.order_id)
                while len(self._finished) > self.history:
                    old = self._orders.pop(self._finished.popleft(), None)
                    if old is not None:
                        self._by_client.pop(self._client_of.pop(old.order_id, ""), None)
                        self._by_venue.pop(self._venue_id.pop(old.order_id, -1), None)
        self._emit(order.slot, self._update_event(order, order.status, order.reason))

    def _reject(self, order: Order, reason: str) -> None:
        if not order.is_open:
            return
        order.status = "rejected"
        order.reason = reason
        _log.info("order %s rejected: %s", order.order_id, reason)
        self._update(order)

    def _accept(self, order: Order) -> None:
        if order.status == "new":
            order.status = "accepted"
            self._update(order)

    def _finalize(self, order: Order, status: OrderStatus, reason: str) -> None:
        if not order.is_open:
            return
        if status == "rejected" and order.filled_qty:
            status = "canceled"
        order.status = status
        order.reason = reason
        self._update(order)

    def _settle(self, order: Order) -> None:
        """The venue has told us about ``order``: its outcome is no longer unknown."""
        if self._unknown.pop(order.order_id, None) is not None:
            _log.info("order %s: outcome known again", order.order_id)

    def position(self, slot: int, symbol: str) -> Position:
        key = (slot, symbol)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = Position(symbol)
        return pos

    def positions(self) -> dict[tuple[int, str], Position]:
        return dict(self._positions)

    def open_orders(self, slot: int, symbol: str | None = None) -> list[Order]:
        return [o.copy() for o in self._open.values()
                if o.slot == slot and (symbol is None or o.symbol == symbol)]

    def orders(self) -> list[Order]:
        return [o.copy() for o in self._orders.values()]

    def fill_history(self) -> list[Fill]:
        return list(self.fill_log)

    @property
    def ready(self) -> bool:
        return self._ready

    async def wait_ready(self) -> None:
        """Until the session is connected and reconciled."""
        while not self._ready:
            await self._ready_event.wait()

    @property
    def pending_unknown(self) -> tuple[str, ...]:
        return tuple(self._unknown)

