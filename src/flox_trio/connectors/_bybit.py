"""Bybit v5 public market data (spot by default): publicTrade, orderbook.N, kline.

Wire format: Bybit ``docs/v5/websocket/public/{trade,orderbook,kline}.mdx`` and
``wss-authentication.mdx`` (heartbeat).

- ``publicTrade`` → one ``Trade`` per element of ``data`` (a frame may carry many;
  they are published as one batch). ``S`` is the taker side.
- ``orderbook.N`` → a ``Book`` after every snapshot and delta, stamped with
  ``cts`` (the matching engine's time, the clock of trades' ``T``) or, when a
  message has none, ``ts``. A snapshot (or ``u == 1``, the venue restarting)
  resets the ``L2Book``; a delta must carry ``u == last + 1``: a repeat is
  ignored, a jump is a gap, and the book topic is unsubscribed and subscribed
  again so the venue sends a fresh snapshot.
- ``kline.<interval>`` → a ``Bar`` when the candle is confirmed.

Frames decode with typed ``msgspec`` structs straight into events, with no
dict between: the envelope's ``data`` stays raw JSON until its topic says
what it is; replies, pongs and anything odd take a slower path that reports
them as it always did. A frame whose fields have the wrong types or are
missing is counted as malformed. Values no market could mean (NaN, inf,
<= 0, beyond 1e15) are refused and counted: a trade alone (the rest of its frame is published), a book frame
whole (and the book is subscribed again for a fresh snapshot). Trade ids are
not ordered, so no gap is inferred from them.

The client pings with ``{"op": "ping"}`` every ``ping_interval`` (20 s as the
docs recommend); a ping without a pong within ``pong_timeout`` reconnects.
Subscribe replies with ``success: false`` are reported and retried with
backoff; the other subscriptions keep working.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson
import trio

from .._core._events import Bar, Event, Side, Trade
from .._core._market import L2Book
from .._errors import ConfigError, FloxError
from ._options import SessionOptions, make_options
from ._session import Session
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

_DEFAULTS: dict[str, Any] = {"ping_interval": 20.0, "pong_timeout": 10.0}
_BOOK_DEPTHS = frozenset({1, 50, 200, 1000})
_KLINE_INTERVALS = frozenset(["1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M"])
_SIDES: dict[str, Side] = {"Buy": "buy", "Sell": "sell"}
# Trade ids remembered per symbol to drop what a planned successor repeats.
_RECENT_TRADES = 4096



# --- the wire, as typed structs (field names are the venue's; ``Num``: a JSON string or number) ----


class _Envelope(msgspec.Struct):
    """A topic's message; ``data`` stays raw until the topic says what it is."""

    topic: str
    data: msgspec.Raw
    kind: Any = msgspec.field(default=msgspec.UNSET, name="type")
    ts: Any = msgspec.UNSET
    cts: Any = None


class _TradeMsg(msgspec.Struct):
    id: str | int = msgspec.field(name="i")
    time: int = msgspec.field(name="T")
    p: Num
    v: Num
    side: str = msgspec.field(name="S")


class _BookData(msgspec.Struct):
    u: int
    bids: list[tuple[Num, Num]] = msgspec.field(name="b")
    asks: list[tuple[Num, Num]] = msgspec.field(name="a")


class _KlineMsg(msgspec.Struct):
    start: int
    end: int
    confirm: bool
    open: Num
    high: Num
    low: Num
    close: Num
    volume: Num


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_trades = msgspec.json.Decoder(list[_TradeMsg]).decode
_decode_book = msgspec.json.Decoder(_BookData).decode
_decode_klines = msgspec.json.Decoder(list[_KlineMsg]).decode

#: A topic's route: (decode its data, the channel's handler, symbol, topic).
Route = tuple[Callable[[bytes], Any], Callable[[str, str, _Envelope, Any, int, list[Event]], None], str, str]


def _given(value: Any, name: str) -> Any:
    if value is msgspec.UNSET:
        raise KeyError(name)
    return value


class _BookState:
    __slots__ = ("after_gap", "book", "successor", "synced")

    def __init__(self, symbol: str) -> None:
        self.book = L2Book(symbol, "bybit")
        self.synced = False
        self.after_gap = False
        #: A planned successor took over and has not caught up with the book yet.
        self.successor = False


class BybitVenue:
    """The Bybit v5 public wire format and its snapshot/delta book rules; a ``Venue`` for ``Session``."""

    name = "bybit"
    # "Spot can input up to 10 args for each subscription request".
    max_topics_per_request = 10
    max_topics_per_connection = 2000
    # "Do not build over 500 connections in 5 minutes. This is counted per WebSocket domain."
    connects_per_window = 500

    def __init__(self, ws_url: str, channels: Sequence[str], options: SessionOptions) -> None:
        self.ws_url = check_ws_url("Bybit", ws_url)
        if isinstance(channels, str):
            channels = [channels]
        self.channels = tuple(channels)
        self._prefixes: list[tuple[str, Route]] = [self._channel(c) for c in self.channels]
        if not self._prefixes:
            raise ConfigError("Bybit needs at least one channel, e.g. channels=('publicTrade',)")
        books = [int(p.split(".")[1]) for p, _ in self._prefixes if p.startswith("orderbook.")]
        if len(books) > 1:
            raise ConfigError(f"Bybit takes one orderbook depth per connector, got {books}")
        self._options = options
        self._book_levels = books[0] if books else 0
        self._depth = min(options.book_depth, self._book_levels)
        self._routes: dict[str, Route] = {}
        self.books: dict[str, _BookState] = {}
        self._last_bar: dict[str, int] = {}
        self._recent: dict[str, tuple[deque[str], set[str]]] = {}
        # Per symbol: until when a planned successor's repeats of its trades are dropped.
        self._dedupe_until: dict[str, float] = {}
        self._port: SessionPort

    def _channel(self, name: str) -> tuple[str, Route]:
        """The topic prefix of a channel, and its route (symbol and topic filled in per symbol)."""
        if name == "publicTrade":
            return name, (_decode_trades, self._on_trade, "", "")
        head, _, tail = name.partition(".")
        if head == "orderbook" and tail.isdigit() and int(tail) in _BOOK_DEPTHS:
            return name, (_decode_book, self._on_book, "", "")
        if head == "kline" and tail in _KLINE_INTERVALS:
            return name, (_decode_klines, self._on_kline, "", "")
        raise ConfigError(
            f"Bybit channel {name!r} is not supported; use publicTrade, orderbook.1, orderbook.50, "
            f"orderbook.200, orderbook.1000 or kline.<interval> ({' '.join(sorted(_KLINE_INTERVALS))})"
        )

    # --- Venue: the session's side ----------------------------------------------------------------

    def bind(self, port: SessionPort) -> None:
        self._port = port

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing venue-wide: books sync from the stream itself."""
        task_status.started()

    def topics(self, symbol: str) -> list[str]:
        return [f"{prefix}.{symbol}" for prefix, _ in self._prefixes]

    def resync_topics(self, symbol: str) -> list[str]:
        return [f"orderbook.{self._book_levels}.{symbol}"] if self._book_levels else []

    def connect_url(self, symbols: frozenset[str]) -> tuple[str, frozenset[str]]:
        # Topics are only ever subscribed by request, so each one is confirmed or refused by name.
        return self.ws_url, frozenset()

    def request_text(self, op: WireOp, req_id: str, topics: Sequence[str]) -> str:
        return orjson.dumps({"req_id": req_id, "op": op, "args": list(topics)}).decode()

    def ping_text(self, n: int) -> str:
        return orjson.dumps({"req_id": f"ping-{n}", "op": "ping"}).decode()

    def subscribed(self, symbols: Sequence[str]) -> None:
        """Nothing to remember: every connection subscribes by request."""

    def symbols_changed(self, added: frozenset[str], removed: frozenset[str]) -> None:
        for s in added:
            for prefix, (parse, handler, _, _) in self._prefixes:
                topic = f"{prefix}.{s}"
                self._routes[topic] = (parse, handler, s, topic)
            if self._book_levels and s not in self.books:
                self.books[s] = _BookState(s)
        for s in removed:
            for prefix, _ in self._prefixes:
                self._routes.pop(f"{prefix}.{s}", None)
                self._last_bar.pop(f"{prefix}.{s}", None)
            self.books.pop(s, None)
            self._recent.pop(s, None)
            self._dedupe_until.pop(s, None)

    def connection_lost(self, symbols: frozenset[str]) -> None:
        # Subscribing again brings a snapshot; deltas before it cannot be placed.
        for s in symbols:
            st = self.books.get(s)
            if st is not None:
                st.synced = False

    def handover(self, symbols: frozenset[str]) -> None:
        # Bybit trade ids are not ordered (the docs show UUIDs), so a successor's
        # repeats are recognised by id among the latest trades, for a while.
        until = trio.current_time() + 4 * self._options.handover_overlap + 5.0
        for s in symbols:
            self._dedupe_until[s] = until
            st = self.books.get(s)
            if st is not None:
                st.successor = True

    # --- decoding ----------------------------------------------------------------------------------

    def decode(self, link: Link, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        # The fast path: a message of a routed topic, typed from the wire up.
        try:
            env = _decode_envelope(msg)
        except msgspec.DecodeError:  # (ValidationError included) not a topic message, or not JSON
            return self._decode_other(link, msg, recv_ns)
        route = self._routes.get(env.topic)
        if route is None:
            return self._decode_other(link, msg, recv_ns)
        return self._route(link, msg, route, env, recv_ns)

    def _route(self, link: Link, msg: str | bytes, route: Route, env: _Envelope,
               recv_ns: int) -> list[Event] | None:
        parse, handler, sym, topic = route
        if sym not in link.symbols:
            # Another connection carries it now (or it was dropped a moment ago).
            self._port.late_frame()
            return None
        out: list[Event] = []
        try:
            handler(sym, topic, env, parse(env.data), recv_ns, out)
        except RefusedValue as exc:
            # What the handler took of the frame before refusing the rest still goes out.
            self._port.refused(link, msg, exc)
            return out or None
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            self._port.frame_error(link, f"malformed {topic} message", msg, exc)
            return None
        return out

    def _decode_other(self, link: Link, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        """Replies, pongs, and every frame the typed envelope does not fit."""
        frame = load_object(self._port, link, msg)
        if frame is None:
            return None
        topic = frame.get("topic")
        if topic is not None:
            # Any JSON value may come as a topic; only a string can name a route.
            route = self._routes.get(topic) if type(topic) is str else None
            if route is None:
                if type(topic) is str and topic.rpartition(".")[2] not in self._port.wanted:
                    self._port.late_frame()
                else:
                    self._port.frame_error(link, f"unknown topic {topic!r}", msg)
                return None
            try:
                env = _decode_envelope(orjson.dumps(frame))
            except msgspec.DecodeError as exc:
                self._port.frame_error(link, f"malformed {topic} message", msg, exc)
                return None
            return self._route(link, msg, route, env, recv_ns)
        op = frame.get("op")
        # Pongs differ per category: spot and linear answer {"op": "ping", "ret_msg": "pong"},
        # option and spread {"op": "pong"}.
        if op == "pong" or frame.get("ret_msg") == "pong":
            link.pong()
        elif op == "subscribe" or op == "unsubscribe":
            ok = frame.get("success") is True
            reason = frame.get("ret_msg") or ("" if ok else "no reason given")
            req_id = frame.get("req_id")
            # Some categories answer with req_id "" (or none): matched by op then.
            link.reply(req_id if type(req_id) is str and req_id else None, ok, f"Bybit: {reason}",
                       op_hint="subscribe" if op == "subscribe" else "unsubscribe")
        elif frame.get("success") is False:
            self._port.error("venue error reply", f"Bybit: {frame.get('ret_msg')}", connection_id=link.id)
        else:
            self._port.frame_error(link, "unknown frame", msg)
        return None

    # --- topic handlers: (symbol, topic, envelope, data, recv_ns, out) ------------------------------

    def _on_trade(self, sym: str, topic: str, env: _Envelope, data: list[_TradeMsg], recv_ns: int,
                  out: list[Event]) -> None:
        recent = self._recent.get(sym)
        if recent is None:
            recent = self._recent[sym] = (deque(), set())
        order, seen = recent
        dedupe = False
        if self._dedupe_until:
            until = self._dedupe_until.get(sym)
            if until is not None:
                dedupe = trio.current_time() < until
                if not dedupe:
                    del self._dedupe_until[sym]
        trades = []
        refused: dict[str, int] = {}
        first: RefusedValue | None = None
        for t in data:
            tid = t.id if type(t.id) is str else str(t.id)
            if dedupe and tid in seen:
                continue
            price, qty = float(t.p), float(t.v)
            if not (0.0 < price <= MAX_VALUE and 0.0 < qty <= MAX_VALUE):
                try:
                    trade_values(price, qty)
                except RefusedValue as exc:
                    first = first or exc
                    refused[exc.reason] = refused.get(exc.reason, 0) + 1
                    continue
            trades.append(Trade(sym, price, qty, _SIDES[t.side], tid, t.time * 1_000_000, recv_ns, "bybit"))
        # Remembered only once the whole frame decoded: a malformed frame publishes nothing.
        for trade in trades:
            if len(order) == _RECENT_TRADES:
                seen.discard(order.popleft())
            order.append(trade.trade_id)
            seen.add(trade.trade_id)
        out.extend(trades)
        if first is not None:
            n = sum(refused.values())
            raise RefusedValue(first.reason, first.value, refused,
                               outcome=f"{n} trades of the frame refused, the other {len(trades)} published")

    def _on_book(self, sym: str, topic: str, env: _Envelope, data: _BookData, recv_ns: int,
                 out: list[Event]) -> None:
        st = self.books[sym]
        kind = _given(env.kind, "type")
        u = data.u
        # "cts: the timestamp from the matching engine when this orderbook data is produced.
        # It can be correlated with T from public trade"; ts is when the message was sent.
        cts = env.cts
        ts = (as_int(_given(env.ts, "ts"), "ts") if cts is None else as_int(cts, "cts")) * 1_000_000
        book = st.book
        try:
            bids, asks = levels(data.bids), levels(data.asks)
        except RefusedValue as exc:
            if kind == "snapshot" or u == 1 or (st.synced and u > book.seq):
                # The book would have taken this frame: without it, it is not the venue's.
                st.synced = False
                st.after_gap = True
                self._port.request_resync(sym)
                exc.outcome = "frame skipped, book subscribed again for a fresh snapshot"
            raise
        if kind == "snapshot" or u == 1:
            # "If you receive a new snapshot message, you will have to reset your local
            # orderbook", and u == 1 "is a snapshot data due to the restart of the service".
            if st.synced and u != 1 and (u == book.seq or (st.successor and u < book.seq)):
                # Two kinds of snapshot are not applied, because neither is new:
                # - level 1 pushes an unchanged book again after 3 s "and the field u will be
                #   the same as that in the previous message": the book already is that one,
                #   and publishing it again would repeat a Book event;
                # - what a planned successor received before the switch trails what the old
                #   connection delivered until then (its subscription snapshot and, at level 1,
                #   every message after it): resetting to it would step the book back and
                #   replay updates already published. It is skipped until it catches up.
                if u == book.seq:
                    st.successor = False
                return
            st.successor = False
            restarted = st.synced and (u == 1 or u < book.seq)
            try:
                book.apply_snapshot(bids, asks, u)
            except FloxError as exc:
                self._bad_book(sym, st, exc)
                return
            st.synced = True
            if st.after_gap or restarted:
                st.after_gap = False
                self._port.resynced(sym, topic, u)
            out.append(book.to_event(exchange_ts_ns=ts, recv_ts_ns=recv_ns, depth=self._depth))
            return
        if kind != "delta":
            raise ValueError(f"unknown orderbook message type {kind!r}")
        if not st.synced or u <= book.seq:
            return  # before the snapshot, or a repeat
        if u != book.seq + 1:
            st.synced = False
            st.after_gap = True
            self._port.gap(sym, topic, book.seq + 1, u)
            self._port.request_resync(sym)
            return
        try:
            book.apply_delta(bids, asks, u)
        except FloxError as exc:
            self._bad_book(sym, st, exc)
            return
        st.successor = False  # a successor's deltas continue the book: it has caught up
        out.append(book.to_event(exchange_ts_ns=ts, recv_ts_ns=recv_ns, depth=self._depth))

    def _bad_book(self, sym: str, st: _BookState, exc: FloxError) -> None:
        self._port.error("bad orderbook level", f"{sym}: {exc}; resubscribing",
                         connection_id=self._port.connection_for(sym), symbol=sym)
        st.synced = False
        st.after_gap = True
        self._port.request_resync(sym)

    def _on_kline(self, sym: str, topic: str, env: _Envelope, data: list[_KlineMsg], recv_ns: int,
                  out: list[Event]) -> None:
        for k in data:
            if not k.confirm:
                continue
            start, end = k.start, k.end
            if start <= self._last_bar.get(topic, -1):
                continue
            o, h, lo, c, v = float(k.open), float(k.high), float(k.low), float(k.close), float(k.volume)
            bar_values(o, h, lo, c, v)
            self._last_bar[topic] = start
            out.append(Bar(sym, o, h, lo, c, v, 0, start * 1_000_000, (end + 1) * 1_000_000, (end + 1 - start) / 1000,
                           "bybit"))


class Bybit(Session):
    """Bybit v5 public streams.

    ``Bybit(symbols, *, ws_url="wss://stream.bybit.com/v5/public/spot",
    channels=("publicTrade", "orderbook.50"), **options)``. Channels:
    ``publicTrade``, ``orderbook.1|50|200|1000``, ``kline.<interval>``.
    The wire format lives in ``BybitVenue``; this class only composes it.
    """

    def __init__(
        self,
        symbols: Sequence[str] | str,
        *,
        ws_url: str = "wss://stream.bybit.com/v5/public/spot",
        channels: Sequence[str] = ("publicTrade", "orderbook.50"),
        **options: Any,
    ) -> None:
        opts = make_options("Bybit", options, _DEFAULTS)
        super().__init__(symbols, BybitVenue(ws_url, channels, opts), opts)
