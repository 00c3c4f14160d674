"""Driving connectors without the runner: a FeedHub that records everything.

The hub is the engine side of a feed (``publish``, ``watched_symbols``,
``connector_event``); the connection side is always a real trio-websocket
server on 127.0.0.1 (the simulator), never a fake.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from flox_trio import Bar, Book, Trade
from flox_trio._core._clock import TrioClock
from flox_trio.connectors import Backoff, Session
from flox_trio.sim import Simulator, open_simulator

# Fast, deterministic timing for tests; every time is virtual (autojump_clock).
FAST = {
    "backoff_base": 0.5,
    "backoff_cap": 8.0,
    "backoff_jitter": 0.0,
    "stale_timeout": 5.0,
    "healthy_after": 10.0,
    "handover_overlap": 1.0,
}


class RecordingHub:
    """The engine as a feed sees it, recording batches and session events with their Trio time."""

    def __init__(self, watched: Sequence[str] = ()) -> None:
        self.batches: list[list[Any]] = []
        self.events: list[Any] = []
        self.reports: list[tuple[float, str, dict[str, Any]]] = []
        self._watched = frozenset(watched)
        self._changed = trio.Event()
        self.clock = TrioClock()

    async def publish(self, events: Sequence[Any]) -> None:
        batch = list(events)
        self.batches.append(batch)
        self.events.extend(batch)
        await trio.lowlevel.checkpoint()

    @property
    def watched_symbols(self) -> frozenset[str]:
        return self._watched

    async def wait_watch_changed(self) -> None:
        await self._changed.wait()

    def watch(self, *symbols: str) -> None:
        self._watched = frozenset(symbols)
        event, self._changed = self._changed, trio.Event()
        event.set()

    def connector_event(self, kind: str, **info: Any) -> None:
        self.reports.append((trio.current_time(), kind, info))

    # --- views ---------------------------------------------------------------------------

    def trades(self, symbol: str | None = None) -> list[Trade]:
        return [e for e in self.events if type(e) is Trade and (symbol is None or e.symbol == symbol)]

    def trade_ids(self, symbol: str) -> list[str]:
        return [t.trade_id for t in self.trades(symbol)]

    def books(self, symbol: str | None = None) -> list[Book]:
        return [e for e in self.events if type(e) is Book and (symbol is None or e.symbol == symbol)]

    def bars(self) -> list[Bar]:
        return [e for e in self.events if type(e) is Bar]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [info for _, k, info in self.reports if k == kind]

    def times(self, kind: str, **match: Any) -> list[float]:
        return [t for t, k, info in self.reports
                if k == kind and all(info.get(key) == v for key, v in match.items())]


async def wait_until(predicate: Callable[[], bool], timeout: float = 120.0, step: float = 0.01) -> None:
    """Poll ``predicate`` on the (virtual) clock; fail the test if it stays false for ``timeout`` s."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(step)
        return
    raise AssertionError(f"condition still false after {timeout} s of Trio time: {predicate}")


@asynccontextmanager
async def running(feed: Session, hub: RecordingHub) -> AsyncIterator[trio.Nursery]:
    """Run ``feed`` against ``hub`` for the block, then cancel it (as the runner would)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run, hub)
        try:
            yield nursery
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[Simulator]:
    options.setdefault("seed", 7)
    options.setdefault("start_ms", 1_700_000_000_000)
    async with open_simulator(**options) as sim:
        yield sim


@asynccontextmanager
async def ws_client(url: str) -> AsyncIterator[WebSocketConnection]:
    """A plain trio-websocket client whose TCP stream is always closed.

    ``open_websocket_url`` leaves the socket open when the server rejects the
    handshake or closes first (trio-websocket 0.12), which ``filterwarnings =
    error`` turns into a failure of whatever test runs next.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"{host}:{port}",
                                          parts.path + (f"?{parts.query}" if parts.query else ""))
            try:
                yield ws
            finally:
                with trio.move_on_after(1.0):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        rejected, _ = group.split(ConnectionRejected)
        if rejected is None:
            raise
        leaf: BaseException = rejected
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
    finally:
        await trio.aclose_forcefully(stream)


def doc_json(text: str) -> Any:
    """A documented message as JSON: ``//`` comments, ``...`` placeholders and trailing commas removed."""
    text = re.sub(r"//[^\n]*", "", text)
    text = "\n".join(line for line in text.splitlines() if line.strip() not in ("...", "...,"))
    text = re.sub(r",(\s*[\]}])", r"\1", text)
    return json.loads(text)


def seq_of(feed: Session, symbol: str) -> int:
    """The sequence number of a connector's book (-1 while it keeps none)."""
    book = feed.book(symbol)
    return book.seq if book is not None else -1


def assert_same_book(client: Any, server: Any) -> None:
    """A connector's L2Book equals the simulator's view of the same book, level for level."""
    bids, asks = client.top(10**6)
    assert client.seq == server.seq
    assert bids == server.bids
    assert asks == server.asks


# --- a venue on its own: what its decoder sees of the session and the connection ------------------


class _Every:
    """A container of every symbol: a link that carries them all."""

    def __contains__(self, symbol: object) -> bool:
        return True


class RecordingLink:
    """The connection a frame came on, as a venue's decoder uses it (``connectors._venue.Link``)."""

    def __init__(self, connection_id: int = 1, symbols: Any = None) -> None:
        self.id = connection_id
        self.symbols = _Every() if symbols is None else symbols
        self.replies: list[tuple[str | None, bool, str, str | None]] = []
        self.pongs = 0
        self.planned: list[str] = []

    def reply(self, req_id: str | None, ok: bool, error: str, *, op_hint: Any = None) -> None:
        self.replies.append((req_id, ok, error, op_hint))

    def pong(self) -> None:
        self.pongs += 1

    def request_planned(self, reason: str) -> None:
        self.planned.append(reason)


class RecordingPort:
    """The session as a venue sees it (``connectors._venue.SessionPort``), recording every call."""

    def __init__(self, wanted: Sequence[str] = (), wall_ns: int = 1_700_000_000_000_000_000) -> None:
        self.wanted = frozenset(wanted)
        self.connection_id: int | None = 1
        self.now_ns = wall_ns
        self.errors: list[tuple[str, str, dict[str, Any]]] = []
        self.gaps: list[tuple[str, str, int, int]] = []
        self.resyncs: list[tuple[str, str, int]] = []
        self.resync_requests: list[str] = []
        self.late_frames = 0
        self.queued: list[list[Any]] = []
        self.refusals: list[tuple[str, str | bytes]] = []
        self.trade_gaps: list[tuple[str, str, int, int]] = []

    def connection_for(self, symbol: str) -> int | None:
        return self.connection_id

    def wall_ns(self) -> int:
        return self.now_ns

    def backoff(self) -> Backoff:
        return Backoff(0.5, 8.0)

    def error(self, what: str, detail: str = "", *, connection_id: int | None = None, **info: Any) -> None:
        self.errors.append((what, detail, info))

    def frame_error(self, link: Any, what: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        self.errors.append((what, f"{exc}", {"frame": msg}))

    def gap(self, symbol: str, channel: str, expected: int, got: int) -> None:
        self.gaps.append((symbol, channel, expected, got))

    def resynced(self, symbol: str, channel: str, seq: int) -> None:
        self.resyncs.append((symbol, channel, seq))

    def late_frame(self) -> None:
        self.late_frames += 1

    def refused(self, link: Any, msg: str | bytes, refusal: Any) -> None:
        self.refusals.append((refusal.reason, msg))

    def trade_gap(self, symbol: str, channel: str, expected: int, got: int) -> None:
        self.trade_gaps.append((symbol, channel, expected, got))

    def request_resync(self, symbol: str) -> None:
        self.resync_requests.append(symbol)

    def queue(self, events: list[Any]) -> None:
        self.queued.append(events)

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()
