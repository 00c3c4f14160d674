"""A connector: a feed that composes a venue's wire format with the session machinery every venue shares.

Shape of a running connector (all inside the nursery its ``run()`` owns)::

    Session.run(hub)
    ├── Venue.run             venue-wide work (Binance: REST depth snapshots)
    ├── Publisher.run         the one task that publishes into the engine, in production order
    ├── _watch_symbols        hub.watched_symbols ∪ own symbols → Subscriptions.desired
    └── Supervisor.run        a connection per shard of the symbols: read, decode (Venue.decode),
                              queue, reconnect

The parts: ``Supervisor`` (``_supervisor.py``) keeps a connection serving
each shard, ``Subscriptions`` (``_subscriptions.py``) shards the desired
symbols over connections (``_shards.py``, within the venue's streams per
connection) and keeps each connection's subscriptions in step with its
shard, ``Publisher``
(``_publisher.py``) publishes batches in production order from a bounded
backlog, so the reader never waits for the engine, and the venue
(``_binance.py``, ``_bybit.py``) knows the wire. The venue reaches the rest
only through ``_Port``, the ``SessionPort`` below.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .._core._events import Event, parse_symbol
from .._core._market import L2Book
from .._core._ports import Feed, FeedHub
from .._errors import ConfigError, ConnectorError
from ._backoff import Backoff
from ._budget import CONNECT_WINDOW
from ._options import SessionOptions
from ._publisher import Publisher
from ._report import Reporter
from ._status import BookStatus, ConnectionStatus, SessionState, SessionStatus
from ._subscriptions import Subscriptions
from ._supervisor import HandshakeRefusedError, RetriesExhaustedError, Supervisor
from ._venue import Link, RefusedValue, Venue


class Session(Feed):
    """A live feed from one venue: ``Binance`` and ``Bybit`` are sessions holding their venue."""

    finite = False
    stamps_receive_time = True

    def __init__(self, symbols: Sequence[str] | str, venue: Venue, options: SessionOptions) -> None:
        if isinstance(symbols, str):
            symbols = [symbols]
        feed = type(self).__name__
        own: list[str] = []
        for text in symbols:
            ref = parse_symbol(text)
            if ref.venue and ref.venue != venue.name:
                raise ConfigError(
                    f"{feed} got symbol {text!r} of venue {ref.venue!r}: give it plain "
                    f"symbols like 'BTCUSDT' or '{venue.name}:BTCUSDT'"
                )
            if ref.symbol not in own:
                own.append(ref.symbol)
        self.symbols = tuple(own)
        self.options = options
        self._venue = venue
        #: Streams one connection carries: more symbols open more connections.
        self.streams_per_connection = _within(feed, "max_streams_per_connection", options.max_streams_per_connection,
                                              venue.max_topics_per_connection, "streams per connection")
        per_symbol = len(venue.topics("X"))
        if per_symbol > self.streams_per_connection:
            raise ConfigError(
                f"{feed} connector option max_streams_per_connection ({self.streams_per_connection}) must be at "
                f"least the streams of one symbol ({per_symbol}, one per channel)")
        connects = _within(feed, "connect_budget", options.connect_budget, venue.connects_per_window,
                           f"connections per {CONNECT_WINDOW:g} s")
        self._rng = options.rng if options.rng is not None else random.Random()
        self._reporter = Reporter(feed, venue.name)
        self._publisher = Publisher(venue.name, options.max_backlog, self._reporter)
        self._subscriptions = Subscriptions(venue, options, self._reporter, self._new_backoff, self.symbols,
                                            self.streams_per_connection)
        self._supervisor = Supervisor(venue, self._subscriptions, self._publisher, self._reporter, options,
                                      self._reconnect_backoff, connects)
        venue.bind(_Port(self._reporter, self._publisher, self._subscriptions, self._supervisor,
                         self._reconnect_backoff))
        self._running = False

    def _new_backoff(self, base: float, cap: float) -> Backoff:
        return Backoff(base, cap, self.options.backoff_jitter, self._rng)

    def _reconnect_backoff(self) -> Backoff:
        return self._new_backoff(self.options.backoff_base, self.options.backoff_cap)

    # --- public face ---------------------------------------------------------------------------

    @property
    def venue(self) -> str:
        return self._venue.name

    @property
    def ws_url(self) -> str:
        return self._venue.ws_url

    @property
    def channels(self) -> tuple[str, ...]:
        return self._venue.channels

    @property
    def state(self) -> SessionState:
        """"idle" (nothing to subscribe), "connecting", "connected", "backoff", "stopped".

        With several connections, the least ready one's: "connected" once every one is.
        """
        return self._supervisor.state

    @property
    def connection_id(self) -> int | None:
        """Identity of the connection now serving data (the first one's, with several); changes on every new one."""
        return self._supervisor.connection_id

    @property
    def connect_count(self) -> int:
        """WebSocket handshakes that succeeded, all connections together (planned handovers included)."""
        return self._supervisor.connect_count

    @property
    def connections(self) -> int:
        """Connections the session's symbols need: one per ``streams_per_connection`` streams, at least."""
        return len(self._supervisor.shards)

    @property
    def messages(self) -> int:
        return self._supervisor.messages

    @property
    def pending(self) -> int:
        """Events read from the venue and waiting to be published."""
        return self._publisher.pending

    @property
    def published_inline(self) -> int:
        """Batches the engine took in the reader's own call (``Runner.publish_nowait``), not from the
        publishing task: a frame for one idle synchronous slot, with nothing queued before it."""
        return self._publisher.inline

    @property
    def gaps(self) -> int:
        return self._reporter.gaps

    @property
    def resyncs(self) -> int:
        return self._reporter.resyncs

    @property
    def errors(self) -> int:
        return self._reporter.errors

    @property
    def late_frames(self) -> int:
        return self._reporter.late_frames

    @property
    def last_error(self) -> str | None:
        return self._reporter.last_error

    @property
    def last_message_age(self) -> float | None:
        """Seconds since the last message from the venue (any connection), None before the first."""
        last = self._supervisor.last_recv_ns
        if last is None:
            return None
        try:
            return max(0.0, (self._supervisor.clock.wall_ns() - last) / 1e9)
        except RuntimeError:  # asked from outside Trio
            return None

    @property
    def subscribed(self) -> frozenset[str]:
        """Symbols the venue confirmed on the connections now serving data."""
        live: set[str] = set()
        for conn in self._supervisor.serving():
            live |= conn.subs.live
        return frozenset(live)

    @property
    def wanted(self) -> frozenset[str]:
        """Symbols the session tries to subscribe: its own plus what the slots watch."""
        return self._subscriptions.desired

    @property
    def failing(self) -> dict[str, str]:
        """Symbols whose subscription the venue refused, with the last error (retried with backoff)."""
        return self._subscriptions.failing

    def book(self, symbol: str) -> L2Book | None:
        """The maintained depth book of ``symbol``, None if the connector keeps none for it."""
        st = self._venue.books.get(symbol.upper())
        return st.book if st is not None else None

    def book_synced(self, symbol: str) -> bool:
        """True while ``symbol``'s book is in step with the venue (False during a resync)."""
        st = self._venue.books.get(symbol.upper())
        return st is not None and st.synced

    def status(self) -> SessionStatus:
        return SessionStatus(**self._status_fields())

    def _connection_status(self) -> tuple[ConnectionStatus, ...]:
        out = []
        try:
            now_ns: int | None = self._supervisor.clock.wall_ns()
        except RuntimeError:  # asked from outside Trio
            now_ns = None
        for sh in self._supervisor.shards:
            conn = sh.serving
            live = len(conn.subs.live) if conn is not None else 0
            age = None if now_ns is None or sh.last_recv_ns is None else max(0.0, (now_ns - sh.last_recv_ns) / 1e9)
            out.append(ConnectionStatus(shard=sh.index, state=sh.state, connection_id=sh.connection_id,
                                        connect_count=sh.connect_count, symbols=len(sh.symbols), streams=sh.streams,
                                        subscribed=live, messages=sh.messages, last_message_age=age))
        return tuple(out)

    def _status_fields(self) -> dict[str, Any]:
        return {
            "feed": type(self).__name__,
            "published": self._publisher.published,
            "venue": self.venue,
            "url": self.ws_url,
            "channels": self.channels,
            "state": self.state,
            "connection_id": self.connection_id,
            "connect_count": self.connect_count,
            "symbols": tuple(sorted(self.wanted)),
            "subscribed": tuple(sorted(self.subscribed)),
            "failing": self.failing,
            "books": {s: BookStatus(st.synced, st.book.seq, st.book.depth())
                      for s, st in sorted(self._venue.books.items())},
            "last_message_age": self.last_message_age,
            "messages": self.messages,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "errors": self.errors,
            "late_frames": self.late_frames,
            "last_error": self.last_error,
            "refused": dict(self._reporter.refused),
            "missed": dict(self._reporter.missed),
            "dropped": dict(self._publisher.dropped),
            "backlog": self._publisher.pending,
            "backlog_age": self._publisher.backlog_age,
            "streams_per_connection": self.streams_per_connection,
            "connections": self._connection_status(),
            "connects_in_window": self._supervisor.connects.used(),
        }

    async def run(self, hub: FeedHub) -> None:
        if self._running:
            raise ConnectorError(f"{type(self).__name__} is already running: one run() per connector object")
        self._running = True
        self._reporter.attach(hub)
        # A hub of the engine takes a batch in the reader's call when it can (Runner.publish_nowait).
        self._publisher.attach(hub.publish, hub.clock.wall_ns, getattr(hub, "publish_nowait", None))
        fatal: ConnectorError | None = None
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._venue.run)
                await nursery.start(self._publisher.run)
                self._subscriptions.begin(frozenset(self.symbols) | hub.watched_symbols)
                nursery.start_soon(self._watch_symbols, hub)
                try:
                    await self._supervisor.run(hub.clock)
                except (HandshakeRefusedError, RetriesExhaustedError) as exc:
                    # Raised after the nursery closes, so the caller gets the error
                    # itself rather than a group around it.
                    fatal = exc
                    nursery.cancel_scope.cancel(reason=str(exc))
            if fatal is not None:
                raise fatal
        finally:
            self._supervisor.stopped()
            self._running = False

    async def _watch_symbols(self, hub: FeedHub) -> None:
        while True:
            await hub.wait_watch_changed()
            self._subscriptions.set_desired(frozenset(self.symbols) | hub.watched_symbols)


class _Port:
    """The ``SessionPort`` a session gives its venue: reports, resyncs and ordered publishing, nothing else."""

    __slots__ = ("_backoff", "_publisher", "_reporter", "_subscriptions", "_supervisor")

    def __init__(self, reporter: Reporter, publisher: Publisher, subscriptions: Subscriptions,
                 supervisor: Supervisor, backoff: Callable[[], Backoff]) -> None:
        self._reporter = reporter
        self._publisher = publisher
        self._subscriptions = subscriptions
        self._supervisor = supervisor
        self._backoff = backoff

    @property
    def wanted(self) -> frozenset[str]:
        return self._subscriptions.desired

    @property
    def connection_id(self) -> int | None:
        return self._supervisor.connection_id

    def connection_for(self, symbol: str) -> int | None:
        return self._supervisor.connection_for(symbol)

    def wall_ns(self) -> int:
        return self._supervisor.clock.wall_ns()

    def backoff(self) -> Backoff:
        return self._backoff()

    def error(self, what: str, detail: str = "", *, connection_id: int | None = None, **info: Any) -> None:
        self._reporter.error(what, detail, connection_id=connection_id, **info)

    def frame_error(self, link: Link, what: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        self._reporter.frame_error(link.id, what, msg, exc)

    def gap(self, symbol: str, channel: str, expected: int, got: int) -> None:
        self._reporter.gap(symbol, channel, expected, got, self._supervisor.connection_for(symbol))

    def resynced(self, symbol: str, channel: str, seq: int) -> None:
        self._reporter.resync(symbol, channel, seq, self._supervisor.connection_for(symbol))

    def late_frame(self) -> None:
        self._reporter.late_frames += 1

    def refused(self, link: Link, msg: str | bytes, refusal: RefusedValue) -> None:
        self._reporter.refuse(link.id, refusal.counts, msg, str(refusal), refusal.outcome)

    def trade_gap(self, symbol: str, channel: str, expected: int, got: int) -> None:
        self._reporter.trade_gap(symbol, channel, expected, got, self._supervisor.connection_for(symbol))

    def request_resync(self, symbol: str) -> None:
        self._subscriptions.request_resync(symbol)

    def queue(self, events: list[Event]) -> None:
        self._publisher.queue(events, self._supervisor.clock.wall_ns())


def _within(feed: str, option: str, value: int | None, limit: int, what: str) -> int:
    """An option bounded by the venue's own limit; None is the limit itself."""
    if value is None:
        return limit
    if value > limit:
        raise ConfigError(f"{feed} connector option {option} must be at most {limit} (the venue's {what}), "
                          f"got {value}")
    return value
