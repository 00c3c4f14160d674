"""Keeping what each connection carries in step with the symbols the session wants.

``Subscriptions`` holds the session-wide side: the desired symbols, which
shard (connection) carries each (``ShardMap``, within the streams a
connection may carry), the ones the venue refused (retried per symbol with
capped backoff), the ones to send alone after a multi-symbol request was
refused, and book resyncs due. ``LiveSubscriptions`` is one connection's
side: what the venue confirmed on it and the requests still unanswered. A
connection's control loop sends what it takes (chunked within the venue's
limits, spaced by ``control_interval``) for its live set to match its
shard's symbols.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import attrs
import trio

from ._backoff import Backoff
from ._options import SessionOptions
from ._report import Reporter
from ._shards import Shard, ShardMap
from ._venue import Venue, WireOp

log = logging.getLogger("flox_trio.connectors")

#: A request's purpose: the resync pair re-subscribes a book topic for a fresh snapshot.
RequestOp = Literal["subscribe", "unsubscribe", "resync-unsubscribe", "resync-subscribe"]
_WIRE_OP: dict[RequestOp, WireOp] = {
    "subscribe": "subscribe", "unsubscribe": "unsubscribe",
    "resync-unsubscribe": "unsubscribe", "resync-subscribe": "subscribe",
}

SendFn = Callable[[str], Awaitable[bool]]


@attrs.define(eq=False)
class _Request:
    op: RequestOp
    symbols: tuple[str, ...]
    topics: tuple[str, ...]
    sent_at: float


@attrs.define(eq=False)
class _Retry:
    backoff: Backoff
    retry_at: float = 0.0
    last_error: str = ""


class LiveSubscriptions:
    """One connection's subscriptions: confirmed (``live``) and asked for (``pending``)."""

    __slots__ = ("_manager", "connection_id", "live", "next_control_at", "pending", "shard", "wake")

    def __init__(self, manager: Subscriptions, connection_id: int, initial: frozenset[str], shard: Shard) -> None:
        self._manager = manager
        self.connection_id = connection_id
        self.shard = shard
        #: Symbols the venue confirmed on this connection (the URL's own count as confirmed).
        self.live: set[str] = set(initial)
        self.pending: dict[str, _Request] = {}
        self.wake = trio.Event()
        self.next_control_at = -math.inf

    def poke(self) -> None:
        self.wake.set()

    def reply(self, req_id: str | None, ok: bool, error: str, *, op_hint: WireOp | None = None) -> None:
        self._manager.on_reply(self, req_id, ok, error, op_hint)

    async def serve(self, send: SendFn) -> None:
        """The connection's control loop: reconcile, then wait for a change or a deadline."""
        while True:
            wake = self.wake = trio.Event()
            deadline = await self._manager.reconcile(self, send)
            with trio.move_on_at(deadline):
                await wake.wait()


class Subscriptions:
    """The session's desired symbols and how far each connection is from them."""

    def __init__(self, venue: Venue, options: SessionOptions, reporter: Reporter,
                 backoff: Callable[[float, float], Backoff], symbols: tuple[str, ...], cap: int) -> None:
        self._venue = venue
        self._options = options
        self._reporter = reporter
        self._backoff = backoff
        #: What the session subscribes: its own symbols and what the slots watch.
        self.desired: frozenset[str] = frozenset(symbols)
        self._failing: dict[str, _Retry] = {}
        self._solo: set[str] = set()
        self._resync_due: dict[str, float] = {}
        self._req_ids = itertools.count(1)
        self._open: set[LiveSubscriptions] = set()
        #: Which connection carries which symbols, ``cap`` streams at most each.
        self.shards = ShardMap(cap, lambda s: len(venue.topics(s)))
        self._shards_event = trio.Event()

    # --- the desired set --------------------------------------------------------------------

    def begin(self, desired: frozenset[str]) -> None:
        """Start from nothing, so the venue builds its per-symbol state for every symbol."""
        self.desired = frozenset()
        self.set_desired(desired)

    def set_desired(self, desired: frozenset[str]) -> None:
        old = self.desired
        added, removed = desired - old, old - desired
        self.desired = desired
        self._venue.symbols_changed(added, removed)
        for s in removed:
            self._failing.pop(s, None)
            self._solo.discard(s)
            self._resync_due.pop(s, None)
        if self.shards.update(desired):
            self._shards_event.set()
            self._shards_event = trio.Event()
        if added or removed:
            log.info("%s: subscriptions now %d symbols on %d connections (added %s, removed %s)",
                     self._reporter.venue, len(desired), len(self.shards.shards), _few(added), _few(removed))
        self._poke_all()

    async def wait_new_shard(self) -> None:
        """Return once the symbols needed another shard (connection)."""
        await self._shards_event.wait()

    def subscribable(self, shard: Shard) -> frozenset[str]:
        """The shard's symbols not waiting out a retry delay."""
        now = trio.current_time()
        return frozenset(s for s in shard.symbols
                         if (r := self._failing.get(s)) is None or r.retry_at <= now)

    @property
    def failing(self) -> dict[str, str]:
        return {s: r.last_error for s, r in self._failing.items()}

    def request_resync(self, symbol: str) -> None:
        self._resync_due[symbol] = trio.current_time()
        self._poke_all()

    def connection_lost(self, shard: Shard) -> None:
        # The shard's next connection subscribes afresh, which resyncs its books anyway.
        for s in shard.symbols:
            self._resync_due.pop(s, None)

    # --- connections ------------------------------------------------------------------------

    def track(self, live: LiveSubscriptions) -> None:
        """A connection is up: changes of the desired set now reach it."""
        self._open.add(live)

    def untrack(self, live: LiveSubscriptions) -> None:
        self._open.discard(live)

    def _poke_all(self) -> None:
        for live in self._open:
            live.poke()

    # --- requests ---------------------------------------------------------------------------

    async def reconcile(self, conn: LiveSubscriptions, send: SendFn) -> float:
        """Send what it takes for ``conn`` to match its shard's symbols; return when to look again."""
        opts = self._options
        venue = self._venue
        now = trio.current_time()
        for rid, req in list(conn.pending.items()):
            if now - req.sent_at >= opts.request_timeout:
                del conn.pending[rid]
                self._request_failed(conn, req, f"no reply within {opts.request_timeout:g} s")
        desired = conn.shard.symbols
        subscribing = {s for r in conn.pending.values() if r.op == "subscribe" for s in r.symbols}
        unsubscribing = {s for r in conn.pending.values() if r.op == "unsubscribe" for s in r.symbols}
        resyncing = {s for r in conn.pending.values() if r.op.startswith("resync") for s in r.symbols}
        deadline = math.inf
        remove = sorted(s for s in conn.live if s not in desired and s not in unsubscribing)
        # The shard map keeps each shard within the streams a connection may carry.
        add: list[str] = []
        for s in sorted(desired):
            if s in conn.live or s in subscribing:
                continue
            retry = self._failing.get(s)
            if retry is not None and retry.retry_at > now:
                deadline = min(deadline, retry.retry_at)
                continue
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
            await self._send_request(conn, send, "unsubscribe", chunk)
        for chunk in self._chunks(add):
            await self._send_request(conn, send, "subscribe", chunk)
        for s in resync:
            topics = venue.resync_topics(s)
            await self._send_request(conn, send, "resync-unsubscribe", [s], topics)
            await self._send_request(conn, send, "resync-subscribe", [s], topics)
        for req in conn.pending.values():
            deadline = min(deadline, req.sent_at + opts.request_timeout)
        return deadline

    def _chunks(self, symbols: list[str]) -> list[list[str]]:
        """Symbols grouped into requests of at most the venue's topics per request."""
        chunks: list[list[str]] = []
        cur: list[str] = []
        size = 0
        limit = self._venue.max_topics_per_request
        for s in symbols:
            n = len(self._venue.topics(s))
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

    async def _send_request(self, conn: LiveSubscriptions, send: SendFn, op: RequestOp, symbols: Sequence[str],
                            topics: Sequence[str] | None = None) -> None:
        if topics is None:
            topics = [t for s in symbols for t in self._venue.topics(s)]
        if conn.next_control_at > trio.current_time():
            await trio.sleep_until(conn.next_control_at)
        rid = str(next(self._req_ids))
        conn.pending[rid] = _Request(op, tuple(symbols), tuple(topics), trio.current_time())
        if not await send(self._venue.request_text(_WIRE_OP[op], rid, topics)):
            conn.pending.pop(rid, None)
        conn.next_control_at = trio.current_time() + self._options.control_interval

    def on_reply(self, conn: LiveSubscriptions, req_id: str | None, ok: bool, error: str,
                 op_hint: WireOp | None) -> None:
        """A venue answered a control request (matched by id, else the oldest pending of ``op_hint``)."""
        req = conn.pending.pop(req_id, None) if req_id is not None else None
        if req is None and op_hint is not None:
            for rid, r in conn.pending.items():
                if _WIRE_OP[r.op] == op_hint:
                    req = conn.pending.pop(rid)
                    break
        if req is None:
            if not ok:
                self._reporter.error("venue error reply", error, connection_id=conn.connection_id,
                                     request_id=req_id)
            return
        if ok:
            if req.op == "subscribe":
                conn.live.update(req.symbols)
                for s in req.symbols:
                    self._failing.pop(s, None)
                    self._solo.discard(s)
                self._venue.subscribed(req.symbols)
            elif req.op == "unsubscribe":
                conn.live.difference_update(req.symbols)
        else:
            self._request_failed(conn, req, error)
        conn.poke()

    def _request_failed(self, conn: LiveSubscriptions, req: _Request, error: str) -> None:
        now = trio.current_time()
        info: dict[str, Any] = {"symbols": list(req.symbols), "topics": list(req.topics)}
        cid = conn.connection_id
        if req.op == "subscribe" and len(req.symbols) > 1:
            # One bad symbol sinks the whole request: resend one symbol per request at
            # once, so the others go live and the culprit is named.
            self._solo.update(req.symbols)
            self._reporter.error("subscribe rejected", f"{error}; retrying one symbol per request",
                                 connection_id=cid, **info)
        elif req.op == "subscribe":
            s = req.symbols[0]
            retry = self._failing.get(s)
            if retry is None:
                opts = self._options
                retry = self._failing[s] = _Retry(self._backoff(opts.resubscribe_base, opts.resubscribe_cap))
            delay = retry.backoff.next_delay()
            retry.retry_at = now + delay
            retry.last_error = error
            self._reporter.error("subscribe rejected", f"{error}; retrying in {delay:.3g} s",
                                 connection_id=cid, retry_in=delay, **info)
        elif req.op == "unsubscribe":
            # Frames of symbols nobody wants are dropped anyway; stop asking.
            conn.live.difference_update(req.symbols)
            self._reporter.error("unsubscribe rejected", error, connection_id=cid, **info)
        elif req.op == "resync-subscribe":
            s = req.symbols[0]
            delay = self._options.resubscribe_base
            self._resync_due[s] = now + delay
            self._reporter.error("resubscribe for book resync rejected", f"{error}; retrying in {delay:g} s",
                                 connection_id=cid, **info)
        else:
            log.info("%s: %s %s answered %s (the subscribe that follows resets the book)",
                     self._reporter.venue, req.op, req.topics, error)


def _few(symbols: frozenset[str], limit: int = 10) -> str:
    """Symbols for a log line: a whole market would flood it."""
    shown = sorted(symbols)[:limit]
    more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
    return f"{shown}{more}"
