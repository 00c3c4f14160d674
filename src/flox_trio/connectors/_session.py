"""What every exchange session shares: the supervisor, one connection's life, subscriptions.

Shape of a running connector (all inside the nursery its ``run()`` owns)::

    run(hub)
    ├── _watch_symbols        hub.watched_symbols ∪ own symbols → self._desired
    ├── _supervise            connect → follow the connection → backoff → reconnect
    ├── _connection_task ×1-2 one per open WebSocket (two only during a planned handover)
    │   ├── _reader           the only task that reads the socket; decodes and publishes
    │   ├── _watchdog         no message for stale_timeout → stop the reader → reconnect
    │   ├── _control_loop     SUBSCRIBE / UNSUBSCRIBE so the live set follows _desired
    │   ├── _keepalive        venue pings (Bybit {"op":"ping"}, optional protocol pings)
    │   └── _age_timer        planned reconnect before the venue's connection lifetime ends
    └── venue tasks           e.g. Binance REST depth snapshots

Invariant that keeps delivery lossless: a connection is only ever torn down
while its reader waits for the network. Other tasks never raise for
connection trouble; they ask the reader to stop (``_stop_connection``), which
cancels it only if it is parked in ``get_message()`` and otherwise lets it
finish publishing first. So a batch is never cancelled half-published because
a connection went away.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from .._core._events import Event, Level, parse_symbol
from .._core._market import L2Book
from .._core._ports import Feed, FeedHub
from .._errors import ConfigError, ConnectorError
from ._backoff import Backoff

log = logging.getLogger("flox_trio.connectors")

_CONNECTION_IDS = itertools.count(1)
_FRAME_EXCERPT = 200


class StaleFeedError(ConnectorError):
    """The venue went quiet: no message (or no pong) within the watchdog timeout."""


class HandshakeRefusedError(ConnectorError):
    """The venue refused the WebSocket handshake with a status that retrying will not fix."""


class RetriesExhaustedError(ConnectorError):
    """``max_retries`` consecutive connection attempts failed."""


# What ends one connection but not the session: the supervisor reconnects.
_TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    StaleFeedError,
)
# Handshake statuses that mean "come back later", not "your URL is wrong".
_RETRYABLE_STATUS = frozenset({408, 418, 425, 429})


def _positive(name: str) -> Any:
    def check(_inst: object, _attr: object, value: float) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"connector option {name} must be a number > 0, got {value!r}")
    return check


def _non_negative(name: str) -> Any:
    def check(_inst: object, _attr: object, value: float) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"connector option {name} must be a number >= 0, got {value!r}")
    return check


def _optional_positive(name: str) -> Any:
    def check(_inst: object, _attr: object, value: float | None) -> None:
        if value is not None:
            _positive(name)(_inst, _attr, value)
    return check


@attrs.define(kw_only=True)
class SessionOptions:
    """Tuning knobs of a connector, passed as keyword arguments (``Binance(..., stale_timeout=10)``).

    Times are seconds on the Trio clock.
    """

    #: Reconnect backoff: ``min(backoff_cap, backoff_base * 2**n)`` times a jitter factor in ``[1-j, 1]``.
    backoff_base: float = attrs.field(default=0.5, validator=_positive("backoff_base"))
    backoff_cap: float = attrs.field(default=30.0, validator=_positive("backoff_cap"))
    backoff_jitter: float = attrs.field(default=0.5, validator=_non_negative("backoff_jitter"))
    #: A connection that lived this long resets the backoff.
    healthy_after: float = attrs.field(default=30.0, validator=_non_negative("healthy_after"))
    #: Give up (raise) after this many consecutive failed attempts; None retries forever.
    max_retries: int | None = attrs.field(default=None, validator=_optional_positive("max_retries"))
    #: Watchdog: no message for this long while subscriptions are live → reconnect.
    stale_timeout: float = attrs.field(default=30.0, validator=_positive("stale_timeout"))
    #: Keepalive pings (0 = none); a ping unanswered for pong_timeout → reconnect.
    ping_interval: float = attrs.field(default=0.0, validator=_non_negative("ping_interval"))
    pong_timeout: float = attrs.field(default=10.0, validator=_positive("pong_timeout"))
    connect_timeout: float = attrs.field(default=10.0, validator=_positive("connect_timeout"))
    disconnect_timeout: float = attrs.field(default=5.0, validator=_positive("disconnect_timeout"))
    #: Planned (make-before-break) reconnect after this long; None = never.
    max_connection_age: float | None = attrs.field(default=None, validator=_optional_positive("max_connection_age"))
    #: During a planned reconnect the old connection is read this long after the new one is up.
    handover_overlap: float = attrs.field(default=2.0, validator=_non_negative("handover_overlap"))
    #: A SUBSCRIBE/UNSUBSCRIBE (or REST snapshot) without an answer after this long has failed.
    request_timeout: float = attrs.field(default=10.0, validator=_positive("request_timeout"))
    #: Retry of a rejected subscription: capped exponential backoff.
    resubscribe_base: float = attrs.field(default=1.0, validator=_positive("resubscribe_base"))
    resubscribe_cap: float = attrs.field(default=300.0, validator=_positive("resubscribe_cap"))
    #: Minimum spacing of control messages on one connection (venue rate limits).
    control_interval: float = attrs.field(default=0.0, validator=_non_negative("control_interval"))
    #: Levels per side in published Book events.
    book_depth: int = attrs.field(default=20, validator=_positive("book_depth"))
    #: Binance: levels requested in the REST depth snapshot.
    snapshot_limit: int = attrs.field(default=1000, validator=_positive("snapshot_limit"))
    #: Binance: "ms" or "us" (the timeUnit=MICROSECOND stream parameter).
    time_unit: str = "ms"
    message_queue_size: int = attrs.field(default=256, validator=_positive("message_queue_size"))
    max_message_size: int = attrs.field(default=4 * 2**20, validator=_positive("max_message_size"))
    receive_buffer_size: int = attrs.field(default=64 * 2**10, validator=_positive("receive_buffer_size"))
    ssl_context: ssl.SSLContext | None = None
    #: Source of jitter; pass random.Random(seed) for reproducible delays.
    rng: random.Random | None = None

    def __attrs_post_init__(self) -> None:
        if self.backoff_cap < self.backoff_base:
            raise ConfigError(
                f"connector option backoff_cap ({self.backoff_cap}) must be >= backoff_base ({self.backoff_base})"
            )
        if self.backoff_jitter > 1:
            raise ConfigError(f"connector option backoff_jitter must be within [0, 1], got {self.backoff_jitter}")
        if self.time_unit not in ("ms", "us"):
            raise ConfigError(f"connector option time_unit must be 'ms' or 'us', got {self.time_unit!r}")
        for name in ("book_depth", "snapshot_limit", "message_queue_size", "max_message_size",
                     "receive_buffer_size"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"connector option {name} must be an int, got {getattr(self, name)!r}")


_OPTION_NAMES = frozenset(a.name for a in attrs.fields(SessionOptions))


def make_options(venue: str, given: dict[str, Any], defaults: dict[str, Any], venue_only: Iterable[str] = ()) -> SessionOptions:
    """Build options from a venue's defaults and the caller's keywords, refusing typos by name."""
    others = {"snapshot_limit", "time_unit"} - set(venue_only)
    unknown = sorted(k for k in given if k not in _OPTION_NAMES or k in others)
    if unknown:
        valid = ", ".join(sorted(_OPTION_NAMES - others))
        raise ConfigError(f"{venue} connector: unknown option(s) {', '.join(unknown)}; valid options are {valid}")
    return SessionOptions(**{**defaults, **given})


@attrs.define(eq=False)
class _Request:
    op: str  # "subscribe" | "unsubscribe" | "resync-unsubscribe" | "resync-subscribe"
    symbols: tuple[str, ...]
    topics: tuple[str, ...]
    sent_at: float


@attrs.define(eq=False)
class _Retry:
    backoff: Backoff
    retry_at: float = 0.0
    last_error: str = ""


class _Connection:
    """One WebSocket connection and everything scoped to it."""

    def __init__(self, url: str, initial: frozenset[str], hold: bool) -> None:
        self.id = next(_CONNECTION_IDS)
        self.url = url
        self.initial = initial
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.started = False
        self.opened_at = 0.0
        self.ended_at = 0.0
        self.idle_since = 0.0
        self.busy = False
        self.messages = 0
        self.ended = trio.Event()
        self.wake = trio.Event()
        self.planned: str | None = None
        self.error: BaseException | None = None
        self.stopping = False
        self.stop_reason: BaseException | None = None
        self.recv_scope: trio.CancelScope | None = None
        self.abort_scope = trio.CancelScope()
        # Messages read but not processed yet: set while a planned successor waits for the
        # old connection to finish delivering.
        self.held: deque[tuple[str | bytes, int]] | None = deque() if hold else None
        self.live: set[str] = set()
        self.pending: dict[str, _Request] = {}
        self.control_wake = trio.Event()
        self.next_control_at = -math.inf
        self.ping_sent_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def poke(self) -> None:
        self.control_wake.set()


class Session(Feed):
    """Base of the exchange connectors; a venue subclass supplies the wire protocol."""

    venue: ClassVar[str] = ""
    #: Topics per SUBSCRIBE request.
    max_topics_per_request: ClassVar[int] = 200
    #: Topics one connection may carry.
    max_topics_per_connection: ClassVar[int] = 1024
    finite = False

    def __init__(self, symbols: Sequence[str] | str, ws_url: str, options: SessionOptions) -> None:
        if isinstance(symbols, str):
            symbols = [symbols]
        own: list[str] = []
        for text in symbols:
            ref = parse_symbol(text)
            if ref.venue and ref.venue != self.venue:
                raise ConfigError(
                    f"{type(self).__name__} got symbol {text!r} of venue {ref.venue!r}: give it plain "
                    f"symbols like 'BTCUSDT' or '{self.venue}:BTCUSDT'"
                )
            if ref.symbol not in own:
                own.append(ref.symbol)
        if not ws_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"{type(self).__name__} ws_url must start with ws:// or wss://, got {ws_url!r}")
        self.symbols = tuple(own)
        self.ws_url = ws_url.rstrip("/")
        self.options = options
        self._rng = options.rng if options.rng is not None else random.Random()
        #: "idle" (nothing to subscribe), "connecting", "connected", "backoff", "stopped".
        self.state = "idle"
        #: Identity of the connection now serving data; changes on every new connection.
        self.connection_id: int | None = None
        #: WebSocket handshakes that succeeded (planned handovers included).
        self.connect_count = 0
        #: Per-symbol book states of the venue (each has ``.book`` and ``.synced``).
        self._books: dict[str, Any] = {}
        self.messages = 0
        self.gaps = 0
        self.resyncs = 0
        self.errors = 0
        self.late_frames = 0
        self.last_error: str | None = None
        self._hub: FeedHub | None = None
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._conn: _Connection | None = None
        self._connections: set[_Connection] = set()
        self._desired: frozenset[str] = frozenset(self.symbols)
        self._desired_event = trio.Event()
        self._failing: dict[str, _Retry] = {}
        self._solo: set[str] = set()
        self._resync_due: dict[str, float] = {}
        self._over_capacity: set[str] = set()
        self._last_msg_at: float | None = None
        self._out: deque[list[Event]] = deque()
        self._flushing = False
        self._flush_waiters = 0
        self._flush_done = trio.Event()
        self._req_ids = itertools.count(1)

    # --- venue hooks ----------------------------------------------------------------------

    def _connect_url(self, symbols: frozenset[str]) -> tuple[str, frozenset[str]]:
        """The URL to open and the symbols it subscribes by itself (none by default)."""
        return self.ws_url, frozenset()

    def _topics(self, symbol: str) -> list[str]:
        raise NotImplementedError

    def _resync_topics(self, symbol: str) -> list[str]:
        return []

    def _request_text(self, op: str, req_id: str, topics: Sequence[str]) -> str:
        raise NotImplementedError

    def _decode(self, conn: _Connection, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        raise NotImplementedError

    def _on_desired_changed(self, added: frozenset[str], removed: frozenset[str]) -> None:
        """Build routes and per-symbol state for ``added``; drop them for ``removed``."""

    def _on_connection_lost(self, conn: _Connection) -> None:
        """The connection that served data is gone (state that cannot survive that is reset)."""

    def _on_handover(self) -> None:
        """A planned successor takes over; frames it repeats from the old connection must be dropped."""

    async def _enter(self, stack: AsyncExitStack) -> None:
        """Open session-wide resources (an HTTP client, say) that live as long as ``run()``."""

    async def _keepalive(self, conn: _Connection) -> None:
        """Default keepalive: protocol pings every ``ping_interval`` if set."""
        opts = self.options
        if not opts.ping_interval or conn.ws is None:
            return
        while True:
            await trio.sleep(opts.ping_interval)
            with trio.move_on_after(opts.pong_timeout) as scope:
                try:
                    await conn.ws.ping()
                except ConnectionClosed:
                    return  # the reader sees the close
            if scope.cancelled_caught and not conn.busy:
                self._stop_connection(conn, StaleFeedError(
                    f"{self.venue}: no pong within {opts.pong_timeout:g} s on connection {conn.id}"))
                return

    # --- public face ---------------------------------------------------------------------------

    @property
    def last_message_age(self) -> float | None:
        """Seconds since the last message from the venue (any connection), None before the first."""
        if self._last_msg_at is None:
            return None
        try:
            return max(0.0, trio.current_time() - self._last_msg_at)
        except RuntimeError:  # asked from outside Trio
            return None

    @property
    def subscribed(self) -> frozenset[str]:
        """Symbols the venue confirmed on the connection now serving data."""
        return frozenset(self._conn.live) if self._conn is not None else frozenset()

    @property
    def wanted(self) -> frozenset[str]:
        """Symbols the session tries to subscribe: its own plus what the slots watch."""
        return self._desired

    @property
    def failing(self) -> dict[str, str]:
        """Symbols whose subscription the venue refused, with the last error (retried with backoff)."""
        return {s: r.last_error for s, r in self._failing.items()}

    def _load_object(self, conn: Any, msg: str | bytes) -> dict[str, Any] | None:
        """A frame decoded as a JSON object, or None after reporting why it is not one."""
        try:
            frame = orjson.loads(msg)
        except orjson.JSONDecodeError as exc:
            self._frame_error(conn, "malformed frame (not JSON)", msg, exc)
            return None
        if type(frame) is not dict:
            self._frame_error(conn, "unknown frame (not a JSON object)", msg)
            return None
        return frame

    # --- books (each venue keeps a state per symbol with ``.book`` and ``.synced``) -----------

    def book(self, symbol: str) -> L2Book | None:
        """The maintained depth book of ``symbol``, None if the connector keeps none for it."""
        st = self._books.get(symbol.upper())
        return st.book if st is not None else None

    def book_synced(self, symbol: str) -> bool:
        """True while ``symbol``'s book is in step with the venue (False during a resync)."""
        st = self._books.get(symbol.upper())
        return st is not None and st.synced

    def status(self) -> dict[str, Any]:
        return {
            "channels": list(getattr(self, "channels", ())),
            "books": {s: {"synced": st.synced, "seq": st.book.seq, "levels": st.book.depth()}
                      for s, st in sorted(self._books.items())},
            "feed": type(self).__name__,
            "venue": self.venue,
            "url": self.ws_url,
            "state": self.state,
            "connection_id": self.connection_id,
            "connect_count": self.connect_count,
            "symbols": sorted(self._desired),
            "subscribed": sorted(self.subscribed),
            "failing": self.failing,
            "last_message_age": self.last_message_age,
            "messages": self.messages,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "errors": self.errors,
            "late_frames": self.late_frames,
            "last_error": self.last_error,
        }

    async def run(self, hub: FeedHub) -> None:
        if self._running:
            raise ConnectorError(f"{type(self).__name__} is already running: one run() per connector object")
        self._running = True
        self._hub = hub
        fatal: ConnectorError | None = None
        try:
            async with AsyncExitStack() as stack:
                await self._enter(stack)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    # From empty, so the venue builds its per-symbol state for all of them.
                    self._desired = frozenset()
                    self._set_desired(frozenset(self.symbols) | frozenset(hub.watched_symbols))
                    nursery.start_soon(self._watch_symbols, hub)
                    try:
                        await self._supervise(nursery)
                    except (HandshakeRefusedError, RetriesExhaustedError) as exc:
                        # Raised after the nursery closes, so the caller gets the error
                        # itself rather than a group around it.
                        fatal = exc
                        nursery.cancel_scope.cancel(reason=str(exc))
            if fatal is not None:
                raise fatal
        finally:
            self.state = "stopped"
            self._conn = None
            self._connections.clear()
            self._running = False

    # --- reporting -------------------------------------------------------------------------------

    def _report(self, kind: str, **info: Any) -> None:
        if self._hub is not None:
            self._hub.connector_event(kind, venue=self.venue, **info)

    def _report_error(self, conn: _Connection | None, what: str, detail: str = "", **info: Any) -> None:
        self.errors += 1
        self.last_error = f"{what}: {detail}" if detail else what
        cid = conn.id if conn is not None else None
        log.warning("%s connection %s: %s%s", self.venue, cid, what, f" ({detail})" if detail else "")
        self._report("error", what=what, detail=detail, connection_id=cid, **info)

    def _frame_error(self, conn: _Connection, what: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
        excerpt = text if len(text) <= _FRAME_EXCERPT else text[:_FRAME_EXCERPT] + "…"
        detail = f"{type(exc).__name__}: {exc}; " if exc is not None else ""
        self._report_error(conn, what, f"{detail}frame {excerpt!r}; frame skipped, session continues",
                           frame=excerpt)

    # --- publishing --------------------------------------------------------------------------------

    async def _emit(self, events: list[Event]) -> None:
        """Publish one frame's events as one batch, in the order batches were produced.

        The reader and a venue's resync task may both publish; batches queue in
        ``_out`` in production order and whoever holds the flush publishes them,
        so a late book snapshot can never overtake a newer delta.
        """
        if not self._flushing and not self._out and self._hub is not None:
            # Fast path, the usual case: nobody else is publishing.
            self._flushing = True
            try:
                await self._hub.publish(events)
            finally:
                self._flushing = False
                if self._flush_waiters or self._out:
                    done, self._flush_done = self._flush_done, trio.Event()
                    done.set()
            if self._out:
                await self._flush()
            return
        self._out.append(events)
        await self._flush()

    async def _flush(self) -> None:
        while self._flushing:
            self._flush_waiters += 1
            try:
                await self._flush_done.wait()
            finally:
                self._flush_waiters -= 1
        if not self._out or self._hub is None:
            return
        self._flushing = True
        out, publish = self._out, self._hub.publish
        try:
            while out:
                await publish(out.popleft())
        finally:
            self._flushing = False
            if self._flush_waiters:
                done, self._flush_done = self._flush_done, trio.Event()
                done.set()

    # --- symbols ----------------------------------------------------------------------------------------

    async def _watch_symbols(self, hub: FeedHub) -> None:
        while True:
            await hub.wait_watch_changed()
            self._set_desired(frozenset(self.symbols) | frozenset(hub.watched_symbols))

    def _set_desired(self, desired: frozenset[str]) -> None:
        old = self._desired
        added, removed = desired - old, old - desired
        self._desired = desired
        self._on_desired_changed(added, removed)
        for s in removed:
            self._failing.pop(s, None)
            self._solo.discard(s)
            self._resync_due.pop(s, None)
            self._over_capacity.discard(s)
        if added or removed:
            log.info("%s: subscriptions now %s (added %s, removed %s)", self.venue, sorted(desired),
                     sorted(added), sorted(removed))
        for conn in self._connections:
            conn.poke()
        if desired:
            self._desired_event.set()

    async def _wait_desired(self) -> None:
        self._desired_event = trio.Event()
        if not self._desired:
            await self._desired_event.wait()

    def _subscribable(self) -> frozenset[str]:
        now = trio.current_time()
        return frozenset(s for s in self._desired
                         if (r := self._failing.get(s)) is None or r.retry_at <= now)

    # --- the supervisor --------------------------------------------------------------------------------

    async def _supervise(self, nursery: trio.Nursery) -> None:
        opts = self.options
        backoff = Backoff(opts.backoff_base, opts.backoff_cap, opts.backoff_jitter, self._rng)
        failures = 0
        while True:
            if not self._desired:
                self.state = "idle"
                await self._wait_desired()
                continue
            self.state = "connecting"
            try:
                conn = await self._open_connection(nursery, hold=False)
            except (HandshakeError, OSError) as exc:
                self._raise_if_fatal(exc)
                failures += 1
                if opts.max_retries is not None and failures > opts.max_retries:
                    raise RetriesExhaustedError(
                        f"{self.venue}: {failures} connection attempts to {self.ws_url} failed in a row "
                        f"(last: {_describe(exc)}); check the URL and the network, or raise max_retries"
                    ) from exc
                delay = backoff.next_delay()
                self._report_error(None, "connect failed", _describe(exc), url=self.ws_url,
                                   attempt=failures, retry_in=delay)
                self.state = "backoff"
                await trio.sleep(delay)
                continue
            self._activate(conn)
            conn = await self._follow(nursery, conn)
            planned = conn.planned is not None
            lived = conn.ended_at - conn.opened_at
            if planned or lived >= opts.healthy_after:
                backoff.reset()
                failures = 0
            if planned:
                self._deactivate(conn, f"planned: {conn.planned}", retry_in=0.0)
                continue
            failures += 1
            delay = backoff.next_delay()
            self._deactivate(conn, _describe(conn.error) if conn.error else "closed", retry_in=delay)
            self.state = "backoff"
            await trio.sleep(delay)

    async def _follow(self, nursery: trio.Nursery, conn: _Connection) -> _Connection:
        """Wait until ``conn`` ends, passing the baton to successors on planned reconnects."""
        while True:
            await conn.wake.wait()
            if conn.planned is not None and not conn.ended.is_set():
                successor = await self._handover(nursery, conn)
                if successor is not None:
                    conn = successor
                    continue
            await conn.ended.wait()
            return conn

    async def _handover(self, nursery: trio.Nursery, old: _Connection) -> _Connection | None:
        """Make before break: open the successor, let the old connection finish, then switch."""
        log.info("%s: planned reconnect of connection %d (%s)", self.venue, old.id, old.planned)
        try:
            new = await self._open_connection(nursery, hold=True)
        except (HandshakeError, OSError) as exc:
            self._raise_if_fatal(exc)
            self._report_error(old, "planned reconnect failed", _describe(exc))
            return None
        # Everything the venue sent on the old connection before the new one was
        # subscribed arrives within about one round trip; after that the new
        # connection carries the same data.
        with trio.move_on_after(self.options.handover_overlap):
            await old.ended.wait()
        self._stop_connection(old, None)
        await old.ended.wait()
        self._deactivate(old, f"planned: {old.planned}", retry_in=0.0, planned=True)
        self._activate(new)
        self._on_handover()
        held = new.held
        assert held is not None
        while held:
            msg, recv_ns = held.popleft()
            events = self._decode(new, msg, recv_ns)
            if events:
                await self._emit(events)
        new.held = None
        return new

    def _raise_if_fatal(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionRejected) and 400 <= exc.status_code < 500 \
                and exc.status_code not in _RETRYABLE_STATUS:
            raise HandshakeRefusedError(
                f"{self.venue} refused the WebSocket handshake at {self.ws_url} with HTTP {exc.status_code}: "
                f"the URL or the stream names are wrong; check ws_url and the channels"
            ) from exc

    def _activate(self, conn: _Connection) -> None:
        self._conn = conn
        self.connection_id = conn.id
        self.state = "connected"

    def _deactivate(self, conn: _Connection, reason: str, *, retry_in: float, planned: bool = False) -> None:
        if self._conn is conn:
            self._conn = None
            if not planned:  # a successor that carries the same streams takes over otherwise
                # The next connection subscribes afresh, which resyncs every book anyway.
                self._resync_due.clear()
                self._on_connection_lost(conn)
        self._report("disconnect", connection_id=conn.id, reason=reason, code=conn.close_code,
                     retry_in=retry_in, planned=planned or conn.planned is not None,
                     lived=round((conn.ended_at or trio.current_time()) - conn.opened_at, 6))
        log.info("%s connection %d closed (%s); reconnecting in %.3f s", self.venue, conn.id, reason, retry_in)

    async def _open_connection(self, nursery: trio.Nursery, *, hold: bool) -> _Connection:
        url, initial = self._connect_url(self._subscribable())
        conn = _Connection(url, initial, hold)
        await nursery.start(self._connection_task, conn)
        self.connect_count += 1
        log.info("%s connection %d open: %s", self.venue, conn.id, _redact(url))
        self._report("connect", connection_id=conn.id, url=_redact(url), connect_count=self.connect_count,
                     planned=hold)
        return conn

    async def _connection_task(self, conn: _Connection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.options
        stream: trio.abc.Stream | None = None
        try:
            # Cancelled when the venue went silent: a close handshake it will not answer
            # would only delay the reconnect by disconnect_timeout.
            with conn.abort_scope:
                # The TCP stream is ours, not trio-websocket's: its open_websocket() leaves
                # the socket open after a rejected handshake or an abnormal closure (1006).
                async with trio.open_nursery() as ws_nursery:
                    host, port, resource, ssl_context = _split_url(conn.url, opts.ssl_context)
                    try:
                        with trio.fail_after(opts.connect_timeout):
                            if ssl_context is None:
                                stream = await trio.open_tcp_stream(host, port)
                            else:
                                stream = await trio.open_ssl_over_tcp_stream(
                                    host, port, ssl_context=ssl_context, https_compatible=True)
                            ws = await trio_websocket.wrap_client_stream(
                                ws_nursery, stream, host if port in (80, 443) else f"{host}:{port}", resource,
                                message_queue_size=opts.message_queue_size,
                                max_message_size=opts.max_message_size,
                                receive_buffer_size=opts.receive_buffer_size)
                    except trio.TooSlowError:
                        raise trio_websocket.ConnectionTimeout(
                            f"no WebSocket handshake with {host}:{port} within {opts.connect_timeout:g} s") from None
                    except OSError as exc:
                        raise HandshakeError(f"cannot connect to {host}:{port}: {exc}") from exc
                    conn.ws = ws
                    conn.opened_at = conn.idle_since = trio.current_time()
                    conn.live = set(conn.initial)
                    conn.started = True
                    self._connections.add(conn)
                    task_status.started()
                    try:
                        await self._serve(conn)
                    finally:
                        with trio.move_on_after(opts.disconnect_timeout):
                            await ws.aclose()
                        ws_nursery.cancel_scope.cancel(reason="connection finished")
        except* _TRANSIENT as group:
            # Anything else (a bug, a cancellation) propagates; connection trouble ends
            # this connection only.
            failure = _first_leaf(group)
            if not conn.started:
                raise failure  # nursery.start() hands it to the supervisor, unwrapped
            conn.error = failure
            if isinstance(failure, ConnectionClosed) and failure.reason is not None and conn.close_code is None:
                conn.close_code, conn.close_reason = int(failure.reason.code), failure.reason.reason
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if conn.stop_reason is not None:
                conn.error = conn.stop_reason
            conn.ended_at = trio.current_time()
            self._connections.discard(conn)
            conn.ended.set()
            conn.wake.set()

    async def _serve(self, conn: _Connection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog, conn)
            nursery.start_soon(self._control_loop, conn)
            nursery.start_soon(self._keepalive, conn)
            if self.options.max_connection_age is not None:
                nursery.start_soon(self._age_timer, conn)
            try:
                await self._reader(conn)
            finally:
                nursery.cancel_scope.cancel(reason="connection reader finished")

    # --- one connection's tasks --------------------------------------------------------------------------

    async def _reader(self, conn: _Connection) -> None:
        ws = conn.ws
        assert ws is not None
        decode, emit, clock, now_ns = self._decode, self._emit, trio.current_time, time.time_ns
        with trio.CancelScope() as scope:
            conn.recv_scope = scope
            while not conn.stopping:
                conn.busy = False
                try:
                    msg = await ws.get_message()
                except ConnectionClosed as exc:
                    if exc.reason is not None:
                        conn.close_code, conn.close_reason = int(exc.reason.code), exc.reason.reason
                    raise
                # A stop may have been requested while this message was on its way to
                # us; its cancellation would land in the publish below. Drop the message
                # instead: the connection is going away, as if it had arrived a moment later.
                if conn.stopping:
                    break
                conn.busy = True
                self._last_msg_at = clock()
                recv_ns = now_ns()
                conn.messages += 1
                self.messages += 1
                if conn.held is not None:
                    conn.held.append((msg, recv_ns))
                else:
                    events = decode(conn, msg, recv_ns)
                    if events:
                        await emit(events)
                conn.idle_since = clock()
        conn.busy = False
        if conn.stop_reason is not None:
            conn.abort_scope.cancel(reason=str(conn.stop_reason))
            raise conn.stop_reason

    def _stop_connection(self, conn: _Connection, reason: BaseException | None) -> None:
        """Ask the reader to stop at its next wait; ``reason`` (if any) ends the connection as a failure."""
        if conn.stopping:
            return
        conn.stopping = True
        conn.stop_reason = reason
        # Only a reader waiting for the network is cancelled; a busy one (publishing)
        # sees `stopping` when it is done. So a publish is never cut in half.
        if not conn.busy and conn.recv_scope is not None:
            conn.recv_scope.cancel(reason="connection stopped")

    def _request_planned(self, conn: _Connection, reason: str) -> None:
        if conn.planned is None and not conn.stopping:
            conn.planned = reason
            conn.wake.set()

    def _expects_data(self, conn: _Connection) -> bool:
        return bool(conn.live)

    async def _watchdog(self, conn: _Connection) -> None:
        timeout = self.options.stale_timeout
        while True:
            await trio.sleep_until(conn.idle_since + timeout)
            now = trio.current_time()
            # Same expression as the deadline: `now - idle_since < timeout` can disagree
            # with it by a rounding error and spin.
            if now < conn.idle_since + timeout:
                continue
            if conn.busy or not self._expects_data(conn) or conn.held is not None:
                # Publishing under backpressure, nothing subscribed, or a successor
                # parked during a handover: silence here is not staleness.
                conn.idle_since = now
                continue
            self._stop_connection(conn, StaleFeedError(
                f"{self.venue}: no message for {timeout:g} s on connection {conn.id}; reconnecting"))
            return

    async def _age_timer(self, conn: _Connection) -> None:
        assert self.options.max_connection_age is not None
        await trio.sleep(self.options.max_connection_age)
        self._request_planned(conn, f"connection older than {self.options.max_connection_age:g} s")

    async def _send_text(self, conn: _Connection, text: str) -> bool:
        """Send a control message; False if the connection is closing (its reader will notice)."""
        if conn.ws is None:
            return False
        try:
            await conn.ws.send_message(text)
        except ConnectionClosed:
            return False
        return True

    # --- subscriptions --------------------------------------------------------------------------------------

    async def _control_loop(self, conn: _Connection) -> None:
        while True:
            wake = conn.control_wake = trio.Event()
            deadline = await self._reconcile(conn)
            with trio.move_on_at(deadline):
                await wake.wait()

    async def _reconcile(self, conn: _Connection) -> float:
        """Send what it takes for ``conn``'s subscriptions to match ``_desired``; return when to look again."""
        opts = self.options
        now = trio.current_time()
        for rid, req in list(conn.pending.items()):
            if now - req.sent_at >= opts.request_timeout:
                del conn.pending[rid]
                self._request_failed(conn, req, f"no reply within {opts.request_timeout:g} s")
        desired = self._desired
        subscribing = {s for r in conn.pending.values() if r.op == "subscribe" for s in r.symbols}
        unsubscribing = {s for r in conn.pending.values() if r.op == "unsubscribe" for s in r.symbols}
        resyncing = {s for r in conn.pending.values() if r.op.startswith("resync") for s in r.symbols}
        deadline = math.inf
        remove = sorted(s for s in conn.live if s not in desired and s not in unsubscribing)
        add: list[str] = []
        room = self.max_topics_per_connection - sum(len(self._topics(s)) for s in conn.live | subscribing)
        for s in sorted(desired):
            if s in conn.live or s in subscribing:
                continue
            retry = self._failing.get(s)
            if retry is not None and retry.retry_at > now:
                deadline = min(deadline, retry.retry_at)
                continue
            need = len(self._topics(s))
            if need > room:
                if s not in self._over_capacity:
                    self._over_capacity.add(s)
                    self._report_error(conn, "too many streams for one connection", (
                        f"{s} would exceed {self.max_topics_per_connection} streams; split the symbols "
                        f"across two {type(self).__name__} connectors"), symbols=[s])
                continue
            room -= need
            add.append(s)
        resync: list[str] = []
        for s, due in list(self._resync_due.items()):
            if s not in conn.live or s in resyncing:
                continue
            if due <= now:
                del self._resync_due[s]
                resync.append(s)
            else:
                deadline = min(deadline, due)
        for chunk in self._chunks(remove):
            await self._send_request(conn, "unsubscribe", chunk)
        for chunk in self._chunks(add):
            await self._send_request(conn, "subscribe", chunk)
        for s in resync:
            topics = self._resync_topics(s)
            await self._send_request(conn, "resync-unsubscribe", [s], topics)
            await self._send_request(conn, "resync-subscribe", [s], topics)
        for req in conn.pending.values():
            deadline = min(deadline, req.sent_at + opts.request_timeout)
        return deadline

    def _chunks(self, symbols: list[str]) -> list[list[str]]:
        chunks: list[list[str]] = []
        cur: list[str] = []
        size = 0
        limit = self.max_topics_per_request
        for s in symbols:
            n = len(self._topics(s))
            if s in self._solo:
                chunks.append([s])
                continue
            if cur and size + n > limit:
                chunks.append(cur)
                cur, size = [], 0
            cur.append(s)
            size += n
        if cur:
            chunks.append(cur)
        return chunks

    async def _send_request(self, conn: _Connection, op: str, symbols: Sequence[str],
                            topics: Sequence[str] | None = None) -> None:
        if topics is None:
            topics = [t for s in symbols for t in self._topics(s)]
        if conn.next_control_at > trio.current_time():
            await trio.sleep_until(conn.next_control_at)
        rid = str(next(self._req_ids))
        conn.pending[rid] = _Request(op, tuple(symbols), tuple(topics), trio.current_time())
        wire_op = op.removeprefix("resync-")
        if not await self._send_text(conn, self._request_text(wire_op, rid, topics)):
            conn.pending.pop(rid, None)
        conn.next_control_at = trio.current_time() + self.options.control_interval

    def _on_reply(self, conn: _Connection, req_id: str | None, ok: bool, error: str, *, op_hint: str = "") -> None:
        """A venue answered a control request (matched by id, else the oldest pending of ``op_hint``)."""
        req = conn.pending.pop(req_id, None) if req_id is not None else None
        if req is None and op_hint:
            for rid, r in conn.pending.items():
                if r.op.removeprefix("resync-") == op_hint:
                    req = conn.pending.pop(rid)
                    break
        if req is None:
            if not ok:
                self._report_error(conn, "venue error reply", error, request_id=req_id)
            return
        if ok:
            if req.op == "subscribe":
                conn.live.update(req.symbols)
                for s in req.symbols:
                    self._failing.pop(s, None)
                    self._solo.discard(s)
                self._on_subscribed(req.symbols)
            elif req.op == "unsubscribe":
                conn.live.difference_update(req.symbols)
        else:
            self._request_failed(conn, req, error)
        conn.poke()

    def _on_subscribed(self, symbols: Sequence[str]) -> None:
        """The venue confirmed a subscription of ``symbols``."""

    def _request_failed(self, conn: _Connection, req: _Request, error: str) -> None:
        now = trio.current_time()
        info: dict[str, Any] = {"symbols": list(req.symbols), "topics": list(req.topics)}
        if req.op == "subscribe" and len(req.symbols) > 1:
            # One bad symbol sinks the whole request: resend one symbol per request at
            # once, so the others go live and the culprit is named.
            self._solo.update(req.symbols)
            self._report_error(conn, "subscribe rejected", f"{error}; retrying one symbol per request", **info)
        elif req.op == "subscribe":
            s = req.symbols[0]
            retry = self._failing.get(s)
            if retry is None:
                opts = self.options
                retry = self._failing[s] = _Retry(Backoff(opts.resubscribe_base, opts.resubscribe_cap,
                                                          opts.backoff_jitter, self._rng))
            delay = retry.backoff.next_delay()
            retry.retry_at = now + delay
            retry.last_error = error
            self._report_error(conn, "subscribe rejected", f"{error}; retrying in {delay:.3g} s",
                               retry_in=delay, **info)
        elif req.op == "unsubscribe":
            # Frames of symbols nobody wants are dropped anyway; stop asking.
            conn.live.difference_update(req.symbols)
            self._report_error(conn, "unsubscribe rejected", error, **info)
        elif req.op == "resync-subscribe":
            s = req.symbols[0]
            delay = self.options.resubscribe_base
            self._resync_due[s] = now + delay
            self._report_error(conn, "resubscribe for book resync rejected", f"{error}; retrying in {delay:g} s",
                               **info)
        else:
            log.info("%s: %s %s answered %s (the subscribe that follows resets the book)",
                     self.venue, req.op, req.topics, error)

    def _request_resync(self, symbol: str) -> None:
        """Re-subscribe ``symbol``'s book topics so the venue sends a fresh snapshot."""
        self._resync_due[symbol] = trio.current_time()
        for conn in self._connections:
            conn.poke()


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _split_url(url: str, ssl_context: ssl.SSLContext | None) -> tuple[str, int, str, ssl.SSLContext | None]:
    """``(host, port, resource, ssl context or None)`` of a ws:// or wss:// URL."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"not a WebSocket URL: {url!r} (expected ws://host[:port]/path or wss://...)")
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = (ssl_context or ssl.create_default_context()) if secure else None
    return parts.hostname, parts.port or (443 if secure else 80), resource, context


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        r = exc.reason
        return f"connection closed with code {r.code} ({r.name}){f': {r.reason}' if r.reason else ''}"
    if isinstance(exc, ConnectionRejected):
        return f"handshake rejected with HTTP {exc.status_code}"
    if not str(exc) and exc.__cause__ is not None:
        return f"{type(exc).__name__}: {type(exc.__cause__).__name__}: {exc.__cause__}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _redact(url: str) -> str:
    """URLs in reports: long stream lists shortened."""
    return url if len(url) <= 160 else url[:157] + "…"


def levels(raw: Any) -> list[Level]:
    """``[["price", "qty"], ...]`` as floats; anything else raises (the frame is then malformed)."""
    return [(float(p), float(q)) for p, q in raw]


def as_int(value: Any, name: str) -> int:
    # bool is an int subclass and str * int is repetition: insist on real ints.
    if type(value) is not int:
        raise TypeError(f"field {name!r} must be an integer, got {value!r}")
    return value


def loads(msg: str | bytes) -> Any:
    """Decode a frame; orjson takes str and bytes alike."""
    return orjson.loads(msg)
