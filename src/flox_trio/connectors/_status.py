"""What ``status()`` of a connector returns: frozen snapshots that round-trip through the project converter."""

from __future__ import annotations

from typing import Literal

import attrs

from .._core._status import FeedStatus

#: "idle" (nothing to subscribe), "connecting", "connected", "backoff" (waiting to reconnect), "stopped".
SessionState = Literal["idle", "connecting", "connected", "backoff", "stopped"]


@attrs.frozen
class BookStatus:
    """One maintained book."""

    #: In step with the venue (False while it resyncs).
    synced: bool
    #: The venue's update id the book is at.
    seq: int
    #: Price levels held, (bids, asks).
    levels: tuple[int, int]


@attrs.frozen(kw_only=True)
class ConnectionStatus:
    """One of a session's connections: the shard of its symbols it carries, and how it is doing."""

    #: Its place among the session's connections (0 first; a shard keeps its number).
    shard: int
    state: SessionState
    #: The connection serving the shard now (the last one, between connections).
    connection_id: int | None
    #: WebSocket handshakes of this shard that succeeded, planned handovers included.
    connect_count: int
    #: Symbols assigned to it, the streams they take, and the symbols the venue confirmed on it.
    symbols: int
    streams: int
    subscribed: int
    messages: int
    #: Seconds since its last message, None before the first.
    last_message_age: float | None


@attrs.frozen(kw_only=True)
class SessionStatus(FeedStatus):
    """A connector's session: its connections, subscriptions, books and counters."""

    venue: str
    url: str
    channels: tuple[str, ...]
    state: SessionState
    #: The connection now serving data (the first connection's, with several).
    connection_id: int | None
    #: WebSocket handshakes that succeeded, all connections together, planned handovers included.
    connect_count: int
    #: What the session subscribes: its own symbols and what the slots watch.
    symbols: tuple[str, ...]
    #: What the venue confirmed on the connections serving data.
    subscribed: tuple[str, ...]
    #: Symbols the venue refused, with its last error (retried with backoff).
    failing: dict[str, str]
    books: dict[str, BookStatus]
    #: Seconds since the last message, None before the first.
    last_message_age: float | None
    messages: int
    gaps: int
    resyncs: int
    errors: int
    late_frames: int
    last_error: str | None
    #: Market values refused at the boundary (NaN, inf, <= 0, beyond 1e15), per reason.
    refused: dict[str, int] = attrs.Factory(dict)
    #: Trade ids the venue's consecutive sequence skipped (told to strategies as gaps), per symbol.
    missed: dict[str, int] = attrs.Factory(dict)
    #: Events dropped because the backlog was full (told to strategies as gaps), per symbol.
    dropped: dict[str, int] = attrs.Factory(dict)
    #: Events read from the venue and waiting to be published, and how long the oldest waited (s).
    backlog: int = 0
    backlog_age: float | None = None
    #: Streams one connection carries (``max_streams_per_connection``, else the venue's limit).
    streams_per_connection: int = 0
    #: One per shard of the symbols, in shard order.
    connections: tuple[ConnectionStatus, ...] = ()
    #: Connection attempts in the last 5 minutes (the venues limit them per IP).
    connects_in_window: int = 0


@attrs.frozen(kw_only=True)
class BinanceStatus(SessionStatus):
    """Binance adds its REST depth-snapshot counters."""

    #: Completed REST syncs of a depth book (initial ones included).
    book_syncs: int
    #: Snapshots fetched again because they were older than the first buffered diff.
    stale_snapshots: int
    #: Book resyncs waiting for REST weight budget (or a rate-limit pause) right now.
    resyncs_waiting: int = 0
    #: REST request weight spent in the last minute, of ``rest_weight_budget``.
    rest_weight_used: int = 0
    #: Answers HTTP 429 or 418 (rate limited, banned) to REST requests.
    rate_limited: int = 0
