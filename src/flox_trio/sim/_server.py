"""The exchange simulator: Binance and Bybit wire formats on one loopback port.

This module composes the parts: the transport (``_transport``) routes each
TCP connection to a venue's WebSocket or to REST; every WebSocket is a
``SimConnection`` (``_connection``) with its own sender; the venues
(``_binance``, ``_bybit``) hold the wire formats and their mirrors of the
book; ``Faults`` (``_faults``) is what a test asks to go wrong. What lives
here is the market clock, which steps the generated market and turns each
step into frames, the routing of frames to the connections subscribed to
them, and the public ``Simulator`` API.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import WebSocketRequest

from .._core._clock import unix_time_ns
from .._errors import ConfigError
from . import _binance, _bybit
from ._binance import BinanceVenue
from ._binance_private import ROUTE as WS_API_ROUTE
from ._binance_private import BinancePrivate
from ._bybit import BybitVenue
from ._bybit_private import PRIVATE_ROUTE as BYBIT_PRIVATE_ROUTE
from ._bybit_private import REST_PATHS as BYBIT_REST_PATHS
from ._bybit_private import TRADE_ROUTE as BYBIT_TRADE_ROUTE
from ._bybit_private import BybitPrivate
from ._connection import Frame, Limits, SimConnection, Venue
from ._faults import Faults
from ._market import (
    DEFAULT_SYMBOLS,
    BookView,
    Kline,
    SimBook,
    SymbolMarket,
    SymbolSpec,
    WireLevel,
    poisson,
    spec_for,
    view,
    whole_market,
)
from ._pacer import Pacer
from ._transport import Transport, _SimStream

log = logging.getLogger("flox_trio.sim")


class Simulator:
    """A local exchange speaking Binance Spot and Bybit v5 public market data.

    Fed by a seeded market generator (``generate=True``) at ``rate`` ticks per
    second on the Trio clock (``rate=None``: only ``await sim.tick()``; ``rate=0``:
    as fast as the clients read), and/or by recorded frames (``await sim.play``).

    ``symbols`` names them (or gives their ``SymbolSpec``); a number ``n`` is a
    whole market of ``n`` symbols (``whole_market(n, skew=, activity=)``): a
    few very active, a long tail of quiet ones. Venue limits are enforced as the
    venues document them: Binance ``max_streams`` per connection, and
    ``connect_limits`` WebSocket handshakes per venue in a window (beyond
    them the handshake is answered 429).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        rate: float | None = 10.0,
        symbols: int | Sequence[str | SymbolSpec] | None = None,
        skew: float = 1.0,
        activity: float = 1.0,
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
        rest_weight_limit: int | None = _binance.WEIGHT_LIMIT,
        max_streams: int | None = _binance.MAX_STREAMS,
        connect_limits: Mapping[Venue, tuple[int, float] | None] | None = None,
        outbox_size: int = 100_000,
        start_ms: int | None = None,
    ) -> None:
        if rate is not None and rate < 0:
            raise ConfigError(f"sim rate must be >= 0 ticks/s (0 = as fast as clients read), got {rate}")
        lo, hi = trades_per_tick
        if not 0 <= lo <= hi:
            raise ConfigError(f"sim trades_per_tick must be (min, max) with 0 <= min <= max, got {trades_per_tick}")
        if isinstance(symbols, int):
            specs = list(whole_market(symbols, skew=skew, activity=activity))
        else:
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
        self.start_ms = start_ms if start_ms is not None else unix_time_ns() // 1_000_000
        #: Symbols the venues list; others are refused by SUBSCRIBE and REST.
        self.symbols: tuple[str, ...] = tuple(s.symbol for s in specs)
        self.faults = Faults(self)
        self.binance = BinanceVenue(specs, self.faults, self.now_ms, stamp=stamp, weight_limit=rest_weight_limit,
                                    max_streams=max_streams)
        limits: dict[Venue, tuple[int, float] | None] = {"binance": _binance.CONNECT_LIMIT,
                                                         "bybit": _bybit.CONNECT_LIMIT}
        limits.update(connect_limits or {})
        #: WebSocket handshakes each venue accepts in a window: (count, seconds), None for no limit.
        self.connect_limits = limits
        #: Trio times of each venue's WebSocket handshakes (refused ones too) within its window.
        self.handshakes: dict[Venue, deque[float]] = {"binance": deque(), "bybit": deque()}
        #: Handshakes answered 429 because the venue's connection limit was reached.
        self.over_connect_limit = 0
        self.bybit = BybitVenue(specs, self.faults, self.now_ms)
        self.markets: dict[str, SymbolMarket] = {s.symbol: SymbolMarket(s, self.rng) for s in specs} if generate else {}
        # Symbols that step every tick, and the quiet ones that step now and then (drawn by activity).
        self._steady = [m for m in self.markets.values() if m.spec.activity >= 1.0]
        self._quiet = [m for m in self.markets.values() if m.spec.activity < 1.0]
        self._quiet_weights = list(itertools.accumulate(m.spec.activity for m in self._quiet))
        for m in self.markets.values():
            self.binance.start_book(m, self.rng.randrange(10**9, 10**10))
            u = self.rng.randrange(10**7, 10**8)
            self.bybit.start_book(m, u, self.rng.randrange(10**10, 10**11))
        self._limits: dict[Venue, Limits] = {
            "binance": Limits(outbox_size, coalesce, ping_interval=ping_interval, pong_timeout=pong_timeout,
                              max_age=max_connection_age, rate_limit=rate_limit),
            "bybit": Limits(outbox_size, coalesce, idle_timeout=bybit_idle_timeout or None),
        }
        #: The Binance WebSocket API (``/ws-api/v3``): accounts, orders, the account stream, its faults.
        self.binance_private = BinancePrivate(self.binance, specs, self.now_ms, self._limits["binance"])
        #: Bybit v5's trade WebSocket, private stream and signed REST: accounts, orders, their faults.
        self.bybit_private = BybitPrivate(self.bybit, specs, self.now_ms, self._limits["bybit"])
        #: Every WebSocket connection ever accepted, in order.
        self.connections: list[SimConnection] = []
        self.ticks = 0
        self.paused = False
        # Open candles per symbol: (venue, interval, kline), for the kline streams someone subscribed to.
        self._klines: dict[str, list[tuple[Venue, str, Kline]]] = {}
        self._kline_sent: dict[tuple[Venue, str, str], int] = {}
        self._keys: frozenset[str] = frozenset()
        # Whether any open Bybit connection subscribes to anything (with _keys).
        self._bybit_keys = False
        self._subs_event = trio.Event()
        self._drained = trio.Event()
        self._resumed = trio.Event()
        self._t0 = 0.0

    # --- addresses -------------------------------------------------------------------------------

    @property
    def binance_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def binance_rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def binance_ws_api_url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_API_ROUTE}"

    @property
    def bybit_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v5/public/spot"

    # --- observing -------------------------------------------------------------------------------

    @property
    def bybit_trade_url(self) -> str:
        return f"ws://{self.host}:{self.port}{BYBIT_TRADE_ROUTE}"

    @property
    def bybit_private_url(self) -> str:
        return f"ws://{self.host}:{self.port}{BYBIT_PRIVATE_ROUTE}"

    @property
    def bybit_rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def binance_books(self) -> dict[str, SimBook]:
        """The book each Binance REST snapshot serves, per symbol."""
        return self.binance.books

    @property
    def bybit_books(self) -> dict[str, SimBook]:
        return self.bybit.books

    @property
    def rest_requests(self) -> list[tuple[str, int, bool]]:
        """REST depth requests served: (symbol, lastUpdateId, stale)."""
        return self.binance.rest_requests

    @property
    def rest_log(self) -> deque[tuple[float, float, str, str, int, int]]:
        """REST requests, the latest 100,000: (start, end Trio time, path, symbol, request weight, HTTP status)."""
        return self.binance.rest_log

    def now_ms(self) -> int:
        return self.start_ms + int((trio.current_time() - self._t0) * 1000)

    def open_connections(self, venue: Venue | None = None) -> list[SimConnection]:
        return [c for c in self.connections if c.open and (venue is None or c.venue == venue)]

    def sent_trade_ids(self, venue: Venue, symbol: str) -> list[str]:
        """Trade ids of ``symbol`` written to any ``venue`` connection, connection by connection."""
        out: list[str] = []
        for c in self.connections:
            if c.venue == venue:
                out.extend(c.trade_ids.get(symbol.upper(), ()))
        return out

    def binance_book(self, symbol: str) -> BookView:
        b = self.binance.books[symbol.upper()]
        return view(b, b.update_id)

    def bybit_book(self, symbol: str) -> BookView:
        b = self.bybit.books[symbol.upper()]
        return view(b, b.update_id)

    async def wait_subscribed(self, venue: Venue, key: str) -> SimConnection:
        """Wait until an open ``venue`` connection is subscribed to stream/topic ``key``."""
        return await self.wait_subscribed_any([(venue, key)])

    async def wait_subscribed_any(self, wanted: Collection[tuple[Venue, str]]) -> SimConnection:
        """Wait until an open connection is subscribed to any of the (venue, stream/topic) pairs."""
        while True:
            for c in self.open_connections():
                if any(venue == c.venue and key in c.subs for venue, key in wanted):
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

    def set_binance_book(self, symbol: str, last_update_id: int, bids: Iterable[WireLevel],
                         asks: Iterable[WireLevel]) -> None:
        """Set the book the REST snapshot serves (a recorded snapshot, for recorded frames)."""
        self.binance.set_book(symbol.upper(), last_update_id, bids, asks)

    def set_bybit_book(self, symbol: str, u: int, bids: Iterable[WireLevel], asks: Iterable[WireLevel],
                       seq: int = 0) -> None:
        self.bybit.set_book(symbol.upper(), u, bids, asks, seq)

    async def play(self, venue: Venue, frames: Iterable[str | dict[str, Any]], *, update_books: bool = True) -> int:
        """Send recorded frames, in order, to the ``venue`` connections subscribed to their stream/topic.

        Book frames also update the simulator's book (unless ``update_books`` is
        false), so REST snapshots and Bybit re-subscription snapshots continue
        from them. Frames without a
        stream/topic (or not JSON at all) go to every connection of the venue.
        Returns the number of frames queued across connections.
        """
        side = self.binance if venue == "binance" else self.bybit
        out = [side.recorded(f if isinstance(f, str) else orjson.dumps(f).decode(), update_books) for f in frames]
        queued = self._dispatch(out)
        await trio.lowlevel.checkpoint()
        return queued

    # --- serving ---------------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and generate until cancelled; ``task_status.started(self)`` once the port is bound."""
        listeners = await trio.open_tcp_listeners(self._port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self._t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            transport = Transport(self._on_websocket, self.binance.rest, self.bybit_private.rest, BYBIT_REST_PATHS)
            await nursery.start(trio.serve_listeners, transport, listeners)
            nursery.start_soon(self._clock)
            log.info("simulator listening on %s (Binance WS and REST), %s (Bybit)", self.binance_ws_url,
                     self.bybit_ws_url)
            task_status.started(self)

    async def _on_websocket(self, request: WebSocketRequest, stream: _SimStream) -> None:
        route = urlsplit(request.path).path
        if route == WS_API_ROUTE:  # its connections are its own: no market frames, no market faults
            await self.binance_private.serve(request, stream)
            return
        if route in (BYBIT_TRADE_ROUTE, BYBIT_PRIVATE_ROUTE):
            await self.bybit_private.serve(request, stream)
            return
        venue: Venue | None = "binance" if _binance.serves(route) else "bybit" if _bybit.serves(route) else None
        if venue is not None and self._over_connect_limit(venue):
            # Venues document the limit, not the answer to going past it: 429 is a guess.
            self.over_connect_limit += 1
            await request.reject(429, body=b'{"msg":"too many connection attempts (simulated)"}')
            return
        if venue == "binance" and self.binance.too_many_streams(request.path):
            await request.reject(400, body=f'{{"msg":"more than {self.binance.max_streams} streams"}}'.encode())
            return
        refusal = self.faults.take_refusal()
        if refusal is not None:
            await request.reject(refusal, body=b'{"msg":"service unavailable (simulated)"}')
            return
        if venue is None:
            await request.reject(404, body=f"no such endpoint {route}".encode())
            return
        ws = await request.accept()
        conn = SimConnection(venue, request.path, ws, stream, self._limits[venue])
        self.connections.append(conn)
        log.info("sim %s connection %d open: %s", venue, conn.id, request.path)
        if venue == "binance":
            self.binance.open(conn)
            self._subs_changed()
        await conn.run(self._on_message, self._on_written, self._on_closed)

    def _over_connect_limit(self, venue: Venue) -> bool:
        """Count a handshake attempt; True if it is one more than the venue allows in its window."""
        limit = self.connect_limits.get(venue)
        times = self.handshakes[venue]
        now = trio.current_time()
        times.append(now)
        count, window = limit if limit is not None else (None, 300.0)
        while times and times[0] + window <= now:
            times.popleft()
        return count is not None and len(times) > count

    def _on_message(self, conn: SimConnection, text: str) -> None:
        side = self.binance if conn.venue == "binance" else self.bybit
        if side.control(conn, text):
            self._subs_changed()

    def _on_written(self, conn: SimConnection) -> None:
        if self.rate == 0 and conn.queued < 512:
            self._drained.set()

    def _on_closed(self, conn: SimConnection) -> None:
        self._subs_changed()
        self._drained.set()  # a full outbox that just went away no longer holds the generator

    # --- the market clock ---------------------------------------------------------------------------

    async def _clock(self) -> None:
        if not self.markets or self.rate is None:
            while True:
                self.binance.keep_history()
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

    def _tick(self) -> None:
        """One market step: every symbol moves, and the frames it makes go to their subscribers."""
        self.binance.keep_history()
        now = self.now_ms()
        frames: list[Frame] = []
        lo, hi = self.trades_per_tick
        keys = self._keys
        klines = self._klines
        book = self.book
        binance_frames, bybit_frames = self.binance.market_frames, self.bybit.market_frames
        # Placed and cancelled by clients, never during a tick: these are the same dicts all along.
        binance_orders, bybit_orders = self.binance_private.orders, self.bybit_private.orders
        bybit_keys = self._bybit_keys
        for m in self._stepping():
            sym = m.spec.symbol
            n = lo if lo == hi else self.rng.randint(lo, hi)
            trades, changes = m.step(n, book)
            if sym in klines:
                for t in trades:
                    for _venue, _code, k in klines[sym]:
                        k.add(t.ticks, t.lots, t.binance_id, not t.buyer_is_maker)
            binance_frames(m, trades, changes, now, keys, frames)
            if trades:
                # Only resting orders can fill; most runs have none, and this is once per symbol a tick.
                if binance_orders:
                    self.binance_private.on_step(m, trades)
                if bybit_orders:
                    self.bybit_private.on_step(m, trades)
            if changes or bybit_keys:
                # Book changes move the Bybit book whoever listens; trades are frames only for a listener.
                bybit_frames(m, trades, changes, now, keys, frames)
        if klines:
            self._kline_frames(now, frames)
        self._dispatch(frames)
        self.ticks += 1

    def _stepping(self) -> list[SymbolMarket]:
        """The symbols that move this tick: every steady one, and quiet ones drawn by their activity."""
        if not self._quiet:
            return self._steady
        weights = self._quiet_weights
        drawn = self.rng.choices(self._quiet, cum_weights=weights, k=poisson(self.rng, weights[-1]))
        return [*self._steady, *drawn] if drawn else self._steady

    def _kline_frames(self, now: int, frames: list[Frame]) -> None:
        for sym, candles in self._klines.items():
            for i, (venue, code, k) in enumerate(candles):
                side = self.binance if venue == "binance" else self.bybit
                sent_key = (venue, sym, code)
                start = now - now % k.width_ms
                if start > k.start_ms:
                    frames.append(side.kline_frame(sym, code, k, closed=True, now=now))
                    candles[i] = (venue, code, Kline(start, k.width_ms, k.close))
                    self._kline_sent[sent_key] = now
                elif k.trades and now - self._kline_sent.get(sent_key, 0) >= 1000:
                    self._kline_sent[sent_key] = now
                    frames.append(side.kline_frame(sym, code, k, closed=False, now=now))

    def _dispatch(self, frames: list[Frame]) -> int:
        """Queue each frame on the open connections of its venue subscribed to its key."""
        if not frames:
            return 0
        queued = 0
        conns = [c for c in self.connections if c.open]
        for f in frames:
            for c in conns:
                if c.venue != f.venue or (f.key and f.key not in c.subs):
                    continue
                if f.withheld:
                    c.skipped += 1
                else:
                    c.push(f)
                    queued += 1
        return queued

    def _subs_changed(self) -> None:
        keys: set[str] = set()
        bybit = False
        for c in self.connections:
            if c.open:
                keys |= c.subs
                bybit = bybit or (c.venue == "bybit" and bool(c.subs))
        self._keys = frozenset(keys)
        self._bybit_keys = bybit
        now = self.now_ms()
        for key in keys:
            self._open_kline("binance", self.binance.kline_of(key), now)
            self._open_kline("bybit", self.bybit.kline_of(key), now)
        self._subs_event.set()
        self._drained.set()

    def _open_kline(self, venue: Venue, stream: tuple[str, str, int] | None, now: int) -> None:
        """Start the candle of a newly subscribed kline stream, opening at the current best bid."""
        if stream is None:
            return
        sym, code, width = stream
        candles = self._klines.setdefault(sym, [])
        if any(v == venue and c == code for v, c, _ in candles):
            return
        m = self.markets.get(sym)
        last = m.top()[0] if m is not None else None
        candles.append((venue, code, Kline(now - now % width, width, last or 0)))


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

