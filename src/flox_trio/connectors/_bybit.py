"""Bybit v5 public market data (spot by default): publicTrade, orderbook.N, kline.

Wire format: Bybit ``docs/v5/websocket/public/{trade,orderbook,kline}.mdx`` and
``wss-authentication.mdx`` (heartbeat).

- ``publicTrade`` → one ``Trade`` per element of ``data`` (a frame may carry many;
  they are published as one batch). ``S`` is the taker side.
- ``orderbook.N`` → a ``Book`` after every snapshot and delta. A snapshot (or
  ``u == 1``, the venue restarting) resets the ``L2Book``; a delta must carry
  ``u == last + 1``: a repeat is ignored, a jump is a gap, and the book topic is
  unsubscribed and subscribed again so the venue sends a fresh snapshot.
- ``kline.<interval>`` → a ``Bar`` when the candle is confirmed.

The client pings with ``{"op": "ping"}`` every ``ping_interval`` (20 s as the
docs recommend); a ping without a pong within ``pong_timeout`` reconnects.
Subscribe replies with ``success: false`` are reported and retried with
backoff; the other subscriptions keep working.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import trio

from .._core._events import Bar, Event, Trade
from .._core._market import L2Book
from .._errors import ConfigError, FloxError
from ._session import Session, StaleFeedError, _Connection, as_int, levels, make_options

_DEFAULTS: dict[str, Any] = {"ping_interval": 20.0, "pong_timeout": 10.0}
_BOOK_DEPTHS = frozenset({1, 50, 200, 1000})
_KLINE_INTERVALS = frozenset(["1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M"])
_SIDES = {"Buy": "buy", "Sell": "sell"}
# Trade ids remembered per symbol to drop what a planned successor repeats.
_RECENT_TRADES = 4096

Handler = Callable[[str, str, dict[str, Any], int, list[Event]], None]


class _BookState:
    __slots__ = ("after_gap", "book", "synced")

    def __init__(self, symbol: str) -> None:
        self.book = L2Book(symbol, "bybit")
        self.synced = False
        self.after_gap = False


class Bybit(Session):
    """Bybit v5 public streams.

    ``Bybit(symbols, *, ws_url="wss://stream.bybit.com/v5/public/spot",
    channels=("publicTrade", "orderbook.50"), **options)``. Channels:
    ``publicTrade``, ``orderbook.1|50|200|1000``, ``kline.<interval>``.
    """

    venue = "bybit"
    # "Spot can input up to 10 args for each subscription request".
    max_topics_per_request = 10
    max_topics_per_connection = 2000

    def __init__(
        self,
        symbols: Sequence[str] | str,
        *,
        ws_url: str = "wss://stream.bybit.com/v5/public/spot",
        channels: Sequence[str] = ("publicTrade", "orderbook.50"),
        **options: Any,
    ) -> None:
        super().__init__(symbols, ws_url, make_options("Bybit", options, _DEFAULTS))
        if isinstance(channels, str):
            channels = [channels]
        self.channels = tuple(channels)
        self._prefixes: list[tuple[str, Handler]] = [self._channel(c) for c in self.channels]
        if not self._prefixes:
            raise ConfigError("Bybit needs at least one channel, e.g. channels=('publicTrade',)")
        books = [int(p.split(".")[1]) for p, _ in self._prefixes if p.startswith("orderbook.")]
        if len(books) > 1:
            raise ConfigError(f"Bybit takes one orderbook depth per connector, got {books}")
        self._book_levels = books[0] if books else 0
        self._routes: dict[str, tuple[Handler, str, str]] = {}
        self._books: dict[str, _BookState] = {}
        self._last_bar: dict[str, int] = {}
        self._recent: dict[str, tuple[deque[str], set[str]]] = {}
        self._dedupe_until = -1.0

    def _channel(self, name: str) -> tuple[str, Handler]:
        if name == "publicTrade":
            return name, self._on_trade
        head, _, tail = name.partition(".")
        if head == "orderbook" and tail.isdigit() and int(tail) in _BOOK_DEPTHS:
            return name, self._on_book
        if head == "kline" and tail in _KLINE_INTERVALS:
            return name, self._on_kline
        raise ConfigError(
            f"Bybit channel {name!r} is not supported; use publicTrade, orderbook.1, orderbook.50, "
            f"orderbook.200, orderbook.1000 or kline.<interval> ({' '.join(sorted(_KLINE_INTERVALS))})"
        )

    # --- public helpers -------------------------------------------------------------------------


    # --- session hooks -------------------------------------------------------------------------------

    def _topics(self, symbol: str) -> list[str]:
        return [f"{prefix}.{symbol}" for prefix, _ in self._prefixes]

    def _resync_topics(self, symbol: str) -> list[str]:
        return [f"orderbook.{self._book_levels}.{symbol}"] if self._book_levels else []

    def _request_text(self, op: str, req_id: str, topics: Sequence[str]) -> str:
        return orjson.dumps({"req_id": req_id, "op": op, "args": list(topics)}).decode()

    def _on_desired_changed(self, added: frozenset[str], removed: frozenset[str]) -> None:
        for s in added:
            for prefix, handler in self._prefixes:
                topic = f"{prefix}.{s}"
                self._routes[topic] = (handler, s, topic)
            if self._book_levels and s not in self._books:
                self._books[s] = _BookState(s)
        for s in removed:
            for prefix, _ in self._prefixes:
                self._routes.pop(f"{prefix}.{s}", None)
                self._last_bar.pop(f"{prefix}.{s}", None)
            self._books.pop(s, None)
            self._recent.pop(s, None)

    def _on_handover(self) -> None:
        # Bybit trade ids are not ordered (the docs show UUIDs), so a successor's
        # repeats are recognised by id among the latest trades, for a while.
        self._dedupe_until = trio.current_time() + 4 * self.options.handover_overlap + 5.0

    def _on_connection_lost(self, conn: _Connection) -> None:
        # Subscribing again brings a snapshot; deltas before it cannot be placed.
        for st in self._books.values():
            st.synced = False

    async def _keepalive(self, conn: _Connection) -> None:
        opts = self.options
        if not opts.ping_interval:
            return
        wait = min(opts.pong_timeout, opts.ping_interval)
        n = 0
        while True:
            await trio.sleep(opts.ping_interval - wait if n else opts.ping_interval)
            n += 1
            sent = conn.ping_sent_at = trio.current_time()
            if not await self._send_text(conn, orjson.dumps({"req_id": f"ping-{n}", "op": "ping"}).decode()):
                return
            await trio.sleep(wait)
            if conn.ping_sent_at == sent and not conn.busy:
                self._stop_connection(conn, StaleFeedError(
                    f"bybit: no pong within {wait:g} s on connection {conn.id}; reconnecting"))
                return

    # --- decoding ------------------------------------------------------------------------------------

    def _decode(self, conn: _Connection, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        frame = self._load_object(conn, msg)
        if frame is None:
            return None
        topic = frame.get("topic")
        if topic is not None:
            route = self._routes.get(topic)
            if route is None:
                if type(topic) is str and topic.rpartition(".")[2] not in self._desired:
                    self.late_frames += 1
                else:
                    self._frame_error(conn, f"unknown topic {topic!r}", msg)
                return None
            out: list[Event] = []
            try:
                route[0](route[1], route[2], frame, recv_ns, out)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self._frame_error(conn, f"malformed {topic} message", msg, exc)
                return None
            return out
        op = frame.get("op")
        if op == "pong" or (op == "ping" and frame.get("ret_msg") == "pong") or frame.get("ret_msg") == "pong":
            conn.ping_sent_at = None
        elif op in ("subscribe", "unsubscribe"):
            ok = frame.get("success") is True
            reason = frame.get("ret_msg") or ("" if ok else "no reason given")
            self._on_reply(conn, frame.get("req_id") or None, ok, f"Bybit: {reason}", op_hint=op)
        elif frame.get("success") is False:
            self._report_error(conn, "venue error reply", f"Bybit: {frame.get('ret_msg')}")
        else:
            self._frame_error(conn, "unknown frame", msg)
        return None

    # --- topic handlers: (symbol, topic, frame, recv_ns, out) ----------------------------------------

    def _on_trade(self, sym: str, topic: str, frame: dict[str, Any], recv_ns: int, out: list[Event]) -> None:
        recent = self._recent.get(sym)
        if recent is None:
            recent = self._recent[sym] = (deque(), set())
        order, seen = recent
        dedupe = self._dedupe_until > 0 and trio.current_time() < self._dedupe_until
        trades = []
        for t in frame["data"]:
            tid = str(t["i"])
            if dedupe and tid in seen:
                continue
            trades.append(Trade(sym, float(t["p"]), float(t["v"]), _SIDES[t["S"]], tid,
                                as_int(t["T"], "T") * 1_000_000, recv_ns, "bybit"))
        # Remembered only once the whole frame decoded: a malformed frame publishes nothing.
        for trade in trades:
            if len(order) == _RECENT_TRADES:
                seen.discard(order.popleft())
            order.append(trade.trade_id)
            seen.add(trade.trade_id)
        out.extend(trades)

    def _on_book(self, sym: str, topic: str, frame: dict[str, Any], recv_ns: int, out: list[Event]) -> None:
        st = self._books[sym]
        data = frame["data"]
        kind = frame["type"]
        u = as_int(data["u"], "u")
        ts = as_int(frame["ts"], "ts") * 1_000_000
        bids, asks = levels(data["b"]), levels(data["a"])
        book = st.book
        depth = min(self.options.book_depth, self._book_levels)
        if kind == "snapshot" or u == 1:
            was_synced = st.synced
            if was_synced and 1 < u <= book.seq:
                # Not newer than the book: level 1 repeats an unchanged snapshot every 3 s,
                # and a planned successor's first snapshot trails the old connection.
                return
            try:
                book.apply_snapshot(bids, asks, u)
            except FloxError as exc:
                self._bad_book(sym, st, exc)
                return
            st.synced = True
            if st.after_gap or (u == 1 and was_synced):  # u == 1: the venue restarted
                st.after_gap = False
                self.resyncs += 1
                self._report("resync", symbol=sym, channel=topic, seq=u, connection_id=self.connection_id)
            out.append(book.to_event(exchange_ts_ns=ts, recv_ts_ns=recv_ns, depth=depth))
            return
        if kind != "delta":
            raise ValueError(f"unknown orderbook message type {kind!r}")
        if not st.synced or u <= book.seq:
            return  # before the snapshot, or a repeat
        if u != book.seq + 1:
            self.gaps += 1
            st.synced = False
            st.after_gap = True
            self._report("gap", symbol=sym, channel=topic, expected=book.seq + 1, got=u,
                         connection_id=self.connection_id)
            self._request_resync(sym)
            return
        try:
            book.apply_delta(bids, asks, u)
        except FloxError as exc:
            self._bad_book(sym, st, exc)
            return
        out.append(book.to_event(exchange_ts_ns=ts, recv_ts_ns=recv_ns, depth=depth))

    def _bad_book(self, sym: str, st: _BookState, exc: FloxError) -> None:
        self._report_error(self._conn, "bad orderbook level", f"{sym}: {exc}; resubscribing", symbol=sym)
        st.synced = False
        st.after_gap = True
        self._request_resync(sym)

    def _on_kline(self, sym: str, topic: str, frame: dict[str, Any], recv_ns: int, out: list[Event]) -> None:
        for k in frame["data"]:
            confirm = k["confirm"]
            if confirm is not True:
                if confirm is not False:
                    raise TypeError(f"field 'confirm' must be a boolean, got {confirm!r}")
                continue
            start, end = as_int(k["start"], "start"), as_int(k["end"], "end")
            if start <= self._last_bar.get(topic, -1):
                continue
            self._last_bar[topic] = start
            out.append(Bar(sym, float(k["open"]), float(k["high"]), float(k["low"]), float(k["close"]),
                           float(k["volume"]), 0, start * 1_000_000, (end + 1) * 1_000_000,
                           (end + 1 - start) / 1000, "bybit"))
