"""One WebSocket connection of a session: its state, and the ways to end it without losing a batch."""

from __future__ import annotations

import itertools
import ssl
from collections import deque
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from .._errors import ConfigError
from ._shards import Shard
from ._subscriptions import LiveSubscriptions, Subscriptions
from ._venue import WireOp
from ._websocket import MarketSocket

_CONNECTION_IDS = itertools.count(1)


class Connection:
    """One WebSocket connection of a shard and everything scoped to it; the ``Link`` its frames decode against.

    The reader only reads, decodes and queues (``Publisher.queue`` never
    waits), so its one cancellable wait is ``receive()``: that is where
    ``stop()`` cancels it, and a read is always decoded and queued whole. The
    publishing belongs to the session, not to a connection, so tearing a
    connection down never cuts a batch in half.
    """

    def __init__(self, url: str, initial: frozenset[str], subscriptions: Subscriptions, shard: Shard, *,
                 hold: bool) -> None:
        self.id = next(_CONNECTION_IDS)
        self.url = url
        self.shard = shard
        #: The shard's symbols (the same set, kept current): frames of any other symbol are late.
        self.symbols = shard.symbols
        self.subs = LiveSubscriptions(subscriptions, self.id, initial, shard)
        self.ws: MarketSocket | None = None
        self.started = False
        self.opened_at = 0.0
        self.ended_at = 0.0
        #: Trio time of the last sign of life: a message, or the pong of a watchdog ping.
        self.idle_since = 0.0
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
        self.ping_sent_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # --- Link: what the venue's decoder may do ------------------------------------------------

    def reply(self, req_id: str | None, ok: bool, error: str, *, op_hint: WireOp | None = None) -> None:
        self.subs.reply(req_id, ok, error, op_hint=op_hint)

    def pong(self) -> None:
        self.ping_sent_at = None

    def request_planned(self, reason: str) -> None:
        if self.planned is None and not self.stopping:
            self.planned = reason
            self.wake.set()

    # --- ending it ----------------------------------------------------------------------------

    def stop(self, reason: BaseException | None) -> None:
        """Ask the reader to stop at its next wait; ``reason`` (if any) ends the connection as a failure."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        if self.recv_scope is not None:
            self.recv_scope.cancel(reason="connection stopped")

    async def send_text(self, text: str) -> bool:
        """Send a control message; False if the connection is closing (its reader will notice)."""
        if self.ws is None:
            return False
        try:
            await self.ws.send_message(text)
        except ConnectionClosed:
            return False
        return True

    def lived(self) -> float:
        return (self.ended_at or trio.current_time()) - self.opened_at


def split_url(url: str, ssl_context: ssl.SSLContext | None) -> tuple[str, int, str, ssl.SSLContext | None]:
    """``(host, port, resource, ssl context or None)`` of a ws:// or wss:// URL."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"not a WebSocket URL: {url!r} (expected ws://host[:port]/path or wss://...)")
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = (ssl_context or ssl.create_default_context()) if secure else None
    return parts.hostname, parts.port or (443 if secure else 80), resource, context


def describe(exc: BaseException | None) -> str:
    """Why a connection ended, in words for reports."""
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


def redact(url: str) -> str:
    """URLs in reports: long stream lists shortened."""
    return url if len(url) <= 160 else url[:157] + "…"
