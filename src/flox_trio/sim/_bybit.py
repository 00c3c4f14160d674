"""Bybit v5 public spot as the simulator serves it (``/v5/public/spot``).

The wire format (bybit-exchange/docs ``v5/websocket``, checked against
recorded spot frames):

* topics ``publicTrade.<symbol>``, ``orderbook.<depth>.<symbol>`` (a snapshot
  on subscribing, then deltas with ``u`` + 1 each; depth 1 is snapshots only)
  and ``kline.<interval>.<symbol>``;
* ``{"op": "subscribe"|"unsubscribe"|"ping", "args": [...], "req_id": ..}`` and
  their ``success``/``ret_msg``/``conn_id``/``op`` replies;
* prices and quantities are decimal strings without trailing zeros
  (``"74137"``, ``"0.17199"``, ``"0"`` for a removed level), as in every
  recorded spot frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio

from ._connection import Frame, SimConnection
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

if TYPE_CHECKING:
    from ._faults import Faults

DEPTHS: Final = (1, 50, 200, 1000)
INTERVALS: Final[Mapping[str, int]] = {
    "1": 60, "3": 180, "5": 300, "15": 900, "30": 1800, "60": 3600, "120": 7200, "240": 14400,
    "360": 21600, "720": 43200, "D": 86400, "W": 604800, "M": 2592000,
}
#: A trade frame cut short: not valid JSON.
MALFORMED_FRAME: Final = '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":17'
#: Spot takes at most this many topics per subscribe request.
MAX_ARGS: Final = 10
#: "Do not build over 500 connections in 5 minutes. This is counted per WebSocket domain."
CONNECT_LIMIT: Final = (500, 300.0)


def serves(route: str) -> bool:
    """Whether a WebSocket path is Bybit's public market data."""
    return route.startswith("/v5/public/")


def plain(units: int, places: int) -> str:
    """A count of ``10**-places`` as spot writes it: no trailing zeros (``"74137"``, ``"0.17199"``)."""
    if not places:
        return str(units)
    whole, frac = divmod(units, 10**places)
    return f"{whole}.{frac:0{places}d}".rstrip("0").rstrip(".")


class _Units:
    """One symbol's tick and lot, to render its ticks and lots as the venue does."""

    __slots__ = ("lot", "lot_places", "tick", "tick_places")

    def __init__(self, spec: SymbolSpec) -> None:
        self.tick_places = decimals(spec.tick)
        self.lot_places = decimals(spec.lot)
        self.tick = in_units(spec.tick, self.tick_places)
        self.lot = in_units(spec.lot, self.lot_places)

    def price(self, ticks: int) -> str:
        return plain(ticks * self.tick, self.tick_places)

    def qty(self, lots: int) -> str:
        return plain(lots * self.lot, self.lot_places)

    def turnover(self, tick_lots: int) -> str:
        return plain(tick_lots * self.tick * self.lot, self.tick_places + self.lot_places)

    def levels(self, levels: Levels) -> list[WireLevel]:
        return [[self.price(p), self.qty(q)] for p, q in levels]


class BybitVenue:
    """The Bybit side of the simulator: its book mirrors, its frames and its control answers."""

    def __init__(self, specs: Sequence[SymbolSpec], faults: Faults, clock: Callable[[], int]) -> None:
        self._symbols = frozenset(s.symbol for s in specs)
        self._units = {s.symbol: _Units(s) for s in specs}
        # Each symbol's trade topic and (depth, book topic)s, made once rather than at every step.
        self._topics = {s.symbol: (f"publicTrade.{s.symbol}", tuple((n, f"orderbook.{n}.{s.symbol}") for n in DEPTHS))
                        for s in specs}
        self._faults = faults
        self._clock = clock
        #: Each symbol's book, with its ``u`` and ``seq``.
        self.books: dict[str, SimBook] = {}

    # --- books ------------------------------------------------------------------------------------

    def start_book(self, market: SymbolMarket, u: int, seq: int) -> None:
        """Mirror a generated book, from ``u`` and ``seq``."""
        sym = market.spec.symbol
        units = self._units[sym]
        bids, asks = market.levels()
        book = self.books[sym] = SimBook()
        book.reset(units.levels(bids), units.levels(asks))
        book.update_id, book.seq = u, seq

    def set_book(self, symbol: str, u: int, bids: Iterable[WireLevel], asks: Iterable[WireLevel],
                 seq: int = 0) -> None:
        book = self.books.setdefault(symbol, SimBook())
        book.reset(bids, asks)
        book.update_id, book.seq = u, seq

    # --- topics ------------------------------------------------------------------------------------

    def topic_error(self, topic: str) -> str | None:
        """Why subscribing to ``topic`` fails (the venue's ``ret_msg``), None if it does not."""
        head, _, rest = topic.partition(".")
        if head == "publicTrade":
            sym = rest
        elif head == "orderbook":
            depth, _, sym = rest.partition(".")
            if not depth.isdigit() or int(depth) not in DEPTHS:
                return f"error:handler not found,topic:{topic}"
        elif head == "kline":
            code, _, sym = rest.partition(".")
            if code not in INTERVALS:
                return f"error:handler not found,topic:{topic}"
        else:
            return f"error:handler not found,topic:{topic}"
        if sym not in self._symbols:
            return f"Invalid symbol :[{topic}]"
        return None

    def kline_of(self, key: str) -> tuple[str, str, int] | None:
        """(symbol, interval, width in ms) of a kline topic, None for other keys."""
        head, _, rest = key.partition(".")
        code, _, sym = rest.partition(".")
        if head != "kline" or code not in INTERVALS or sym not in self._symbols:
            return None
        return sym, code, 1000 * INTERVALS[code]

    def snapshot(self, sym: str, depth: int, now: int) -> Frame:
        book = self.books[sym]
        bids, asks = book.sides(depth)
        topic = f"orderbook.{depth}.{sym}"
        return Frame("bybit", topic, orjson.dumps({"topic": topic, "ts": now, "type": "snapshot", "data": {
            "s": sym, "b": bids, "a": asks, "u": book.update_id, "seq": book.seq}, "cts": now - 2}).decode(),
            symbol=sym)

    def market_frames(self, market: SymbolMarket, trades: list[SimTrade], changes: list[Change], now: int,
                      keys: frozenset[str], out: list[Frame]) -> None:
        """The frames of one generated step of one symbol, for the topics someone is subscribed to."""
        sym = market.spec.symbol
        units = self._units[sym]
        tkey, books = self._topics[sym]
        if trades and tkey in keys:
            data = [{"i": str(t.bybit_id), "T": now, "p": units.price(t.ticks), "v": units.qty(t.lots),
                     "S": "Sell" if t.buyer_is_maker else "Buy", "seq": t.bybit_seq, "s": sym,
                     "BT": False, "RPI": False} for t in trades]
            out.append(Frame("bybit", tkey, orjson.dumps({"topic": tkey, "ts": now, "type": "snapshot",
                                                          "data": data}).decode(),
                             symbol=sym, trade_ids=tuple(t.bybit_id for t in trades)))
        if not changes:
            return
        bids = [[units.price(p), units.qty(q)] for side, p, q in changes if side == "b"]
        asks = [[units.price(p), units.qty(q)] for side, p, q in changes if side == "a"]
        # One delta per step, u + 1; seq counts the changed levels.
        book = self.books[sym]
        book.update_id += 1
        book.seq += len(changes)
        book.apply(bids, asks)
        withhold = self._faults.take_gap("bybit", sym)
        for depth, topic in books:
            if topic not in keys:
                continue
            if depth == 1:
                f = self.snapshot(sym, 1, now)
            else:
                f = Frame("bybit", topic, orjson.dumps({"topic": topic, "ts": now, "type": "delta", "data": {
                    "s": sym, "b": bids, "a": asks, "u": book.update_id, "seq": book.seq},
                    "cts": now - 2}).decode(), symbol=sym)
            f.withheld = withhold
            out.append(f)

    def kline_frame(self, sym: str, code: str, k: Kline, *, closed: bool, now: int) -> Frame:
        units = self._units[sym]
        price = units.price
        topic = f"kline.{code}.{sym}"
        return Frame("bybit", topic, orjson.dumps({"topic": topic, "data": [{
            "start": k.start_ms, "end": k.start_ms + k.width_ms - 1, "interval": code, "open": price(k.open),
            "close": price(k.close), "high": price(k.high), "low": price(k.low), "volume": units.qty(k.volume),
            "turnover": units.turnover(k.quote), "confirm": closed, "timestamp": now}], "ts": now,
            "type": "snapshot"}).decode(), symbol=sym)

    def recorded(self, text: str, update_books: bool = True) -> Frame:
        """A recorded frame, sent as recorded; book frames also move the venue's book on."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return Frame("bybit", "", text)
        if type(msg) is not dict:
            return Frame("bybit", "", text)
        key = msg.get("topic", "")
        if type(key) is not str:
            key = ""
        sym = ""
        ids: tuple[str, ...] = ()
        data = msg.get("data")
        if key.startswith("publicTrade.") and type(data) is list:
            sym = key.split(".", 1)[1]
            ids = tuple(str(t.get("i")) for t in data if type(t) is dict)
        elif key.startswith("orderbook.") and type(data) is dict and update_books:
            sym = str(data.get("s", key.rsplit(".", 1)[1]))
            b = self.books.setdefault(sym, SimBook())
            if msg.get("type") == "snapshot":
                b.reset(data.get("b", ()), data.get("a", ()))
            else:
                b.apply(data.get("b", ()), data.get("a", ()))
            b.update_id = int(data.get("u", b.update_id))
            b.seq = int(data.get("seq", b.seq))
        return Frame("bybit", key, text, symbol=sym, trade_ids=ids)

    # --- control messages ----------------------------------------------------------------------

    def control(self, conn: SimConnection, text: str) -> bool:
        """Answer one client message; True if it changed the connection's subscriptions."""
        def reply(obj: dict[str, Any]) -> None:
            conn.push(orjson.dumps(obj).decode())

        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            reply({"success": False, "ret_msg": "error:request not json", "conn_id": conn.conn_id, "op": ""})
            return False
        if type(req) is not dict:
            reply({"success": False, "ret_msg": "error:request not an object", "conn_id": conn.conn_id, "op": ""})
            return False
        op = req.get("op")
        rid = req.get("req_id")
        base: dict[str, Any] = {"conn_id": conn.conn_id}
        if rid is not None:
            base["req_id"] = rid
        if op == "ping":
            conn.last_ping_at = trio.current_time()
            reply({"success": True, "ret_msg": "pong", **base, "op": "ping"})
            return False
        if op not in ("subscribe", "unsubscribe"):
            reply({"success": False, "ret_msg": f"error:unknown op {op!r}", **base, "op": op or ""})
            return False
        args = req.get("args")
        if type(args) is not list or not all(type(a) is str for a in args):
            reply({"success": False, "ret_msg": "error:args must be a list of topics", **base, "op": op})
            return False
        if len(args) > MAX_ARGS:
            reply({"success": False, "ret_msg": f"args size >{MAX_ARGS}", **base, "op": op})
            return False
        if op == "unsubscribe":
            conn.subs.difference_update(args)
            reply({"success": True, "ret_msg": "", **base, "op": op})
            return True
        rejected = self._faults.take_subscribe_rejection("bybit")
        if rejected is not None:
            reply({"success": False, "ret_msg": rejected[1], **base, "op": op})
            return False
        for topic in args:
            err = self.topic_error(topic)
            if err is None and topic in conn.subs:
                err = f"error:already subscribed,topic:{topic}"
            if err is not None:
                reply({"success": False, "ret_msg": err, **base, "op": op})
                return False
        conn.subs.update(args)
        reply({"success": True, "ret_msg": "subscribe", **base, "op": op})
        now = self._clock()
        for topic in args:
            head, _, rest = topic.partition(".")
            depth, _, sym = rest.partition(".")
            if head == "orderbook" and sym in self.books:
                conn.push(self.snapshot(sym, int(depth), now))
        return True
