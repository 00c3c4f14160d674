"""Binance Spot market data: combined streams, live SUBSCRIBE, and the REST-snapshot depth sync.

Wire format and rules: Binance ``web-socket-streams.md`` ("How to manage a
local order book correctly") and ``rest-api.md`` (``GET /api/v3/depth``).

What a strategy receives:

- ``trade`` / ``aggTrade`` → ``Trade`` (``side`` is the taker's: ``m`` true means
  the buyer was the maker, so the taker sold). Their ids (``t``, ``a``) are
  consecutive per stream: a jump, on one connection or across a reconnect, is a
  ``Gap(symbol, "trade_ids", ...)`` published just before the trade after it.
- ``depth`` (``<symbol>@depth@100ms``) → a ``Book`` after every applied diff, from
  an ``L2Book`` synced to the REST snapshot with the documented ``U``/``u`` rules;
  a missing diff is a gap: the book is rebuilt from a new snapshot.
- ``bookTicker`` → a ``Book`` as well. Without ``depth`` it is the one-level top
  of book. With ``depth`` the ticker is fresher than the 100 ms diffs, so the
  published book is the maintained one with its top replaced by the ticker's
  (levels the ticker proves gone are left out); tickers older than the book
  publish nothing. ``bookTicker`` carries no event time, so ``exchange_ts_ns`` is
  0 on books it produced. The maintained ``L2Book`` itself only ever holds what
  the depth stream said, so it can be compared with the venue's.
- ``kline_<interval>`` → a ``Bar`` when the kline closes (``x`` true).

Frames decode with typed ``msgspec`` structs (one per channel, picked by the
stream name of the envelope) straight into events, with no dict between:
the envelope's ``data`` stays raw JSON until its stream says what it is.
Control replies, ``serverShutdown`` and anything odd take a slower path
(``orjson`` objects) that reports each the way it always did. Every price
and quantity is checked on the way in (``_venue.levels``,
``trade_values``): a frame with a value no market could mean is refused and
counted, a frame whose fields have the wrong types or are missing is
counted as malformed, and a depth book that refused a level is resynced.

REST depth snapshots spend request weight (``GET /api/v3/depth``: 5, 25, 50 or
250 for limits up to 100, 500, 1000, 5000) from a per-minute budget
(``rest_weight_budget``, well under the venue's 6000 per IP), one sync per
symbol at a time; a 429 or 418 answer holds every request for its Retry-After.

Symbols a SUBSCRIBE confirmed go into the URL of later connections
(``/stream?streams=...``); new ones are subscribed live, so a symbol the venue
refuses is reported by name and retried with backoff instead of silently
yielding nothing. ``serverShutdown`` and the 24-hour connection limit trigger
a planned, make-before-break reconnect: no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx
import msgspec
import orjson
import trio

from .._core._events import Bar, Book, Event, Gap, Level, Trade
from .._core._market import L2Book
from .._errors import ConfigError, ConnectorError, FloxError
from ._budget import WeightBudget
from ._options import SessionOptions, make_options
from ._session import Session
from ._status import BinanceStatus
from ._venue import (
    MAX_VALUE,
    Link,
    Num,
    RefusedValue,
    SessionPort,
    WireOp,
    as_int,
    bar_values,
    check_ws_url,
    levels,
    load_object,
    trade_values,
)

_DEFAULTS: dict[str, Any] = {
    # 5 incoming messages per second per connection, pongs included: stay under it.
    "control_interval": 0.25,
    # Connections are cut at 24 h; move to a fresh one ten minutes before.
    "max_connection_age": 24 * 3600.0 - 600.0,
    # The server pings every 20 s and trio-websocket answers; no client pings needed.
    "ping_interval": 0.0,
}
_KLINE_INTERVALS = frozenset(["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"])
# Buffered diffs while a snapshot is on its way; beyond this the oldest go (the sync refetches).
_MAX_BUFFER = 10_000
# Waited after a 429 or 418 that names no Retry-After: the venue's whole counting window.
_DEFAULT_RETRY_AFTER = 60.0

#: A stream's route: (decode its payload, the channel's handler, symbol, stream name).
Route = tuple[Callable[[bytes], Any], Callable[[str, str, Any, int, list[Event]], None], str, str]
#: Beyond this the URL of a new connection names no more streams (the rest are subscribed live):
#: HTTP servers refuse long request lines (h11, under the simulator, stops at 16 KiB of head).
_MAX_URL = 8000


# --- the wire, as typed structs (field names are the venue's; ``Num``: a JSON string or number) ----


class _Envelope(msgspec.Struct):
    """A combined-stream frame; ``data`` stays raw until the stream says what it is."""

    stream: str
    data: msgspec.Raw


class _TradeMsg(msgspec.Struct):
    id: int = msgspec.field(name="t")
    p: Num
    q: Num
    time: int = msgspec.field(name="T")
    m: bool


class _AggTradeMsg(msgspec.Struct):
    id: int = msgspec.field(name="a")
    p: Num
    q: Num
    time: int = msgspec.field(name="T")
    m: bool


class _BookTickerMsg(msgspec.Struct):
    u: int
    bid: Num = msgspec.field(name="b")
    bid_qty: Num = msgspec.field(name="B")
    ask: Num = msgspec.field(name="a")
    ask_qty: Num = msgspec.field(name="A")


class _DepthMsg(msgspec.Struct):
    first: int = msgspec.field(name="U")
    last: int = msgspec.field(name="u")
    time: int = msgspec.field(name="E")
    bids: list[tuple[Num, Num]] = msgspec.field(name="b")
    asks: list[tuple[Num, Num]] = msgspec.field(name="a")


class _KlineBody(msgspec.Struct):
    start: int = msgspec.field(name="t")
    end: int = msgspec.field(name="T")
    closed: bool = msgspec.field(name="x")
    o: Num
    h: Num
    low: Num = msgspec.field(name="l")
    c: Num
    v: Num
    n: int


class _KlineMsg(msgspec.Struct):
    k: _KlineBody


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_PAYLOADS: dict[str, Callable[[bytes], Any]] = {
    "trade": msgspec.json.Decoder(_TradeMsg).decode,
    "aggTrade": msgspec.json.Decoder(_AggTradeMsg).decode,
    "bookTicker": msgspec.json.Decoder(_BookTickerMsg).decode,
    "depth": msgspec.json.Decoder(_DepthMsg).decode,
    "kline": msgspec.json.Decoder(_KlineMsg).decode,
}
#: A diff held while the snapshot is on its way: (U, u, E, bids, asks), its levels already checked.
_Diff = tuple[int, int, int, list[Level], list[Level]]


class SnapshotError(ConnectorError):
    """The REST depth snapshot could not be fetched or read (it is retried with backoff)."""


class _RateLimited(SnapshotError):
    """The venue answered 429 (too much weight) or 418 (banned for going on): wait ``retry_after``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def depth_weight(limit: int) -> int:
    """The request weight of ``GET /api/v3/depth`` with ``limit`` levels (``rest-api.md``)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class _DepthState:
    __slots__ = ("after_gap", "book", "buffer", "fetching", "synced", "ticker")

    def __init__(self, symbol: str) -> None:
        self.book = L2Book(symbol, "binance")
        self.synced = False
        self.fetching = False
        self.after_gap = False
        self.buffer: list[_Diff] = []
        self.ticker: tuple[int, Level, Level] | None = None


class BinanceVenue:
    """The Binance Spot wire format and its depth-sync rules; a ``Venue`` for ``Session``."""

    name = "binance"
    # "A single connection can listen to a maximum of 1024 streams."
    max_topics_per_connection = 1024
    max_topics_per_request = 200
    # "There is a limit of 300 connections per attempt every 5 minutes per IP."
    connects_per_window = 300

    def __init__(self, ws_url: str, rest_url: str, channels: Sequence[str], options: SessionOptions) -> None:
        self.ws_url = check_ws_url("Binance", ws_url.removesuffix("/").removesuffix("/stream").removesuffix("/ws"))
        if not rest_url.startswith(("http://", "https://")):
            raise ConfigError(f"Binance rest_url must start with http:// or https://, got {rest_url!r}")
        self.rest_url = rest_url.rstrip("/")
        if isinstance(channels, str):
            channels = [channels]
        self.channels = tuple(channels)
        self._streams: list[tuple[str, Route]] = [self._channel(c) for c in self.channels]
        if not self._streams:
            raise ConfigError("Binance needs at least one channel, e.g. channels=('trade',)")
        self._options = options
        self._has_depth = any(s.startswith("depth") for s, _ in self._streams)
        self._ts = 1_000_000 if options.time_unit == "ms" else 1_000
        self._routes: dict[str, Route] = {}
        self.books: dict[str, _DepthState] = {}
        self._tickers: dict[str, int] = {}
        # The last trade id published per trade stream ("btcusdt@trade"): the next must be one more.
        self._last_id: dict[str, int] = {}
        # Streams whose repeats of a planned predecessor's trades are still being dropped.
        self._dedupe: set[str] = set()
        self._last_bar: dict[str, int] = {}
        self._confirmed: set[str] = set()
        self._http: httpx.AsyncClient | None = None
        self._syncs: trio.Nursery | None = None
        self._port: SessionPort
        self._budget = WeightBudget(options.rest_weight_budget)
        #: Completed REST syncs of a depth book (initial ones included).
        self.book_syncs = 0
        #: Snapshots refetched because they were older than the first buffered diff.
        self.stale_snapshots = 0
        #: REST answers 429 or 418.
        self.rate_limited = 0

    @property
    def resyncs_waiting(self) -> int:
        """Book syncs waiting for REST weight budget (or a Retry-After) right now."""
        return self._budget.waiting

    @property
    def rest_weight_used(self) -> int:
        return self._budget.used()

    def _channel(self, name: str) -> tuple[str, Route]:
        """The stream suffix of a channel, and its route (symbol and stream name filled in per symbol)."""
        if name in ("trade", "aggTrade"):
            return name, (_PAYLOADS[name], self._on_trade, "", "")
        if name == "bookTicker":
            return name, (_PAYLOADS[name], self._on_book_ticker, "", "")
        if name in ("depth", "depth@100ms"):
            return "depth@100ms", (_PAYLOADS["depth"], self._on_depth, "", "")
        if name in ("depth@1000ms",):
            return "depth", (_PAYLOADS["depth"], self._on_depth, "", "")
        if name.startswith("kline_") and name[6:] in _KLINE_INTERVALS:
            return name, (_PAYLOADS["kline"], self._on_kline, "", "")
        raise ConfigError(
            f"Binance channel {name!r} is not supported; use trade, aggTrade, bookTicker, depth, "
            f"depth@1000ms or kline_<interval> with interval one of {' '.join(sorted(_KLINE_INTERVALS))}"
        )

    # --- Venue: the session's side ----------------------------------------------------------------

    def bind(self, port: SessionPort) -> None:
        self._port = port

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._has_depth:
            task_status.started()
            return
        opts = self._options
        client = httpx.AsyncClient(base_url=self.rest_url, timeout=opts.request_timeout,
                                   headers={"User-Agent": "flox-trio"})
        try:
            async with trio.open_nursery() as nursery:
                self._http, self._syncs = client, nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            # The session usually ends by cancellation; an unshielded aclose() would be
            # cancelled at its first await and leave pooled sockets open.
            with trio.CancelScope(shield=True), trio.move_on_after(opts.disconnect_timeout):
                await client.aclose()

    def topics(self, symbol: str) -> list[str]:
        low = symbol.lower()
        return [f"{low}@{stream}" for stream, _ in self._streams]

    def resync_topics(self, symbol: str) -> list[str]:
        # Books resync from the REST snapshot; nothing to subscribe again.
        return []

    def connect_url(self, symbols: frozenset[str]) -> tuple[str, frozenset[str]]:
        # Symbols the venue already accepted ride in the URL; new ones are subscribed
        # live, so a refusal comes back as a reply naming them.
        live: set[str] = set()
        streams: list[str] = []
        length = len(self.ws_url) + 40
        for s in sorted(symbols & self._confirmed):
            topics = self.topics(s)
            grow = sum(len(t) + 1 for t in topics)
            if len(streams) + len(topics) > self.max_topics_per_connection or length + grow > _MAX_URL:
                break
            live.add(s)
            streams.extend(topics)
            length += grow
        params = []
        if streams:
            params.append("streams=" + "/".join(streams))
        if self._options.time_unit == "us":
            params.append("timeUnit=MICROSECOND")
        url = f"{self.ws_url}/stream" + ("?" + "&".join(params) if params else "")
        return url, frozenset(live)

    def request_text(self, op: WireOp, req_id: str, topics: Sequence[str]) -> str:
        return orjson.dumps({"method": op.upper(), "params": list(topics), "id": int(req_id)}).decode()

    def ping_text(self, n: int) -> None:
        # The server pings every 20 s; a client that pings at all uses protocol pings.
        return None

    def subscribed(self, symbols: Sequence[str]) -> None:
        self._confirmed.update(symbols)

    def symbols_changed(self, added: frozenset[str], removed: frozenset[str]) -> None:
        for s in added:
            low = s.lower()
            for stream, (parse, handler, _, _) in self._streams:
                self._routes[f"{low}@{stream}"] = (parse, handler, s, f"{low}@{stream}")
            if self._has_depth and s not in self.books:
                self.books[s] = _DepthState(s)
        for s in removed:
            low = s.lower()
            for stream, _ in self._streams:
                self._routes.pop(f"{low}@{stream}", None)
                self._last_bar.pop(f"{low}@{stream}", None)
                self._last_id.pop(f"{low}@{stream}", None)
                self._dedupe.discard(f"{low}@{stream}")
            self.books.pop(s, None)
            self._tickers.pop(s, None)

    def connection_lost(self, symbols: frozenset[str]) -> None:
        """Nothing to reset: what went by meanwhile shows as a gap on the next connection.

        Diffs missed resync the book; trade ids missed are a ``Gap`` before the
        new connection's first trade, since the last ids are kept.
        """

    def handover(self, symbols: frozenset[str]) -> None:
        # The successor repeats what the old connection delivered last; trade ids
        # are consecutive per stream, so its trades up to those are dropped.
        routes = self._routes
        self._dedupe |= {st for st in self._last_id if st in routes and routes[st][2] in symbols}

    # --- decoding ----------------------------------------------------------------------------------

    def decode(self, link: Link, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        # The fast path: a data frame of a routed stream, typed from the wire up.
        try:
            env = _decode_envelope(msg)
        except msgspec.DecodeError:  # (ValidationError included) not a data frame, or not JSON
            return self._decode_other(link, msg, recv_ns)
        route = self._routes.get(env.stream)
        if route is None:
            return self._decode_other(link, msg, recv_ns)
        return self._route(link, msg, route, env.data, recv_ns)

    def _route(self, link: Link, msg: str | bytes, route: Route, data: msgspec.Raw | bytes,
               recv_ns: int) -> list[Event] | None:
        parse, handler, sym, stream = route
        if sym not in link.symbols:
            # Another connection carries it now (or it was dropped a moment ago).
            self._port.late_frame()
            return None
        try:
            payload = parse(data)
        except msgspec.DecodeError as exc:
            if bytes(data)[:1] != b"{":
                self._port.frame_error(link, "malformed envelope", msg)
            else:
                self._port.frame_error(link, f"malformed {stream} payload", msg, exc)
            return None
        out: list[Event] = []
        try:
            handler(sym, stream, payload, recv_ns, out)
        except RefusedValue as exc:
            self._port.refused(link, msg, exc)
            return None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            self._port.frame_error(link, f"malformed {stream} payload", msg, exc)
            return None
        return out

    def _decode_other(self, link: Link, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        """Control replies, venue events, and every frame the typed envelope does not fit."""
        frame = load_object(self._port, link, msg)
        if frame is None:
            return None
        stream = frame.get("stream")
        if stream is not None:
            data = frame.get("data")
            # Any JSON value may come as a stream name; only a string can name a route.
            route = self._routes.get(stream) if type(stream) is str else None
            if route is None or type(data) is not dict:
                self._odd_stream(link, stream, data, msg)
                return None
            # An envelope only orjson reads (the two parsers differ at the edges): its payload still decodes typed.
            return self._route(link, msg, route, orjson.dumps(data), recv_ns)
        if "id" in frame and ("result" in frame or "error" in frame or "code" in frame):
            self._control_reply(link, frame)
        elif frame.get("e") == "serverShutdown":
            link.request_planned("serverShutdown")
        elif "code" in frame and "msg" in frame:
            self._port.error("venue error", f"Binance error {frame['code']}: {frame['msg']}", connection_id=link.id)
        else:
            self._port.frame_error(link, "unknown frame", msg)
        return None

    def _odd_stream(self, link: Link, stream: Any, data: Any, msg: str | bytes) -> None:
        if stream == "!serverShutdown" or (type(data) is dict and data.get("e") == "serverShutdown"):
            link.request_planned("serverShutdown")
            return
        if type(stream) is str and "@" in stream and stream.split("@", 1)[0].upper() not in self._port.wanted:
            # Unsubscribed a moment ago; frames already on the wire still arrive.
            self._port.late_frame()
            return
        self._port.frame_error(link, f"unknown stream {stream!r}" if type(data) is dict else "malformed envelope",
                               msg)

    def _control_reply(self, link: Link, frame: dict[str, Any]) -> None:
        rid = frame.get("id")
        key = str(rid) if rid is not None else None
        err = frame.get("error")
        if err is None and "code" in frame:
            err = {"code": frame.get("code"), "msg": frame.get("msg")}
        if err is None:
            link.reply(key, True, "")
            return
        if type(err) is dict:
            text = f"Binance error {err.get('code')}: {err.get('msg')}"
        else:
            text = f"Binance error {err!r}"
        link.reply(key, False, text)

    # --- channel handlers: (symbol, stream, payload, recv_ns, out) ---------------------------------

    def _on_trade(self, sym: str, stream: str, d: _TradeMsg | _AggTradeMsg, recv_ns: int, out: list[Event]) -> None:
        t = d.id
        last = self._last_id.get(stream)
        if last is not None and t <= last and stream in self._dedupe:
            return  # a planned successor repeating what its predecessor delivered
        price, qty = float(d.p), float(d.q)
        if not (0.0 < price <= MAX_VALUE and 0.0 < qty <= MAX_VALUE):
            trade_values(price, qty)
        ts = d.time * self._ts
        # Only a trade that decoded whole moves the sequence on: a refused or
        # malformed one is missing, and the next trade says so.
        if last is not None and t != last + 1:
            channel = stream.partition("@")[2]
            if t > last:
                out.append(Gap(sym, "trade_ids", t - last - 1, str(last + 1), str(t - 1), ts, recv_ns, "binance"))
                self._port.trade_gap(sym, channel, last + 1, t)
            else:
                self._port.error("trade ids went back", f"{sym} {channel}: id {t} came after {last}; the sequence "
                                 "starts over from it", connection_id=self._port.connection_for(sym), symbol=sym)
        if self._dedupe:
            self._dedupe.discard(stream)
        out.append(Trade(sym, price, qty, "sell" if d.m else "buy", str(t), ts, recv_ns, "binance"))
        self._last_id[stream] = t

    def _on_book_ticker(self, sym: str, stream: str, d: _BookTickerMsg, recv_ns: int, out: list[Event]) -> None:
        u = d.u
        bid: Level = (float(d.bid), float(d.bid_qty))
        ask: Level = (float(d.ask), float(d.ask_qty))
        if not (0.0 < bid[0] <= MAX_VALUE and 0.0 < bid[1] <= MAX_VALUE
                and 0.0 < ask[0] <= MAX_VALUE and 0.0 < ask[1] <= MAX_VALUE):
            _ticker_side(bid)
            _ticker_side(ask)
        st = self.books.get(sym)
        if st is None:
            if u <= self._tickers.get(sym, 0):
                return
            self._tickers[sym] = u
            out.append(Book(sym, (bid,) if bid[1] > 0 else (), (ask,) if ask[1] > 0 else (), 0, recv_ns,
                            "binance", u))
            return
        if st.ticker is not None and u <= st.ticker[0]:
            return
        st.ticker = (u, bid, ask)
        if not st.synced:
            out.append(Book(sym, (bid,) if bid[1] > 0 else (), (ask,) if ask[1] > 0 else (), 0, recv_ns,
                            "binance", u))
        elif u > st.book.seq:
            out.append(self._book_event(st, 0, recv_ns))

    def _book_event(self, st: _DepthState, exchange_ts_ns: int, recv_ns: int) -> Book:
        depth = self._options.book_depth
        book = st.book
        bids, asks = book.top(depth)
        seq = book.seq
        t = st.ticker
        if t is not None and t[0] > seq:
            seq, (bp, bq), (ap, aq) = t
            if bq > 0:
                bids = ((bp, bq), *(lv for lv in bids if lv[0] < bp))[:depth]
            if aq > 0:
                asks = ((ap, aq), *(lv for lv in asks if lv[0] > ap))[:depth]
        return Book(book.symbol, bids, asks, exchange_ts_ns, recv_ns, "binance", seq)

    def _on_depth(self, sym: str, stream: str, d: _DepthMsg, recv_ns: int, out: list[Event]) -> None:
        st = self.books[sym]
        first, last = d.first, d.last
        if first > last:
            raise ValueError(f"first update id U={first} is after the final one u={last}")
        try:
            bids, asks = levels(d.bids), levels(d.asks)
        except RefusedValue as exc:
            if st.synced and last > st.book.seq:
                # The diff cannot be applied, so the book is no longer the venue's: rebuild it.
                self._gap(sym, st, st.book.seq + 1, first)
                st.buffer = []
                if not st.fetching:
                    self._start_sync(sym, st)
                exc.outcome = "frame skipped, book resynced from a REST snapshot"
            raise
        if not st.synced:
            buf = st.buffer
            buf.append((first, last, d.time, bids, asks))
            if len(buf) > _MAX_BUFFER:
                del buf[: len(buf) // 2]
            if not st.fetching:
                self._start_sync(sym, st)
            return
        book = st.book
        if last <= book.seq:
            return
        if first > book.seq + 1:
            self._gap(sym, st, book.seq + 1, first)
            st.buffer = [(first, last, d.time, bids, asks)]
            if not st.fetching:
                self._start_sync(sym, st)
            return
        exchange_ts = d.time * self._ts
        try:
            book.apply_delta(bids, asks, last)
        except FloxError as exc:
            # Half-applied: the book is no longer the venue's. Rebuild it.
            self._port.error("bad depth level", f"{sym}: {exc}", connection_id=self._port.connection_for(sym),
                             symbol=sym)
            self._gap(sym, st, book.seq + 1, first)
            st.buffer = []
            if not st.fetching:
                self._start_sync(sym, st)
            return
        out.append(self._book_event(st, exchange_ts, recv_ns))

    def _on_kline(self, sym: str, stream: str, d: _KlineMsg, recv_ns: int, out: list[Event]) -> None:
        k = d.k
        if not k.closed:
            return
        start, end = k.start, k.end
        if start <= self._last_bar.get(stream, -1):
            return
        f = self._ts
        o, h, lo, c, v = float(k.o), float(k.h), float(k.low), float(k.c), float(k.v)
        bar_values(o, h, lo, c, v)
        bar = Bar(sym, o, h, lo, c, v, k.n, start * f, (end + 1) * f, (end + 1 - start) * f / 1e9, "binance")
        self._last_bar[stream] = start
        out.append(bar)

    # --- depth sync: steps 3-7 of "How to manage a local order book correctly" ---------------------

    def _gap(self, sym: str, st: _DepthState, expected: int, got: int) -> None:
        st.synced = False
        st.after_gap = True
        self._port.gap(sym, "depth", expected, got)

    def _start_sync(self, sym: str, st: _DepthState) -> None:
        assert self._syncs is not None, "depth diffs arrive only while run() is running"
        st.fetching = True
        self._syncs.start_soon(self._sync_book, sym, st)

    async def _sync_book(self, sym: str, st: _DepthState) -> None:
        try:
            await self._sync_loop(sym, st)
        finally:
            # Once synced, `fetching` already belongs to whatever comes next (a new
            # gap may have started another sync): leave it alone.
            if not st.synced:
                st.fetching = False

    async def _sync_loop(self, sym: str, st: _DepthState) -> bool:
        """Steps 3-7 of the documented procedure, repeated until the book is whole.

        One loop per symbol at a time (``fetching``): gaps while it runs only
        change what it waits for, so a storm of gaps costs one snapshot per
        turn of the loop, and every turn waits for its weight in the budget.
        """
        backoff = self._port.backoff()
        weight = depth_weight(self._options.snapshot_limit)
        while self.books.get(sym) is st and not st.synced:
            await self._budget.spend(weight)
            if self.books.get(sym) is not st:
                return False
            try:
                last_id, bids, asks = await self._fetch_snapshot(sym)
            except _RateLimited as exc:
                self.rate_limited += 1
                self._budget.pause(exc.retry_after)
                self._port.error("REST rate limit", f"{exc}; no REST request for {exc.retry_after:g} s",
                                 symbol=sym, retry_in=exc.retry_after)
                continue
            except SnapshotError as exc:
                delay = backoff.next_delay()
                self._port.error("depth snapshot failed", f"{exc}; retrying in {delay:.3g} s",
                                 symbol=sym, retry_in=delay)
                await trio.sleep(delay)
                continue
            if self.books.get(sym) is not st:
                return False
            buf = st.buffer
            if buf and last_id < buf[0][0]:
                # Step 4: the snapshot is older than the first diff we hold.
                self.stale_snapshots += 1
                await trio.sleep(min(backoff.next_delay(), 1.0))
                continue
            try:
                if self._apply_snapshot(sym, st, last_id, bids, asks):
                    return True
            except FloxError as exc:  # a negative or NaN level in the snapshot itself
                delay = backoff.next_delay()
                self._port.error("bad depth snapshot", f"{sym}: {exc}; retrying in {delay:.3g} s",
                                 symbol=sym, retry_in=delay)
                await trio.sleep(delay)
        return False

    def _apply_snapshot(self, sym: str, st: _DepthState, last_id: int, bids: list[Level], asks: list[Level]) -> bool:
        book = st.book
        pending = [e for e in st.buffer if e[1] > last_id]
        book.apply_snapshot(bids, asks, last_id)
        # The snapshot has no time of its own; it includes at least every diff we hold.
        exchange_ts = st.buffer[-1][2] * self._ts if st.buffer else 0
        for i, (first, last, _time, diff_bids, diff_asks) in enumerate(pending):
            if last <= book.seq:
                continue
            if first > book.seq + 1:
                self._gap(sym, st, book.seq + 1, first)
                st.buffer = pending[i:]
                return False
            try:
                book.apply_delta(diff_bids, diff_asks, last)
            except FloxError as exc:
                self._port.error("malformed buffered depth diff", f"{sym}: {exc}",
                                 connection_id=self._port.connection_for(sym), symbol=sym)
                st.buffer = pending[i + 1:]
                return False
        st.buffer = []
        st.synced = True
        st.fetching = False
        self.book_syncs += 1
        if st.after_gap:
            st.after_gap = False
            self._port.resynced(sym, "depth", book.seq)
        # Queued now, so it is published after every diff the reader queued before it.
        self._port.queue([self._book_event(st, exchange_ts, self._port.wall_ns())])
        return True

    async def _fetch_snapshot(self, sym: str) -> tuple[int, list[Level], list[Level]]:
        assert self._http is not None, "depth syncs run only while run() is running"
        where = f"GET {self.rest_url}/api/v3/depth?symbol={sym}"
        timeout = self._options.request_timeout
        try:
            with trio.fail_after(timeout):
                resp = await self._http.get("/api/v3/depth", params={"symbol": sym,
                                                                     "limit": self._options.snapshot_limit})
        except trio.TooSlowError:
            raise SnapshotError(f"{where} took longer than {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise SnapshotError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if resp.status_code in (418, 429):
            raise _RateLimited(f"{where} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                               _retry_after(resp.headers.get("retry-after")))
        if resp.status_code != 200:
            raise SnapshotError(f"{where} answered HTTP {resp.status_code}: {resp.text[:200]!r}")
        try:
            body = orjson.loads(resp.content)
            return as_int(body["lastUpdateId"], "lastUpdateId"), levels(body["bids"]), levels(body["asks"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"{where} returned a malformed body ({exc}): {resp.text[:200]!r}") from exc


def _ticker_side(level: Level) -> None:
    """A bookTicker side: a level, or (0, 0) for an empty side; anything else is refused."""
    p, q = level
    if q == 0.0 and 0.0 <= p <= MAX_VALUE:
        return
    if not 0.0 < p <= MAX_VALUE:
        raise RefusedValue("level price", p)
    if not 0.0 < q <= MAX_VALUE:
        raise RefusedValue("level quantity", q)


def _retry_after(value: str | None) -> float:
    """Seconds of a Retry-After header (Binance sends whole seconds); the whole window if absent or odd."""
    try:
        seconds = float(value) if value is not None else _DEFAULT_RETRY_AFTER
    except ValueError:
        return _DEFAULT_RETRY_AFTER
    return seconds if 0.0 <= seconds <= 7 * 86400 else _DEFAULT_RETRY_AFTER


class Binance(Session):
    """Binance Spot public market data over combined streams.

    ``Binance(symbols, *, ws_url="wss://stream.binance.com:9443",
    rest_url="https://api.binance.com", channels=("trade", "bookTicker", "depth"),
    **options)``. Channels: ``trade``, ``aggTrade``, ``bookTicker``, ``depth``
    (= ``depth@100ms``), ``depth@1000ms``, ``kline_<interval>``. Options: see
    ``SessionOptions`` (Binance adds ``snapshot_limit`` and ``time_unit``).
    The wire format lives in ``BinanceVenue``; this class only composes it.
    """

    def __init__(
        self,
        symbols: Sequence[str] | str,
        *,
        ws_url: str = "wss://stream.binance.com:9443",
        rest_url: str = "https://api.binance.com",
        channels: Sequence[str] = ("trade", "bookTicker", "depth"),
        **options: Any,
    ) -> None:
        opts = make_options("Binance", options, _DEFAULTS,
                            venue_only=("snapshot_limit", "rest_weight_budget", "time_unit"))
        venue = BinanceVenue(ws_url, rest_url, channels, opts)
        super().__init__(symbols, venue, opts)
        self._binance = venue

    @property
    def rest_url(self) -> str:
        return self._binance.rest_url

    @property
    def book_syncs(self) -> int:
        """Completed REST syncs of a depth book (initial ones included)."""
        return self._binance.book_syncs

    @property
    def stale_snapshots(self) -> int:
        """Snapshots refetched because they were older than the first buffered diff."""
        return self._binance.stale_snapshots

    def status(self) -> BinanceStatus:
        venue = self._binance
        return BinanceStatus(**self._status_fields(), book_syncs=self.book_syncs,
                             stale_snapshots=self.stale_snapshots, resyncs_waiting=venue.resyncs_waiting,
                             rest_weight_used=venue.rest_weight_used, rate_limited=venue.rate_limited)
