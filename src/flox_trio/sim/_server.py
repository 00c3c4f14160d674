"""The exchange simulator: Binance and Bybit wire formats on one loopback port.

One TCP listener serves everything. The request head decides: a WebSocket
upgrade goes to trio-websocket (``/stream``, ``/ws`` → Binance; ``/v5/public/*``
→ Bybit), anything else is plain HTTP/1.1 through h11 (the Binance REST
depth snapshot). trio-websocket does the handshake, reads client messages and
answers pings; data goes out through one sender task per connection, which
drains the connection's outbox and writes whatever is queued as one batch of
RFC 6455 text frames. So data, control replies and injected faults leave in
the order they were produced, the simulator can outrun the client it tests,
and the counters record exactly what reached the socket.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._errors import ConfigError
from ._market import (
    BINANCE_INTERVALS,
    BYBIT_INTERVALS,
    DEFAULT_SYMBOLS,
    BookView,
    Kline,
    SimBook,
    SymbolMarket,
    SymbolSpec,
    spec_for,
    view,
)
from ._pacer import Pacer

log = logging.getLogger("flox_trio.sim")

_BINANCE_KINDS = frozenset({"trade", "aggTrade", "bookTicker", "depth", "depth@100ms"})
_BYBIT_DEPTHS = (1, 50, 200, 1000)
_MAX_HEAD = 64 * 1024
_IDS = itertools.count(1)


class _SimStream(trio.abc.HalfCloseableStream):
    """The TCP stream under one client: replays the bytes read to route the request, and can stall."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.prefix = b""
        self.stall_until = -math.inf
        # The sender writes pre-framed batches while trio-websocket writes pongs and
        # close frames: whole writes, one at a time.
        self._lock = trio.StrictFIFOLock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            # A stall holds every outgoing byte (data, pongs, pings, close frames), like a hung server.
            if self.stall_until > trio.current_time():
                await trio.sleep_until(self.stall_until)
            await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Frame:
    """One outgoing message. Generated Binance frames keep their payload so each connection
    can get it in its time unit (``timeUnit=MICROSECOND``), or stamped at send time."""

    __slots__ = ("data", "key", "kind", "raw", "skip", "stamp", "symbol", "text", "trade_ids", "venue")

    def __init__(self, venue: str, key: str, text: str | None, *, data: dict[str, Any] | None = None,
                 raw: str | None = None, kind: str = "other", symbol: str = "",
                 trade_ids: tuple[str, ...] = (), stamp: bool = False) -> None:
        self.venue = venue
        self.key = key
        self.text = text
        self.data = data
        self.raw = raw
        self.kind = kind
        self.symbol = symbol
        self.trade_ids = trade_ids
        self.stamp = stamp
        self.skip = False

    def render(self, conn: SimConnection) -> str:
        if self.data is not None and (self.stamp or conn.micros):
            d = dict(self.data)
            if self.stamp:
                now = time.time_ns() // (1_000 if conn.micros else 1_000_000)
                for k in ("E", "T"):
                    if k in d:
                        d[k] = now
            else:
                for k in ("E", "T"):
                    if k in d:
                        d[k] *= 1000
                if "k" in d:
                    d["k"] = {**d["k"], "t": d["k"]["t"] * 1000, "T": d["k"]["T"] * 1000 + 999}
            body = orjson.dumps(d).decode()
            return f'{{"stream":"{self.key}","data":{body}}}' if conn.combined else body
        if self.text is None:
            body = orjson.dumps(self.data).decode()
            self.text = f'{{"stream":"{self.key}","data":{body}}}'
            self.raw = body
        if conn.combined or self.raw is None:
            return self.text
        return self.raw


class SimConnection:
    """One client WebSocket as the simulator sees it; the counters are what it really sent."""

    def __init__(self, sim: Simulator, venue: str, path: str, ws: WebSocketConnection, stream: _SimStream,
                 outbox_size: int) -> None:
        self.id = next(_IDS)
        self.conn_id = str(uuid.uuid4())
        self.venue = venue
        self.path = path
        self.ws = ws
        self.stream = stream
        query = parse_qs(urlsplit(path).query)
        self.combined = not urlsplit(path).path.startswith("/ws")
        self.micros = query.get("timeUnit", [""])[0].upper() == "MICROSECOND"
        #: Streams (Binance) or topics (Bybit) this connection is subscribed to.
        self.subs: set[str] = set()
        #: Frames written to the socket, in total and per stream/topic ("" for control replies).
        self.sent = 0
        self.sent_by_key: Counter[str] = Counter()
        #: Trade ids written to the socket, per symbol, in order.
        self.trade_ids: dict[str, list[str]] = {}
        #: Depth frames withheld by a gap fault.
        self.skipped = 0
        #: Text messages the client sent, and when (Trio time).
        self.received: list[str] = []
        self.received_at: list[float] = []
        self.opened_at = trio.current_time()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.dropped = False
        self.closing = False
        self.last_ping_at = self.opened_at
        self.last_sent_at = self.opened_at
        self.scope = trio.CancelScope()
        self._ctrl_times: deque[float] = deque()
        self._send, self._recv = trio.open_memory_channel[Any](outbox_size)

    @property
    def open(self) -> bool:
        """Still taking frames: not closed, and no drop or close under way."""
        return self.closed_at is None and not self.closing

    @property
    def queued(self) -> int:
        return self._recv.statistics().current_buffer_used

    def push(self, item: _Frame | str) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            log.warning("sim %s connection %d: outbox full (client too slow); disconnecting", self.venue, self.id)
            self.close_reason = "slow consumer"
            self.scope.cancel()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def request(self, action: tuple[Any, ...]) -> None:
        """Queue a fault action behind the frames already queued."""
        try:
            self._send.send_nowait(action)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.scope.cancel()

    def __repr__(self) -> str:
        return (f"<SimConnection {self.id} {self.venue} {self.path!r} sent={self.sent} "
                f"{'open' if self.open else f'closed code={self.close_code}'}>")


class Faults:
    """Fault injection. Each call acts on the open connections of ``venue`` (None = both)
    and returns how many it touched."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._reject: dict[str, deque[tuple[int, str]]] = {"binance": deque(), "bybit": deque()}
        self._refuse: deque[int] = deque()
        self._rest_errors: deque[int] = deque()
        self.stale_snapshots = 0
        self.rest_delay = 0.0
        self._gaps: Counter[tuple[str, str]] = Counter()

    def _conns(self, venue: str | None) -> list[SimConnection]:
        return [c for c in self._sim.connections if c.open and (venue is None or c.venue == venue)]

    def drop(self, venue: str | None = None) -> int:
        """End the TCP connection without a WebSocket close frame (the client sees code 1006).

        Frames already queued are sent first, then the socket is half-closed, so
        every frame counted as sent can be read by the client.
        """
        conns = self._conns(venue)
        for c in conns:
            c.request(("drop",))
        return len(conns)

    def close(self, code: int = 1000, reason: str = "", venue: str | None = None) -> int:
        """Close with a WebSocket close frame carrying ``code``."""
        conns = self._conns(venue)
        for c in conns:
            c.request(("close", code, reason))
        return len(conns)

    def stall(self, seconds: float, venue: str | None = None) -> int:
        """Send nothing for ``seconds``: no data, no pongs, no pings."""
        conns = self._conns(venue)
        until = trio.current_time() + seconds
        for c in conns:
            c.stream.stall_until = until
        return len(conns)

    def malformed(self, venue: str | None = None, text: str | None = None) -> int:
        """Send a frame that is not valid JSON (or ``text``)."""
        conns = self._conns(venue)
        for c in conns:
            c.push(text if text is not None else
                   '{"stream":"btcusdt@trade","data":{"e":"trade","E":17000' if c.venue == "binance" else
                   '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":17')
        return len(conns)

    def send_raw(self, text: str, venue: str | None = None) -> int:
        """Send ``text`` as is (an unknown frame, a crafted error)."""
        return self.malformed(venue, text)

    def gap(self, symbol: str, venue: str = "binance", count: int = 1) -> None:
        """Withhold the next ``count`` depth updates of ``symbol`` (the venue's book moves on)."""
        self._gaps[(venue, symbol.upper())] += count

    def server_shutdown(self, grace: float = 5.0) -> int:
        """Binance ``serverShutdown``: announce, keep streaming for ``grace`` s, then close (1001)."""
        sim = self._sim
        conns = self._conns("binance")
        data = {"e": "serverShutdown", "E": sim.now_ms()}
        body = orjson.dumps(data).decode()
        frame = _Frame("binance", "!serverShutdown", '{"stream":"!serverShutdown","data":' + body + "}", raw=body)
        for c in conns:
            c.push(frame)
        assert sim._nursery is not None

        async def later() -> None:
            await trio.sleep(grace)
            for c in conns:
                if c.open:
                    c.request(("close", 1001, "server shutdown"))

        sim._nursery.start_soon(later)
        return len(conns)

    def reject_subscribe(self, venue: str, times: int = 1, *, code: int = 2,
                         msg: str = "Invalid request: service temporarily unavailable") -> None:
        """Answer the next ``times`` SUBSCRIBE requests with a venue error."""
        for _ in range(times):
            self._reject[venue].append((code, msg))

    def refuse(self, times: int = 1, status: int = 503) -> None:
        """Refuse the next ``times`` WebSocket handshakes with HTTP ``status``."""
        self._refuse.extend([status] * times)

    def stale_snapshot(self, times: int = 1) -> None:
        """Serve the next ``times`` REST depth snapshots from the oldest kept history (seconds old)."""
        self.stale_snapshots += times

    def rest_error(self, status: int = 503, times: int = 1) -> None:
        """Fail the next ``times`` REST requests with HTTP ``status``."""
        self._rest_errors.extend([status] * times)


class Simulator:
    """A local exchange speaking Binance Spot and Bybit v5 public market data.

    Fed by a seeded market generator (``generate=True``) at ``rate`` ticks per
    second on the Trio clock (``rate=None``: only ``await sim.tick()``; ``rate=0``:
    as fast as the clients read), and/or by recorded frames (``await sim.play``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        rate: float | None = 10.0,
        symbols: Sequence[str | SymbolSpec] | None = None,
        generate: bool = True,
        trades_per_tick: tuple[int, int] = (0, 3),
        book: bool = True,
        stamp: bool = False,
        precise: bool = False,
        coalesce: bool = True,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        bybit_idle_timeout: float = 600.0,
        max_connection_age: float | None = 24 * 3600.0,
        rate_limit: int | None = 5,
        outbox_size: int = 100_000,
        start_ms: int | None = None,
    ) -> None:
        if rate is not None and rate < 0:
            raise ConfigError(f"sim rate must be >= 0 ticks/s (0 = as fast as clients read), got {rate}")
        lo, hi = trades_per_tick
        if not 0 <= lo <= hi:
            raise ConfigError(f"sim trades_per_tick must be (min, max) with 0 <= min <= max, got {trades_per_tick}")
        specs = [s if isinstance(s, SymbolSpec) else spec_for(s.upper()) for s in (symbols or DEFAULT_SYMBOLS)]
        self.host = host
        self._port = port
        self.port = 0
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate = rate
        self.generate = generate
        self.trades_per_tick = (lo, hi)
        self.book = book
        self.stamp = stamp
        self.precise = precise
        self.coalesce = coalesce
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.bybit_idle_timeout = bybit_idle_timeout
        self.max_connection_age = max_connection_age
        self.rate_limit = rate_limit
        self.outbox_size = outbox_size
        self.start_ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000
        #: Symbols the venues list; others are refused by SUBSCRIBE and REST.
        self.symbols: tuple[str, ...] = tuple(s.symbol for s in specs)
        self.markets: dict[str, SymbolMarket] = {s.symbol: SymbolMarket(s, self.rng) for s in specs} if generate else {}
        self.binance_books: dict[str, SimBook] = {}
        self.bybit_books: dict[str, SimBook] = {}
        for sym, m in self.markets.items():
            bids, asks = m.wire_book()
            bn, by = SimBook(), SimBook()
            bn.reset(bids, asks)
            by.reset(bids, asks)
            bn.update_id = self.rng.randrange(10**9, 10**10)
            by.update_id = self.rng.randrange(10**7, 10**8)
            by.seq = self.rng.randrange(10**10, 10**11)
            self.binance_books[sym], self.bybit_books[sym] = bn, by
        #: Every WebSocket connection ever accepted, in order.
        self.connections: list[SimConnection] = []
        self.faults = Faults(self)
        self.ticks = 0
        self.paused = False
        #: REST depth requests served: (symbol, lastUpdateId, stale).
        self.rest_requests: list[tuple[str, int, bool]] = []
        self._history: dict[str, deque[SimBook]] = {s: deque(maxlen=8) for s in self.symbols}
        self._last_history = -math.inf
        self._klines: dict[tuple[str, str, str], Kline] = {}
        self._kline_sent: dict[tuple[str, str, str], float] = {}
        self._keys: set[str] = set()
        self._subs_event = trio.Event()
        self._drained = trio.Event()
        self._resumed = trio.Event()
        self._tops: dict[str, tuple[int | None, int, int | None, int]] = {s: m.top() for s, m in self.markets.items()}
        self._nursery: trio.Nursery | None = None
        self._t0 = 0.0

    # --- addresses -------------------------------------------------------------------------------

    @property
    def binance_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def binance_rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def bybit_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v5/public/spot"

    # --- observing -------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return self.start_ms + int((trio.current_time() - self._t0) * 1000)

    def open_connections(self, venue: str | None = None) -> list[SimConnection]:
        return [c for c in self.connections if c.open and (venue is None or c.venue == venue)]

    def sent_trade_ids(self, venue: str, symbol: str) -> list[str]:
        """Trade ids of ``symbol`` written to any ``venue`` connection, connection by connection."""
        out: list[str] = []
        for c in self.connections:
            if c.venue == venue:
                out.extend(c.trade_ids.get(symbol.upper(), ()))
        return out

    def binance_book(self, symbol: str) -> BookView:
        b = self.binance_books[symbol.upper()]
        return view(b, b.update_id)

    def bybit_book(self, symbol: str) -> BookView:
        b = self.bybit_books[symbol.upper()]
        return view(b, b.update_id)

    async def wait_subscribed(self, venue: str, key: str) -> SimConnection:
        """Wait until an open ``venue`` connection is subscribed to stream/topic ``key``."""
        while True:
            for c in self.open_connections(venue):
                if key in c.subs:
                    return c
            self._subs_event = trio.Event() if self._subs_event.is_set() else self._subs_event
            await self._subs_event.wait()

    # --- driving ------------------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop generating market data (connections, pings and faults keep working)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()
        self._resumed = trio.Event()

    async def tick(self, n: int = 1) -> None:
        """Generate ``n`` market steps now (whatever ``rate`` and ``paused`` say)."""
        for _ in range(n):
            self._tick()
        await trio.lowlevel.checkpoint()

    def set_binance_book(self, symbol: str, last_update_id: int, bids: Iterable[list[str]],
                         asks: Iterable[list[str]]) -> None:
        """Set the book the REST snapshot serves (for recorded frames)."""
        b = self.binance_books.setdefault(symbol.upper(), SimBook())
        b.reset(bids, asks)
        b.update_id = last_update_id

    def set_bybit_book(self, symbol: str, u: int, bids: Iterable[list[str]], asks: Iterable[list[str]],
                       seq: int = 0) -> None:
        b = self.bybit_books.setdefault(symbol.upper(), SimBook())
        b.reset(bids, asks)
        b.update_id, b.seq = u, seq

    async def play(self, venue: str, frames: Iterable[str | dict[str, Any]], *, update_books: bool = True) -> int:
        """Send recorded frames, in order, to the ``venue`` connections subscribed to their stream/topic.

        Book frames also update the simulator's book (unless ``update_books`` is
        false), so REST snapshots and Bybit re-subscription snapshots continue
        from them. Frames without a
        stream/topic (or not JSON at all) go to every connection of the venue.
        Returns the number of frames queued across connections.
        """
        out = [self._recorded(venue, f if isinstance(f, str) else orjson.dumps(f).decode(), update_books)
               for f in frames]
        queued = self._dispatch(out)
        await trio.lowlevel.checkpoint()
        return queued

    def _recorded(self, venue: str, text: str, update_books: bool = True) -> _Frame:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _Frame(venue, "", text)
        if type(msg) is not dict:
            return _Frame(venue, "", text)
        if venue == "binance":
            key = msg.get("stream", "")
            data = msg.get("data") if "stream" in msg else msg
            raw = orjson.dumps(data).decode() if "stream" in msg else None
            kind, sym = "other", ""
            ids: tuple[str, ...] = ()
            if type(data) is dict:
                sym = str(data.get("s", "")).upper()
                if data.get("e") == "trade":
                    kind, ids = "trade", (str(data.get("t")),)
                elif data.get("e") == "depthUpdate":
                    kind = "depth"
                    b = self.binance_books.setdefault(sym, SimBook())
                    # A recorded diff older than the book the REST endpoint serves is history.
                    if update_books and int(data.get("u", 0)) > b.update_id:
                        b.apply(data.get("b", ()), data.get("a", ()))
                        b.update_id = int(data["u"])
            if key.startswith("!"):
                key = ""
            return _Frame(venue, key, text, raw=raw, kind=kind, symbol=sym, trade_ids=ids)
        key = msg.get("topic", "")
        sym, kind = "", "other"
        ids = ()
        data = msg.get("data")
        if key.startswith("publicTrade.") and type(data) is list:
            sym = key.split(".", 1)[1]
            kind, ids = "trade", tuple(str(t.get("i")) for t in data if type(t) is dict)
        elif key.startswith("orderbook.") and type(data) is dict and update_books:
            sym = str(data.get("s", key.rsplit(".", 1)[1]))
            kind = "depth"
            b = self.bybit_books.setdefault(sym, SimBook())
            if msg.get("type") == "snapshot":
                b.reset(data.get("b", ()), data.get("a", ()))
            else:
                b.apply(data.get("b", ()), data.get("a", ()))
            b.update_id = int(data.get("u", b.update_id))
            b.seq = int(data.get("seq", b.seq))
        return _Frame(venue, key, text, kind=kind, symbol=sym, trade_ids=ids)

    # --- serving ---------------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and generate until cancelled; ``task_status.started(self)`` once the port is bound."""
        listeners = await trio.open_tcp_listeners(self._port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self._t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            nursery.start_soon(self._clock)
            log.info("simulator listening on %s (Binance WS and REST), %s (Bybit)", self.binance_ws_url,
                     self.bybit_ws_url)
            task_status.started(self)

    async def _clock(self) -> None:
        if not self.markets or self.rate is None:
            while True:
                self._keep_history()
                await trio.sleep(1.0)
        if self.rate == 0:
            while True:
                if self.paused:
                    await self._resumed.wait()
                if not self._keys:
                    self._subs_event = trio.Event() if self._subs_event.is_set() else self._subs_event
                    await self._subs_event.wait()
                    continue
                for _ in range(64):
                    self._tick()
                while any(c.queued > 2048 for c in self.connections if c.open):
                    self._drained = trio.Event()
                    await self._drained.wait()
                await trio.lowlevel.checkpoint()
        period = 1.0 / self.rate
        if self.precise:
            pacer = Pacer(period)
            try:
                while True:
                    # A late wake-up (a GC pause) catches up a little, never in a long burst.
                    for _ in range(min(await pacer.wait(), 8)):
                        if not self.paused:
                            self._tick()
            finally:
                pacer.close()
        next_t = trio.current_time()
        while True:
            if not self.paused:
                self._tick()
            next_t += period
            now = trio.current_time()
            if now - next_t > 0.1:
                next_t = now  # fell far behind (a GC pause, a slow client): do not burst to catch up
            await trio.sleep_until(next_t)

    def _keep_history(self) -> None:
        now = trio.current_time()
        if now - self._last_history >= 1.0:
            self._last_history = now
            for sym, b in self.binance_books.items():
                self._history.setdefault(sym, deque(maxlen=8)).append(b.copy())

    # --- market → frames -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._keep_history()
        now = self.now_ms()
        frames: list[_Frame] = []
        lo, hi = self.trades_per_tick
        for sym, m in self.markets.items():
            n = lo if lo == hi else self.rng.randint(lo, hi)
            trades, changes = m.step(n, self.book)
            self._frames_for(sym, m, trades, changes, now, frames)
        self._kline_frames(now, frames)
        self._dispatch(frames)
        self.ticks += 1

    def _frames_for(self, sym: str, m: SymbolMarket, trades: list[Any], changes: list[tuple[str, str, str]],
                    now: int, frames: list[_Frame]) -> None:
        keys = self._keys
        low = sym.lower()
        stamp = self.stamp
        tkey, akey, bkey = f"{low}@trade", f"{low}@aggTrade", f"publicTrade.{sym}"
        for t in trades:
            if tkey in keys:
                frames.append(_Frame("binance", tkey, None, data={
                    "e": "trade", "E": now, "s": sym, "t": t.binance_id, "p": t.price, "q": t.qty, "T": now,
                    "m": t.buyer_is_maker, "M": True}, kind="trade", symbol=sym,
                    trade_ids=(str(t.binance_id),), stamp=stamp))
            if akey in keys:
                frames.append(_Frame("binance", akey, None, data={
                    "e": "aggTrade", "E": now, "s": sym, "a": t.binance_id, "p": t.price, "q": t.qty,
                    "f": t.binance_id, "l": t.binance_id, "T": now, "m": t.buyer_is_maker, "M": True},
                    kind="trade", symbol=sym, trade_ids=(str(t.binance_id),), stamp=stamp))
            for (_venue, s, _code), k in self._klines.items():
                if s == sym:
                    k.add(float(t.price), float(t.qty), t.binance_id, not t.buyer_is_maker)
        if trades and bkey in keys:
            data = [{"T": now, "s": sym, "S": "Sell" if t.buyer_is_maker else "Buy", "v": t.qty, "p": t.price,
                     "i": t.bybit_id, "BT": False, "RPI": False, "seq": t.bybit_seq} for t in trades]
            text = orjson.dumps({"topic": bkey, "ts": now, "type": "snapshot", "data": data}).decode()
            frames.append(_Frame("bybit", bkey, text, kind="trade", symbol=sym,
                                 trade_ids=tuple(t.bybit_id for t in trades)))
        if not changes:
            return
        bids = [[p, q] for side, p, q in changes if side == "b"]
        asks = [[p, q] for side, p, q in changes if side == "a"]
        faults = self.faults
        # Binance: one diff per tick; the update id advances once per changed level.
        bn = self.binance_books[sym]
        first = bn.update_id + 1
        bn.update_id += len(changes)
        bn.apply(bids, asks)
        withhold = faults._gaps[("binance", sym)] > 0
        if withhold:
            faults._gaps[("binance", sym)] -= 1
        depth = {"e": "depthUpdate", "E": now, "s": sym, "U": first, "u": bn.update_id, "b": bids, "a": asks}
        for dkey in (f"{low}@depth@100ms", f"{low}@depth"):
            if dkey in keys:
                f = _Frame("binance", dkey, None, data=depth, kind="depth", symbol=sym)
                f.skip = withhold
                frames.append(f)
        top = m.top()
        if top != self._tops.get(sym):
            self._tops[sym] = top
            tick_key = f"{low}@bookTicker"
            if tick_key in keys:
                bb, bq, ba, aq = top
                body = {"u": bn.update_id, "s": sym,
                        "b": m.price(bb) if bb is not None else "0", "B": m.qty(bq),
                        "a": m.price(ba) if ba is not None else "0", "A": m.qty(aq)}
                frames.append(_Frame("binance", tick_key, None, data=body, symbol=sym))
        # Bybit: one delta per tick, u + 1.
        by = self.bybit_books[sym]
        by.update_id += 1
        by.seq += len(changes)
        by.apply(bids, asks)
        withhold = faults._gaps[("bybit", sym)] > 0
        if withhold:
            faults._gaps[("bybit", sym)] -= 1
        for n in _BYBIT_DEPTHS:
            okey = f"orderbook.{n}.{sym}"
            if okey not in keys:
                continue
            if n == 1:
                f = self._bybit_snapshot(sym, 1, now)
            else:
                text = orjson.dumps({"topic": okey, "ts": now, "type": "delta", "data": {
                    "s": sym, "b": bids, "a": asks, "u": by.update_id, "seq": by.seq}, "cts": now - 2}).decode()
                f = _Frame("bybit", okey, text, kind="depth", symbol=sym)
            f.skip = withhold
            frames.append(f)

    def _bybit_snapshot(self, sym: str, n: int, now: int) -> _Frame:
        by = self.bybit_books[sym]
        bids, asks = by.sides(n)
        topic = f"orderbook.{n}.{sym}"
        text = orjson.dumps({"topic": topic, "ts": now, "type": "snapshot", "data": {
            "s": sym, "b": bids, "a": asks, "u": by.update_id, "seq": by.seq}, "cts": now - 2}).decode()
        return _Frame("bybit", topic, text, kind="depth", symbol=sym)

    def _kline_frames(self, now: int, frames: list[_Frame]) -> None:
        for key, k in list(self._klines.items()):
            venue, sym, code = key
            width = k.width_ms
            start = now - now % width
            if start > k.start_ms:
                frames.append(self._kline_frame(venue, sym, code, k, closed=True, now=now))
                self._klines[key] = Kline(start, width, k.close)
                self._kline_sent[key] = now
            elif k.trades and now - self._kline_sent.get(key, 0) >= 1000:
                self._kline_sent[key] = now
                frames.append(self._kline_frame(venue, sym, code, k, closed=False, now=now))

    def _kline_frame(self, venue: str, sym: str, code: str, k: Kline, *, closed: bool, now: int) -> _Frame:
        m = self.markets.get(sym)

        def px(v: float) -> str:
            return m.format_price(v) if m is not None else f"{v:.8f}"

        if venue == "binance":
            stream = f"{sym.lower()}@kline_{code}"
            data = {"e": "kline", "E": now, "s": sym, "k": {
                "t": k.start_ms, "T": k.start_ms + k.width_ms - 1, "s": sym, "i": code,
                "f": k.first_id, "L": k.last_id, "o": px(k.open), "c": px(k.close), "h": px(k.high),
                "l": px(k.low), "v": f"{k.volume:.8f}", "n": k.trades, "x": closed, "q": f"{k.quote:.8f}",
                "V": f"{k.taker_base:.8f}", "Q": f"{k.taker_quote:.8f}", "B": "0"}}
            return _Frame("binance", stream, None, data=data, symbol=sym)
        topic = f"kline.{code}.{sym}"
        text = orjson.dumps({"topic": topic, "data": [{
            "start": k.start_ms, "end": k.start_ms + k.width_ms - 1, "interval": code, "open": px(k.open),
            "close": px(k.close), "high": px(k.high), "low": px(k.low), "volume": f"{k.volume:.8f}",
            "turnover": f"{k.quote:.8f}", "confirm": closed, "timestamp": now}], "ts": now,
            "type": "snapshot"}).decode()
        return _Frame("bybit", topic, text, symbol=sym)

    def _dispatch(self, frames: list[_Frame]) -> int:
        if not frames:
            return 0
        queued = 0
        conns = [c for c in self.connections if c.open]
        for f in frames:
            for c in conns:
                if c.venue != f.venue or (f.key and f.key not in c.subs):
                    continue
                if f.skip:
                    c.skipped += 1
                else:
                    c.push(f)
                    queued += 1
        return queued

    def _subs_changed(self) -> None:
        keys: set[str] = set()
        for c in self.connections:
            if c.open:
                keys |= c.subs
        self._keys = keys
        now = self.now_ms()
        for key in keys:
            kl = _kline_key(key)
            if kl is not None and kl not in self._klines and kl[1] in self.symbols:
                venue, sym, code = kl
                width = 1000 * (BINANCE_INTERVALS if venue == "binance" else BYBIT_INTERVALS)[code]
                m = self.markets.get(sym)
                last = m.top()[0] if m is not None else None
                price = last * m.spec.tick if (m is not None and last is not None) else 0.0
                self._klines[kl] = Kline(now - now % width, width, price)
        self._subs_event.set()
        self._drained.set()

    # --- connections -------------------------------------------------------------------------------------

    async def _handle(self, tcp: trio.SocketStream) -> None:
        stream = _SimStream(tcp)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await tcp.receive_some(65536)
                if not data:
                    return
                head += data
                if len(head) > _MAX_HEAD:
                    return
            probe = h11.Connection(h11.SERVER)
            probe.receive_data(head)
            event = probe.next_event()
            if not isinstance(event, h11.Request):
                return
            headers = {k.lower(): v.lower() for k, v in event.headers}
            stream.prefix = head
            if headers.get(b"upgrade") == b"websocket":
                await self._serve_ws(stream)
            else:
                await self._serve_http(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(tcp)

    async def _serve_ws(self, stream: _SimStream) -> None:
        async with trio.open_nursery() as ws_nursery:
            request = await trio_websocket.wrap_server_stream(ws_nursery, stream, message_queue_size=64)
            path = request.path
            route = urlsplit(path).path
            venue = ("binance" if route == "/stream" or route == "/ws" or route.startswith("/ws/") else
                     "bybit" if route.startswith("/v5/public/") else "")
            if self.faults._refuse:
                status = self.faults._refuse.popleft()
                await request.reject(status, body=b'{"msg":"service unavailable (simulated)"}')
                ws_nursery.cancel_scope.cancel()
                return
            if not venue:
                await request.reject(404, body=f"no such endpoint {route}".encode())
                ws_nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            conn = SimConnection(self, venue, path, ws, stream, self.outbox_size)
            self.connections.append(conn)
            log.info("sim %s connection %d open: %s", venue, conn.id, path)
            try:
                with conn.scope:
                    if venue == "binance":
                        self._binance_url_streams(conn)
                    await self._session(conn)
            finally:
                conn.closed_at = trio.current_time()
                conn._send.close()
                self._subs_changed()
                self._drained.set()  # a full outbox that just went away no longer holds the generator
                if not conn.dropped:
                    with trio.move_on_after(1.0) as cs:
                        cs.shield = True
                        await ws.aclose()
                if conn.close_code is None and ws.closed is not None:
                    conn.close_code, conn.close_reason = ws.closed.code, ws.closed.reason
                log.info("sim %s connection %d closed (code %s, sent %d)", venue, conn.id, conn.close_code,
                         conn.sent)
                ws_nursery.cancel_scope.cancel()

    def _binance_url_streams(self, conn: SimConnection) -> None:
        query = parse_qs(urlsplit(conn.path).query)
        route = urlsplit(conn.path).path
        streams = [s for v in query.get("streams", []) for s in v.split("/") if s]
        if route.startswith("/ws/"):
            streams += [s for s in route[4:].split("/") if s]
        for s in streams:
            if self._binance_stream_ok(s):
                conn.subs.add(s)
            else:
                log.info("sim binance connection %d: ignoring unknown stream %r in the URL", conn.id, s)
        self._subs_changed()

    async def _session(self, conn: SimConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender, conn)
            if conn.venue == "binance":
                nursery.start_soon(self._pinger, conn)
                if self.max_connection_age:
                    nursery.start_soon(self._age_limit, conn)
            elif self.bybit_idle_timeout:
                nursery.start_soon(self._idle_limit, conn)
            try:
                await self._receiver(conn)
            finally:
                nursery.cancel_scope.cancel()

    async def _receiver(self, conn: SimConnection) -> None:
        handle = self._binance_control if conn.venue == "binance" else self._bybit_control
        while True:
            try:
                msg = await conn.ws.get_message()
            except ConnectionClosed as exc:
                if exc.reason is not None and conn.close_code is None:
                    conn.close_code, conn.close_reason = exc.reason.code, exc.reason.reason
                return
            text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
            conn.received.append(text)
            conn.received_at.append(trio.current_time())
            if conn.venue == "binance" and self.rate_limit is not None:
                now = trio.current_time()
                times = conn._ctrl_times
                times.append(now)
                while times and now - times[0] > 1.0:
                    times.popleft()
                if len(times) > self.rate_limit:
                    log.warning("sim binance connection %d: more than %d messages/s; disconnecting", conn.id,
                                self.rate_limit)
                    conn.request(("close", 1008, "Too many requests"))
                    continue
            handle(conn, text)

    async def _sender(self, conn: SimConnection) -> None:
        try:
            await self._send_loop(conn)
        finally:
            # Whatever is still queued will never be written: stop queueing more.
            conn.closing = True

    async def _send_loop(self, conn: SimConnection) -> None:
        recv = conn._recv
        while True:
            try:
                first = await recv.receive()
            except trio.EndOfChannel:
                return
            # Everything already queued goes out in one write: at tens of thousands of
            # frames a second a syscall and a scheduler round trip per frame would make
            # the simulator, not the client under test, the bottleneck.
            batch: list[Any] = [first]
            action: tuple[Any, ...] | None = None
            limit = 512 if self.coalesce else 1
            while type(batch[-1]) is not tuple and len(batch) < limit:
                try:
                    batch.append(recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if type(batch[-1]) is tuple:
                action = batch.pop()
            if batch and not await self._write(conn, batch):
                return
            if action is not None:
                conn.closing = True
                if action[0] == "drop":
                    await self._drop(conn)
                    return
                if action[0] == "close":
                    conn.close_code, conn.close_reason = action[1], action[2] or None
                    try:
                        await conn.ws.aclose(action[1], action[2] or None)
                    except ConnectionClosed:
                        pass
                    return

    async def _write(self, conn: SimConnection, batch: list[Any]) -> bool:
        if conn.ws.closed is not None:
            return False  # no data frames after a close frame
        texts = [item if type(item) is str else item.render(conn) for item in batch]
        try:
            await conn.stream.send_all(b"".join(_text_frame(t.encode()) for t in texts))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        conn.sent += len(batch)
        conn.last_sent_at = trio.current_time()
        by_key = conn.sent_by_key
        for item in batch:
            if type(item) is str:
                by_key[""] += 1
                continue
            by_key[item.key] += 1
            if item.trade_ids:
                ids = conn.trade_ids.get(item.symbol)
                if ids is None:
                    ids = conn.trade_ids[item.symbol] = []
                ids.extend(item.trade_ids)
        if self.rate == 0 and conn.queued < 512:
            self._drained.set()
        return True

    async def _drop(self, conn: SimConnection) -> None:
        conn.dropped = True
        conn.close_code, conn.close_reason = 1006, "dropped (simulated)"
        # Half-close: the client reads everything already sent, then EOF. A full
        # close with unread client bytes would reset the connection and could
        # discard frames the client had not read yet.
        try:
            await conn.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.sleep(5.0)
        conn.scope.cancel()

    async def _pinger(self, conn: SimConnection) -> None:
        if not self.ping_interval:
            return
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.pong_timeout) as cs:
                try:
                    await conn.ws.ping()
                except ConnectionClosed:
                    return
            if cs.cancelled_caught:
                log.warning("sim binance connection %d: no pong within %g s; disconnecting", conn.id,
                            self.pong_timeout)
                conn.request(("drop",))
                return

    async def _age_limit(self, conn: SimConnection) -> None:
        assert self.max_connection_age is not None
        await trio.sleep(self.max_connection_age)
        conn.request(("close", 1001, "connection lifetime reached"))

    async def _idle_limit(self, conn: SimConnection) -> None:
        limit = self.bybit_idle_timeout
        while True:
            last = max(conn.last_ping_at, conn.last_sent_at)
            wait = last + limit - trio.current_time()
            if wait <= 0:
                log.info("sim bybit connection %d: no ping and no data for %g s; closing", conn.id, limit)
                conn.request(("close", 1000, "idle"))
                return
            await trio.sleep(wait)

    # --- venue control messages ------------------------------------------------------------------------------

    def _binance_stream_ok(self, stream: str) -> bool:
        sym, sep, kind = stream.partition("@")
        if not sep or sym != sym.lower() or sym.upper() not in self.symbols:
            return False
        return kind in _BINANCE_KINDS or (kind.startswith("kline_") and kind[6:] in BINANCE_INTERVALS)

    def _binance_control(self, conn: SimConnection, text: str) -> None:
        def reply(obj: dict[str, Any]) -> None:
            conn.push(orjson.dumps(obj).decode())

        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            reply({"id": None, "error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}})
            return
        if type(req) is not dict:
            reply({"id": None, "error": {"code": 3, "msg": "Invalid JSON: expected an object"}})
            return
        rid = req.get("id")
        if "id" not in req or not (rid is None or type(rid) is int or (type(rid) is str and len(rid) <= 36)):
            reply({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                   "id": None})
            return
        method = req.get("method")
        if method is None:
            reply({"error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 1"},
                   "id": rid})
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            params = req.get("params")
            if type(params) is not list or not all(type(p) is str for p in params):
                reply({"error": {"code": 2, "msg": "Invalid request: params must be a list of streams"}, "id": rid})
                return
            if method == "SUBSCRIBE":
                rejected = self.faults._reject["binance"]
                if rejected:
                    code, msg = rejected.popleft()
                    reply({"error": {"code": code, "msg": msg}, "id": rid})
                    return
                if not all(self._binance_stream_ok(p) for p in params):
                    reply({"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": rid})
                    return
                conn.subs.update(params)
            else:
                conn.subs.difference_update(params)
            reply({"result": None, "id": rid})
            self._subs_changed()
        elif method == "LIST_SUBSCRIPTIONS":
            reply({"result": sorted(conn.subs), "id": rid})
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            params = req.get("params")
            if type(params) is not list or not params or type(params[0]) is not str:
                reply({"error": {"code": 2, "msg": "Invalid request: property name must be a string"}, "id": rid})
            elif params[0] != "combined":
                reply({"code": 0, "msg": "Unknown property", "id": rid})
            elif method == "GET_PROPERTY":
                reply({"result": conn.combined, "id": rid})
            elif len(params) != 2 or type(params[1]) is not bool:
                reply({"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": rid})
            else:
                conn.combined = params[1]
                reply({"result": None, "id": rid})
        else:
            reply({"error": {"code": 2, "msg": (
                f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
                "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 28")}, "id": rid})

    def _bybit_topic_error(self, topic: str) -> str | None:
        head, _, rest = topic.partition(".")
        if head == "publicTrade":
            sym = rest
        elif head == "orderbook":
            depth, _, sym = rest.partition(".")
            if not depth.isdigit() or int(depth) not in _BYBIT_DEPTHS:
                return f"error:handler not found,topic:{topic}"
        elif head == "kline":
            code, _, sym = rest.partition(".")
            if code not in BYBIT_INTERVALS:
                return f"error:handler not found,topic:{topic}"
        else:
            return f"error:handler not found,topic:{topic}"
        if sym not in self.symbols:
            return f"Invalid symbol :[{topic}]"
        return None

    def _bybit_control(self, conn: SimConnection, text: str) -> None:
        def reply(obj: dict[str, Any]) -> None:
            conn.push(orjson.dumps(obj).decode())

        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            reply({"success": False, "ret_msg": "error:request not json", "conn_id": conn.conn_id, "op": ""})
            return
        if type(req) is not dict:
            reply({"success": False, "ret_msg": "error:request not an object", "conn_id": conn.conn_id, "op": ""})
            return
        op = req.get("op")
        rid = req.get("req_id")
        base: dict[str, Any] = {"conn_id": conn.conn_id}
        if rid is not None:
            base["req_id"] = rid
        if op == "ping":
            conn.last_ping_at = trio.current_time()
            reply({"success": True, "ret_msg": "pong", **base, "op": "ping"})
            return
        if op not in ("subscribe", "unsubscribe"):
            reply({"success": False, "ret_msg": f"error:unknown op {op!r}", **base, "op": op or ""})
            return
        args = req.get("args")
        if type(args) is not list or not all(type(a) is str for a in args):
            reply({"success": False, "ret_msg": "error:args must be a list of topics", **base, "op": op})
            return
        if len(args) > 10:
            reply({"success": False, "ret_msg": "args size >10", **base, "op": op})
            return
        if op == "subscribe":
            rejected = self.faults._reject["bybit"]
            if rejected:
                _code, msg = rejected.popleft()
                reply({"success": False, "ret_msg": msg, **base, "op": op})
                return
            for topic in args:
                err = self._bybit_topic_error(topic)
                if err is None and topic in conn.subs:
                    err = f"error:already subscribed,topic:{topic}"
                if err is not None:
                    reply({"success": False, "ret_msg": err, **base, "op": op})
                    return
            conn.subs.update(args)
            reply({"success": True, "ret_msg": "subscribe", **base, "op": op})
            now = self.now_ms()
            for topic in args:
                if topic.startswith("orderbook.") and topic.rsplit(".", 1)[1] in self.bybit_books:
                    _, depth, sym = topic.split(".")
                    conn.push(self._bybit_snapshot(sym, int(depth), now))
        else:
            conn.subs.difference_update(args)
            reply({"success": True, "ret_msg": "", **base, "op": op})
        self._subs_changed()

    # --- REST -----------------------------------------------------------------------------------------------

    async def _serve_http(self, stream: _SimStream) -> None:
        h = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                status, body = await self._rest(request.method.decode(), request.target.decode())
                h_out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await stream.send_all(h.send(h11.Response(status_code=status, headers=h_out)) or b"")
                await stream.send_all(h.send(h11.Data(data=body)) or b"")
                await stream.send_all(h.send(h11.EndOfMessage()) or b"")
                if h.our_state is h11.MUST_CLOSE:
                    return
                h.start_next_cycle()
                request = None
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return

    async def _rest(self, method: str, target: str) -> tuple[int, bytes]:
        faults = self.faults
        if faults.rest_delay:
            await trio.sleep(faults.rest_delay)
        parts = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if faults._rest_errors:
            status = faults._rest_errors.popleft()
            return status, orjson.dumps({"code": -1003, "msg": "simulated failure"})
        if method != "GET":
            return 405, orjson.dumps({"code": -1, "msg": f"method {method} not allowed"})
        if parts.path == "/api/v3/ping":
            return 200, b"{}"
        if parts.path == "/api/v3/time":
            return 200, orjson.dumps({"serverTime": self.now_ms()})
        if parts.path != "/api/v3/depth":
            return 404, orjson.dumps({"code": -1, "msg": f"no such endpoint {parts.path}"})
        sym = params.get("symbol", "")
        if not sym:
            return 400, orjson.dumps({"code": -1102, "msg": (
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")})
        if sym not in self.symbols and sym not in self.binance_books:
            return 400, orjson.dumps({"code": -1121, "msg": "Invalid symbol."})
        try:
            limit = int(params.get("limit", "100"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 5000:
            return 400, orjson.dumps({"code": -1100, "msg": "Illegal characters found in parameter 'limit'."})
        book = self.binance_books.get(sym) or SimBook()
        stale = False
        history = self._history.get(sym)
        if faults.stale_snapshots and history:
            faults.stale_snapshots -= 1
            book, stale = history[0], True
        bids, asks = book.sides(limit)
        self.rest_requests.append((sym, book.update_id, stale))
        return 200, orjson.dumps({"lastUpdateId": book.update_id, "bids": bids, "asks": asks})


def _text_frame(payload: bytes) -> bytes:
    """An unfragmented, unmasked server text frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def _kline_key(key: str) -> tuple[str, str, str] | None:
    if "@kline_" in key:
        sym, _, code = key.partition("@kline_")
        return ("binance", sym.upper(), code) if code in BINANCE_INTERVALS else None
    if key.startswith("kline."):
        _, code, sym = key.split(".", 2)
        return ("bybit", sym, code) if code in BYBIT_INTERVALS else None
    return None


async def serve_simulator(*, task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED,
                          **options: Any) -> None:
    """Run a simulator until cancelled (``await nursery.start(serve_simulator, port=0)`` gives it back)."""
    await Simulator(**options).serve(task_status=task_status)


@asynccontextmanager
async def open_simulator(**options: Any) -> AsyncIterator[Simulator]:
    """``async with open_simulator(port=0, seed=1, rate=10) as sim:`` — a running simulator for the block."""
    sim = Simulator(**options)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        try:
            yield sim
        finally:
            nursery.cancel_scope.cancel(reason="simulator closed")
