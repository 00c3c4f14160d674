"""Binance Spot as the simulator serves it: streams, control messages and REST.

The wire format (``web-socket-streams.md``, ``rest-api.md`` of
binance/binance-spot-api-docs, checked against recorded traffic):

* streams ``<symbol>@trade``, ``@aggTrade``, ``@bookTicker``, ``@depth`` /
  ``@depth@100ms`` (diffs with ``U``/``u`` update ids) and ``@kline_<interval>``,
  named in the URL (``/stream?streams=a/b``, ``/ws/a/b``) or by live
  ``SUBSCRIBE``; ``/stream`` wraps each payload as ``{"stream":..,"data":..}``;
* ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/
  ``GET_PROPERTY`` and their ``{"result":..,"id":..}`` / ``{"error":..}`` replies;
* ``GET /api/v3/depth`` (the snapshot a client syncs its book with) and
  ``GET /api/v3/exchangeInfo`` (the symbols and their trading rules), each
  costing its request weight (depth: 5/25/50/250 by ``limit``) out of 6000 a
  minute: past it 429 with Retry-After, and 418 (banned) for going on;
* every price and quantity is a string with exactly 8 decimals
  (``"0.35130000"``, ``"0.00000000"`` for a removed level), as in every
  recorded frame and REST body: clients such as python-binance delete a
  level only on that exact string.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson
import trio

from .._errors import ConfigError
from ._connection import STAMP, Frame, SimConnection, TradeId
from ._market import (
    Change,
    Kline,
    Levels,
    SimBook,
    SimTrade,
    SymbolMarket,
    SymbolSpec,
    WireLevel,
    decimals,
    in_units,
)
from ._transport import HttpResponse

if TYPE_CHECKING:
    from ._faults import Faults

log = logging.getLogger("flox_trio.sim")

STREAM_KINDS: Final = frozenset({"trade", "aggTrade", "bookTicker", "depth", "depth@100ms"})
INTERVALS: Final[Mapping[str, int]] = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800,
    "1M": 2592000,
}
#: The payload fields a stamped frame gets at write time.
_TIMES: Final[tuple[str, ...]] = ("E", "T")
#: A trade frame cut short: not valid JSON.
MALFORMED_FRAME: Final = '{"stream":"btcusdt@trade","data":{"e":"trade","E":17000'
#: ``GET /api/v3/depth``: "Default: 100; Maximum: 5000. If limit > 5000, only 5000 entries will be returned."
DEPTH_LIMIT_DEFAULT: Final = 100
DEPTH_LIMIT_MAX: Final = 5000

_PLACES = 8
_ONE = 10**_PLACES
_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")
_LIMIT = re.compile(r"[0-9]{1,20}")
# Longest first, so FDUSD is not read as ...USD.
_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "USDP", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL",
           "JPY", "GBP", "AUD", "MXN", "PLN", "RON", "UAH", "ZAR", "ARS", "COP", "IDR", "CZK")
# The venue's smallest order value per quote asset, in 1e-8 (the NOTIONAL filter); 5 for the rest.
_MIN_NOTIONAL = {"BTC": 10_000, "ETH": 100_000, "BNB": 1_000_000}
_ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
_RATE_LIMITS = (
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
)
_SYMBOL_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK")
#: ``REQUEST_WEIGHT`` per ``MINUTE`` (the limit ``exchangeInfo`` lists).
WEIGHT_LIMIT: Final = 6000
#: "A single connection can listen to a maximum of 1024 streams."
MAX_STREAMS: Final = 1024
#: "There is a limit of 300 connections per attempt every 5 minutes per IP."
CONNECT_LIMIT: Final = (300, 300.0)
# Requests refused with 429 in one minute before the IP is banned, and for how long (the
# venue's bans run "from 2 minutes to 3 days" and grow; the shortest is enough here).
_BAN_AFTER = 5
_BAN_SECONDS = 120.0
_TOO_MUCH_WEIGHT = ("Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
                    "Please use WebSocket Streams for live updates to avoid polling the API.")


def serves(route: str) -> bool:
    """Whether a WebSocket path is Binance's (combined ``/stream`` or raw ``/ws``)."""
    return route in ("/stream", "/ws") or route.startswith("/ws/")


def fixed(units: int) -> str:
    """A count of 1e-8 as the venue writes every price and quantity: ``"0.35130000"``."""
    whole, frac = divmod(units, _ONE)
    return f"{whole}.{frac:08d}"


def server_shutdown_frame(now_ms: int) -> Frame:
    """The ``serverShutdown`` event (sent to each connection whatever it subscribed to)."""
    return BinanceFrame("!serverShutdown", {"e": "serverShutdown", "E": now_ms})


class BinanceFrame(Frame):
    """A Binance payload. Rendered per connection when it needs it: combined or raw, in
    milliseconds or microseconds (``timeUnit=MICROSECOND``), or stamped at write time."""

    __slots__ = ("_unstamped", "data", "raw", "stamp")

    def __init__(self, key: str, data: dict[str, Any] | None, *, text: str = "", raw: str | None = None,
                 symbol: str = "", trade_ids: tuple[TradeId, ...] = (), stamp: bool = False,
                 withheld: bool = False) -> None:
        # Not Frame.__init__: one frame per generated trade, and the extra call is a few % of
        # the simulator's cost per frame when it is the load generator of a benchmark.
        self.venue = "binance"
        self.key = key
        self.text = text
        self.symbol = symbol
        self.trade_ids = trade_ids
        self.withheld = withheld
        #: The payload, for frames rendered here (None for recorded frames sent as recorded).
        self.data = data
        #: The payload alone, for raw (``/ws``) connections (None: ``text`` is all there is).
        self.raw = raw
        self.stamp = stamp
        self._unstamped: tuple[tuple[str, ...], str] | None = None

    def render(self, conn: SimConnection) -> str:
        data = self.data
        if self.stamp and (data is not None or self._unstamped is not None):
            body = self._stamped(STAMP)
            return f'{{"stream":"{self.key}","data":{body}}}' if conn.combined else body
        if data is not None and conn.micros:
            d = dict(data)
            for k in ("E", "T"):
                if k in d:
                    d[k] *= 1000
            if "k" in d:
                d["k"] = {**d["k"], "t": d["k"]["t"] * 1000, "T": d["k"]["T"] * 1000 + 999}
            body = orjson.dumps(d).decode()
            return f'{{"stream":"{self.key}","data":{body}}}' if conn.combined else body
        if not self.text:
            body = orjson.dumps(data).decode()
            self.text = f'{{"stream":"{self.key}","data":{body}}}'
            self.raw = body
        if conn.combined or self.raw is None:
            return self.text
        return self.raw

    def _stamped(self, now: str) -> str:
        """The payload with its times (``E``, ``T``) set to ``now``: the rest is rendered once, not per write."""
        parts = self._unstamped
        if parts is None:
            data = self.data
            assert data is not None
            keys = tuple(k for k in _TIMES if k in data)
            keys = _TIMES if keys == _TIMES else keys
            rest = orjson.dumps({k: v for k, v in data.items() if k not in keys}).decode()[1:]
            parts = self._unstamped = (keys, rest)
        keys, rest = parts
        if not keys:
            return "{" + rest
        if keys is _TIMES:
            return f'{{"E":{now},"T":{now},{rest}'
        head = ",".join([f'"{k}":{now}' for k in keys])
        return "{" + head + ("}" if rest == "}" else "," + rest)


_TEXTS_MAX: Final = 4096


def _remember(texts: dict[int, str], key: int, text: str) -> str:
    if len(texts) >= _TEXTS_MAX:
        texts.clear()
    texts[key] = text
    return text


class _Units:
    """One symbol's tick and lot in 1e-8, to render its ticks and lots as the venue does."""

    __slots__ = ("_prices", "_qtys", "lot", "tick")

    def __init__(self, spec: SymbolSpec) -> None:
        if decimals(spec.tick) > _PLACES or decimals(spec.lot) > _PLACES:
            raise ConfigError(f"sim symbol {spec.symbol}: Binance prices and quantities have {_PLACES} decimals; "
                              f"tick {spec.tick} and lot {spec.lot} must be multiples of 0.00000001")
        self.tick = in_units(spec.tick, _PLACES)
        self.lot = in_units(spec.lot, _PLACES)
        # A price walks a tick at a time and sizes repeat: each text is made once (the simulator is the
        # load generator of the latency benchmarks, two of these per trade). Bounded by _TEXTS_MAX.
        self._prices: dict[int, str] = {}
        self._qtys: dict[int, str] = {}

    def price(self, ticks: int) -> str:
        return self._prices.get(ticks) or _remember(self._prices, ticks, fixed(ticks * self.tick))

    def qty(self, lots: int) -> str:
        return self._qtys.get(lots) or _remember(self._qtys, lots, fixed(lots * self.lot))

    def turnover(self, tick_lots: int) -> str:
        """A sum of price x quantity (in tick x lot), truncated to the venue's 8 decimals."""
        return fixed(tick_lots * self.tick * self.lot // _ONE)

    def levels(self, levels: Levels) -> list[WireLevel]:
        return [[self.price(p), self.qty(q)] for p, q in levels]


class _Streams(NamedTuple):
    """One symbol's stream names, made once rather than at every step."""

    trade: str
    agg_trade: str
    depths: tuple[str, str]
    book_ticker: str

    @classmethod
    def of(cls, symbol: str) -> _Streams:
        low = symbol.lower()
        return cls(f"{low}@trade", f"{low}@aggTrade", (f"{low}@depth@100ms", f"{low}@depth"), f"{low}@bookTicker")


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base asset, quote asset) of a symbol such as ``BTCUSDT``."""
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-3], symbol[-3:]


def _error(code: int, msg: str, status: int = 400) -> tuple[int, bytes]:
    return status, orjson.dumps({"code": code, "msg": msg})


def _illegal(param: str, legal: str) -> tuple[int, bytes]:
    return _error(-1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal}'.")


def request_weight(path: str, params: Mapping[str, str]) -> int:
    """What a REST request costs (``rest-api.md``): depth by its limit, exchangeInfo 20, the rest 1."""
    if path == "/api/v3/depth":
        text = params.get("limit", str(DEPTH_LIMIT_DEFAULT))
        limit = int(text) if _LIMIT.fullmatch(text) else DEPTH_LIMIT_DEFAULT
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    return 20 if path == "/api/v3/exchangeInfo" else 1


class BinanceVenue:
    """The Binance side of the simulator: its book mirrors, its frames, its control and REST answers."""

    def __init__(self, specs: Sequence[SymbolSpec], faults: Faults, clock: Callable[[], int], *,
                 stamp: bool = False, weight_limit: int | None = WEIGHT_LIMIT,
                 max_streams: int | None = MAX_STREAMS) -> None:
        self._specs = {s.symbol: s for s in specs}
        self._units = {s.symbol: _Units(s) for s in specs}
        self._streams = {s.symbol: _Streams.of(s.symbol) for s in specs}
        self._faults = faults
        self._clock = clock
        self._stamp = stamp
        #: The book each symbol's REST snapshot serves, with its last update id.
        self.books: dict[str, SimBook] = {}
        #: REST depth requests served: (symbol, lastUpdateId, stale).
        self.rest_requests: list[tuple[str, int, bool]] = []
        #: REST requests, the latest 100,000: (start, end Trio time, path, symbol param, weight, HTTP status).
        self.rest_log: deque[tuple[float, float, str, str, int, int]] = deque(maxlen=100_000)
        self.weight_limit = weight_limit
        #: Streams one connection may listen to (None: no limit).
        self.max_streams = max_streams
        self._minute = -1
        self._weight_used = 0
        self._limited = 0
        self._banned_until = -math.inf
        self._history: dict[str, deque[SimBook]] = {s: deque(maxlen=8) for s in self._specs}
        self._last_history = -math.inf
        self._tops: dict[str, tuple[int | None, int, int | None, int]] = {}

    # --- books ------------------------------------------------------------------------------------

    def start_book(self, market: SymbolMarket, update_id: int) -> None:
        """Mirror a generated book, from update id ``update_id``."""
        sym = market.spec.symbol
        units = self._units[sym]
        bids, asks = market.levels()
        book = self.books[sym] = SimBook()
        book.reset(units.levels(bids), units.levels(asks))
        book.update_id = update_id
        self._tops[sym] = market.top()

    def set_book(self, symbol: str, last_update_id: int, bids: Iterable[WireLevel],
                 asks: Iterable[WireLevel]) -> None:
        book = self.books.setdefault(symbol, SimBook())
        book.reset(bids, asks)
        book.update_id = last_update_id

    def keep_history(self) -> None:
        """Once a second, keep a copy of every book for stale-snapshot faults."""
        now = trio.current_time()
        if now - self._last_history >= 1.0:
            self._last_history = now
            for sym, b in self.books.items():
                self._history.setdefault(sym, deque(maxlen=8)).append(b.copy())

    # --- streams -----------------------------------------------------------------------------------

    def stream_ok(self, stream: str) -> bool:
        sym, sep, kind = stream.partition("@")
        if not sep or sym != sym.lower() or sym.upper() not in self._specs:
            return False
        return kind in STREAM_KINDS or (kind.startswith("kline_") and kind[6:] in INTERVALS)

    def kline_of(self, key: str) -> tuple[str, str, int] | None:
        """(symbol, interval, width in ms) of a kline stream, None for other keys."""
        sym, sep, code = key.partition("@kline_")
        if not sep or code not in INTERVALS or sym.upper() not in self._specs:
            return None
        return sym.upper(), code, 1000 * INTERVALS[code]

    def url_streams(self, path: str) -> list[str]:
        """The streams a connection's URL names (``/stream?streams=a/b``, ``/ws/a/b``)."""
        parts = urlsplit(path)
        streams = [s for v in parse_qs(parts.query).get("streams", []) for s in v.split("/") if s]
        if parts.path.startswith("/ws/"):
            streams += [s for s in parts.path[4:].split("/") if s]
        return streams

    def too_many_streams(self, path: str) -> bool:
        """Whether a URL names more streams than one connection may listen to."""
        return self.max_streams is not None and len(set(self.url_streams(path))) > self.max_streams

    def open(self, conn: SimConnection) -> None:
        """Subscribe a new connection to the streams its URL names."""
        for s in self.url_streams(conn.path):
            if self.stream_ok(s):
                conn.subs.add(s)
            else:
                log.info("sim binance connection %d: ignoring unknown stream %r in the URL", conn.id, s)

    def market_frames(self, market: SymbolMarket, trades: list[SimTrade], changes: list[Change], now: int,
                      keys: frozenset[str], out: list[Frame]) -> None:
        """The frames of one generated step of one symbol, for the streams someone is subscribed to."""
        sym = market.spec.symbol
        units = self._units[sym]
        streams = self._streams[sym]
        stamp = self._stamp
        tkey, akey = streams.trade, streams.agg_trade
        if tkey in keys or akey in keys:
            price, qty = units.price, units.qty
            for t in trades:
                p, q = price(t.ticks), qty(t.lots)
                if stamp and tkey in keys:
                    # Stamped when written (the latency benchmarks, at tens of thousands a second): the
                    # payload is rendered here once, as orjson would, without a dict, its times left
                    # for the write to fill in (in the connection's unit).
                    tid = t.binance_id
                    body = (f'{{"E":{STAMP},"T":{STAMP},"e":"trade","s":"{sym}","t":{tid},"p":"{p}","q":"{q}",'
                            f'"m":{"true" if t.buyer_is_maker else "false"},"M":true}}')
                    out.append(BinanceFrame(tkey, None, text=f'{{"stream":"{tkey}","data":{body}}}', raw=body,
                                            symbol=sym, trade_ids=(tid,)))
                elif tkey in keys:
                    out.append(BinanceFrame(tkey, {
                        "e": "trade", "E": now, "s": sym, "t": t.binance_id, "p": p, "q": q, "T": now,
                        "m": t.buyer_is_maker, "M": True}, symbol=sym, trade_ids=(t.binance_id,), stamp=stamp))
                if akey in keys:
                    out.append(BinanceFrame(akey, {
                        "e": "aggTrade", "E": now, "s": sym, "a": t.binance_id, "p": p, "q": q,
                        "f": t.binance_id, "l": t.binance_id, "T": now, "m": t.buyer_is_maker, "M": True},
                        symbol=sym, trade_ids=(t.binance_id,), stamp=stamp))
        if not changes:
            return
        bids = [[units.price(p), units.qty(q)] for side, p, q in changes if side == "b"]
        asks = [[units.price(p), units.qty(q)] for side, p, q in changes if side == "a"]
        # One diff per step; the update id advances once per changed level.
        book = self.books[sym]
        first = book.update_id + 1
        book.update_id += len(changes)
        book.apply(bids, asks)
        withhold = self._faults.take_gap("binance", sym)
        depth = {"e": "depthUpdate", "E": now, "s": sym, "U": first, "u": book.update_id, "b": bids, "a": asks}
        for dkey in streams.depths:
            if dkey in keys:
                out.append(BinanceFrame(dkey, depth, symbol=sym, withheld=withhold))
        top = market.top()
        if top != self._tops.get(sym):
            self._tops[sym] = top
            if streams.book_ticker in keys:
                bb, bq, ba, aq = top
                out.append(BinanceFrame(streams.book_ticker, {
                    "u": book.update_id, "s": sym, "b": units.price(bb or 0), "B": units.qty(bq),
                    "a": units.price(ba or 0), "A": units.qty(aq)}, symbol=sym))

    def kline_frame(self, sym: str, code: str, k: Kline, *, closed: bool, now: int) -> Frame:
        units = self._units[sym]
        price, qty = units.price, units.qty
        return BinanceFrame(f"{sym.lower()}@kline_{code}", {"e": "kline", "E": now, "s": sym, "k": {
            "t": k.start_ms, "T": k.start_ms + k.width_ms - 1, "s": sym, "i": code,
            "f": k.first_id, "L": k.last_id, "o": price(k.open), "c": price(k.close), "h": price(k.high),
            "l": price(k.low), "v": qty(k.volume), "n": k.trades, "x": closed, "q": units.turnover(k.quote),
            "V": qty(k.taker_base), "Q": units.turnover(k.taker_quote), "B": "0"}}, symbol=sym)

    def recorded(self, text: str, update_books: bool = True) -> Frame:
        """A recorded frame, sent as recorded; diffs newer than the REST book also move it on."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return Frame("binance", "", text)
        if type(msg) is not dict:
            return Frame("binance", "", text)
        key = msg.get("stream", "")
        data = msg.get("data") if "stream" in msg else msg
        raw = orjson.dumps(data).decode() if "stream" in msg else None
        sym = ""
        ids: tuple[str, ...] = ()
        if type(data) is dict:
            sym = str(data.get("s", "")).upper()
            if data.get("e") == "trade":
                ids = (str(data.get("t")),)
            elif data.get("e") == "depthUpdate":
                b = self.books.setdefault(sym, SimBook())
                # A recorded diff older than the book the REST endpoint serves is history.
                if update_books and int(data.get("u", 0)) > b.update_id:
                    b.apply(data.get("b", ()), data.get("a", ()))
                    b.update_id = int(data["u"])
        if type(key) is not str or key.startswith("!"):
            key = ""  # an event for every connection (``!serverShutdown``)
        return BinanceFrame(key, None, text=text, raw=raw, symbol=sym, trade_ids=ids)

    # --- control messages ----------------------------------------------------------------------

    def control(self, conn: SimConnection, text: str) -> bool:
        """Answer one client message; True if it changed the connection's subscriptions."""
        def reply(obj: dict[str, Any]) -> None:
            conn.push(orjson.dumps(obj).decode())

        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            reply({"id": None, "error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}})
            return False
        if type(req) is not dict:
            reply({"id": None, "error": {"code": 3, "msg": "Invalid JSON: expected an object"}})
            return False
        rid = req.get("id")
        if "id" not in req or not (rid is None or type(rid) is int or (type(rid) is str and len(rid) <= 36)):
            reply({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                   "id": None})
            return False
        method = req.get("method")
        if method is None:
            reply({"error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 1"},
                   "id": rid})
            return False
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            params = req.get("params")
            if type(params) is not list or not all(type(p) is str for p in params):
                reply({"error": {"code": 2, "msg": "Invalid request: params must be a list of streams"}, "id": rid})
                return False
            if method == "SUBSCRIBE":
                rejected = self._faults.take_subscribe_rejection("binance")
                if rejected is not None:
                    code, msg = rejected
                    reply({"error": {"code": code, "msg": msg}, "id": rid})
                    return False
                if not all(self.stream_ok(p) for p in params):
                    reply({"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": rid})
                    return False
                if self.max_streams is not None and len(conn.subs | set(params)) > self.max_streams:
                    # The docs give the limit, not the answer to going past it: this one is made up.
                    reply({"error": {"code": 2, "msg": (
                        f"Invalid request: a connection listens to at most {self.max_streams} streams")},
                        "id": rid})
                    return False
                conn.subs.update(params)
            else:
                conn.subs.difference_update(params)
            reply({"result": None, "id": rid})
            return True
        if method == "LIST_SUBSCRIPTIONS":
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
        return False

    # --- REST ------------------------------------------------------------------------------------

    async def rest(self, method: str, target: str) -> HttpResponse:
        """Answer one REST request: (HTTP status, JSON body, headers)."""
        start = trio.current_time()
        faults = self._faults
        if faults.rest_delay:
            await trio.sleep(faults.rest_delay)
        parts = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        weight = request_weight(parts.path, params)
        headers: list[tuple[bytes, bytes]] = []
        failure = faults.take_rest_failure()
        if failure is not None:
            status, body = _error(-1003, "simulated failure", failure[0])
            if failure[1] is not None:
                headers.append((b"retry-after", f"{failure[1]:g}".encode()))
        else:
            refusal = self._over_weight(weight)
            if refusal is not None:
                (status, body), retry_after = refusal
                headers.append((b"retry-after", str(retry_after).encode()))
            else:
                status, body = self._answer(method, parts.path, params)
        headers.append((b"x-mbx-used-weight-1m", str(self._weight_used).encode()))
        self.rest_log.append((start, trio.current_time(), parts.path, params.get("symbol", ""), weight, status))
        return status, body, headers

    def _over_weight(self, weight: int) -> tuple[tuple[int, bytes], int] | None:
        """The 429 or 418 answer (and its Retry-After) if ``weight`` is more than this minute has left."""
        if self.weight_limit is None:
            return None
        now = trio.current_time()
        if now < self._banned_until:
            return _error(-1003, f"Way too much request weight used; IP banned until {self._banned_until:.0f}.",
                          418), math.ceil(self._banned_until - now)
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._weight_used, self._limited = minute, 0, 0
        if self._weight_used + weight <= self.weight_limit:
            self._weight_used += weight
            return None
        self._limited += 1
        if self._limited > _BAN_AFTER:
            self._banned_until = now + _BAN_SECONDS
            return _error(-1003, f"Way too much request weight used; IP banned until {self._banned_until:.0f}.",
                          418), math.ceil(_BAN_SECONDS)
        return (_error(-1003, _TOO_MUCH_WEIGHT.format(limit=self.weight_limit), 429),
                max(1, math.ceil((minute + 1) * 60 - now)))

    def _answer(self, method: str, path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        if method != "GET":
            return _error(-1, f"method {method} not allowed", 405)
        if path == "/api/v3/ping":
            return 200, b"{}"
        if path == "/api/v3/time":
            return 200, orjson.dumps({"serverTime": self._clock()})
        if path == "/api/v3/depth":
            return self._depth(params)
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(params)
        return _error(-1, f"no such endpoint {path}", 404)

    def _depth(self, params: Mapping[str, str]) -> tuple[int, bytes]:
        sym = params.get("symbol", "")
        if not sym:
            return _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not _SYMBOL.fullmatch(sym):
            return _illegal("symbol", "^[A-Z0-9-_.]{1,20}$")
        if sym not in self._specs and sym not in self.books:
            return _error(-1121, "Invalid symbol.")
        text = params.get("limit", str(DEPTH_LIMIT_DEFAULT))
        # The docs say nothing of limit=0; it is refused like a malformed limit.
        if not _LIMIT.fullmatch(text) or int(text) < 1:
            return _illegal("limit", "^[0-9]{1,20}$")
        limit = min(int(text), DEPTH_LIMIT_MAX)
        book = self.books.get(sym) or SimBook()
        stale = False
        history = self._history.get(sym)
        if history and self._faults.take_stale_snapshot():
            book, stale = history[0], True
        bids, asks = book.sides(limit)
        self.rest_requests.append((sym, book.update_id, stale))
        return 200, orjson.dumps({"lastUpdateId": book.update_id, "bids": bids, "asks": asks})

    def _exchange_info(self, params: Mapping[str, str]) -> tuple[int, bytes]:
        """``GET /api/v3/exchangeInfo``, filtered by ``symbol``, ``symbols``, ``permissions`` or
        ``symbolStatus`` as documented (the last two never combine with the first two)."""
        picked: list[str]
        if "symbol" in params or "symbols" in params:
            if ("symbol" in params and "symbols" in params) or "permissions" in params or "symbolStatus" in params:
                return _error(-1128, "Combination of optional parameters invalid.")
            if "symbol" in params:
                picked = [params["symbol"]]
                if not _SYMBOL.fullmatch(picked[0]):
                    return _illegal("symbol", "^[A-Z0-9-_.]{1,20}$")
            else:
                try:
                    listed = orjson.loads(params["symbols"])
                except orjson.JSONDecodeError:
                    listed = None
                if (type(listed) is not list or not all(type(s) is str and _SYMBOL.fullmatch(s) for s in listed)):
                    return _illegal("symbols", '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$')
                if len(set(listed)) != len(listed):
                    return _error(-1151, "Symbol is present multiple times in the list.")
                picked = listed
            if any(s not in self._specs for s in picked):
                return _error(-1121, "Invalid symbol.")
        else:
            picked = list(self._specs)
            status = params.get("symbolStatus")
            if status is not None:
                if status not in _SYMBOL_STATUSES:
                    return _error(-1122, "Invalid symbolStatus.")
                if status != "TRADING":
                    picked = []
            wanted = params.get("permissions")
            if wanted is not None:
                try:
                    perms = orjson.loads(wanted) if wanted.startswith("[") else [wanted]
                except orjson.JSONDecodeError:
                    perms = None
                if type(perms) is not list:
                    return _illegal("permissions", '^\\[("[A-Z0-9_]{1,20}"(,"[A-Z0-9_]{1,20}"){0,}){0,1}\\]$')
                if "SPOT" not in perms:
                    picked = []
        show_sets = params.get("showPermissionSets", "true") != "false"
        return 200, orjson.dumps({
            "timezone": "UTC",
            "serverTime": self._clock(),
            "rateLimits": _RATE_LIMITS,
            "exchangeFilters": [],
            "symbols": [self._symbol_info(self._specs[s], show_sets) for s in picked],
        })

    def _symbol_info(self, spec: SymbolSpec, show_permission_sets: bool) -> dict[str, Any]:
        """One symbol's trading rules; its PRICE_FILTER and LOT_SIZE are the simulator's tick and lot."""
        units = self._units[spec.symbol]
        base, quote = split_symbol(spec.symbol)
        # Bounds far from the simulated prices and sizes, on the tick and lot grid.
        max_price = max(1, math.ceil(10 ** math.ceil(math.log10(spec.price * 20)) / spec.tick))
        max_lots = 10**9
        min_notional = _MIN_NOTIONAL.get(quote, 5 * _ONE)
        return {
            "symbol": spec.symbol,
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": _PLACES,
            "quoteAsset": quote,
            "quotePrecision": _PLACES,
            "quoteAssetPrecision": _PLACES,
            "baseCommissionPrecision": _PLACES,
            "quoteCommissionPrecision": _PLACES,
            "orderTypes": _ORDER_TYPES,
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "opoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "amendAllowed": True,
            "pegInstructionsAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            # PRICE_FILTER first: cryptofeed reads the tick size as filters[0]["tickSize"].
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": units.price(1), "maxPrice": units.price(max_price),
                 "tickSize": units.price(1)},
                {"filterType": "LOT_SIZE", "minQty": units.qty(1), "maxQty": units.qty(max_lots),
                 "stepSize": units.qty(1)},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": fixed(0), "maxQty": units.qty(max_lots),
                 "stepSize": fixed(0)},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": fixed(min_notional), "applyMinToMarket": True,
                 "maxNotional": fixed(9_000_000 * _ONE), "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]] if show_permission_sets else [],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"],
        }
