"""Orders to Bybit v5 over its trade WebSocket, fills from the private stream, REST for reconciliation.

One session is two connections: the trade WebSocket (``trade_url``:
``op: auth``, then ``order.create`` / ``order.cancel`` with ``reqId`` and the
``X-BAPI-TIMESTAMP`` / ``X-BAPI-RECV-WINDOW`` header) and the private stream
(``private_url``: ``op: auth``, ``subscribe`` to ``order``, ``execution``,
``wallet`` and, for ``linear``, ``position``). Signed REST (``rest_url``,
``X-BAPI-*`` headers) reconciles: ``/v5/execution/list``,
``/v5/order/realtime``, ``/v5/account/wallet-balance``, ``/v5/position/list``.
``category`` is ``spot`` or ``linear`` (USDT perpetuals, one-way mode): every
request names it.

The trade connection is replaced before ``session_max_age`` and when Bybit
answers 10019 (its trade service is restarting), make before break as
``BinanceExecutor`` does (``_venue.VenueOrders._handover``): a new connection
is authenticated first, new requests go out on it, and the old one is closed
once its requests in flight are answered. The private stream stays.

What the executor promises (PRODUCT.md section 8), as ``BinanceExecutor`` does
(the order state machine is ``_venue.VenueOrders``):

* the engine's order id goes out as ``orderLinkId`` = ``flx<run id>_<order id>``;
* ``accepted`` on the venue's ack; one ``Fill`` per ``execution`` row
  (``execType`` Trade), keyed by ``execId``, exactly once across reconnects:
  private-stream pushes are buffered until the session is reconciled, and
  fills missed during an outage come from ``/v5/execution/list`` in venue order;
* a refusal is a ``rejected`` update naming the ``retCode``; an unknown outcome
  (a dropped connection, no answer, 10016/10019/170007/170146) stays pending
  until the stream or ``/v5/order/realtime`` settles it;
* the ``X-Bapi-Limit-Status`` / ``X-Bapi-Limit-Reset-Timestamp`` response header
  is respected before sending; 10006/10429 pause sending;
* a wrong key or signature ends ``run()`` within seconds with a
  ``BybitAuthError`` naming the retCode;
* ``linear``: the venue's position per symbol (the ``position`` topic, a
  ``/v5/position/list`` snapshot at every reconciliation) is kept as a
  ``Position`` in ``venue_positions``; the slots' positions are still their
  fills, and a venue position that differs from their sum is logged.

Secrets (the API key and secret) appear nowhere: not in logs, ``status()``,
``settings``, reprs or exception messages.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode

import attrs
import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._core._events import Fill, OrderType, Side
from .._core._money import ZERO
from .._core._orders import Order, Position, book_fill
from .._core._status import ExecutorSettings
from .._errors import ConfigError, FloxError, OrderError
from ._binance import SymbolFilters
from ._signing import HmacSigner, bybit_auth_text, bybit_rest_text
from ._venue import (
    CONNECT_ERRORS,
    AmendRequest,
    Fatal,
    IntentKind,
    Pending,
    SessionLost,
    VenueOrders,
    VenueStatus,
    check_max_age,
    dec,
    new_run_id,
    open_websocket,
    parse_client_id,
    plain,
)

log = logging.getLogger("flox_trio.execution.bybit")

TRADE_URL = "wss://stream.bybit.com/v5/trade"
PRIVATE_URL = "wss://stream.bybit.com/v5/private"
REST_URL = "https://api.bybit.com"
TESTNET_TRADE_URL = "wss://stream-testnet.bybit.com/v5/trade"
TESTNET_PRIVATE_URL = "wss://stream-testnet.bybit.com/v5/private"
TESTNET_REST_URL = "https://api-testnet.bybit.com"

#: Bybit's orderLinkId rule: letters, digits, dashes and underscores, at most 36.
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,36}")
_AUTH_CODES = {10003: "API key is invalid", 10004: "invalid signature", 10005: "permission denied",
               10007: "user authentication failed", 10010: "unmatched IP", 10002: "request time outside recv window"}
#: 170141 "Duplicate clientOrderId": our id is taken, so a send Bybit did take earlier (an answer
#: we took for "not taken"): the order exists and a query says how it stands.
_UNKNOWN_CODES = frozenset({10000, 10016, 170007, 170146, 170141})
#: "ws trade service is restarting, do not accept new request, but the request in the process is not
#: affected. You can build new connection": not taken, so sent again on a new connection.
_RESTARTING = 10019
#: Bybit documents no maximum age of a trade connection; a fresh one every 12 hours keeps the
#: orders off a connection old enough to sit on a server due for a restart.
SESSION_MAX_AGE = 12 * 3600.0
_BUSY_CODES = frozenset({10006, 10429, 10403})
#: Requests Bybit did not take: safe to send again (the orderLinkId is still unused).
_NOT_TAKEN = _BUSY_CODES | {_RESTARTING}


class BybitAuthError(FloxError):
    """Bybit refused the key, its signature or the request time: fix the configuration, retrying will not help."""


class _VenueError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg = code, msg

    def describe(self) -> str:
        name = _AUTH_CODES.get(self.code)
        return f"Bybit retCode {self.code}{f' ({name})' if name else ''}: {self.msg}"




@attrs.frozen
class BybitSettings(ExecutorSettings):
    """How a ``BybitExecutor`` was configured. Never a secret: only where the key came from."""

    category: str = "spot"
    trade_url: str = TRADE_URL
    private_url: str = PRIVATE_URL
    rest_url: str = REST_URL
    #: Where the API key came from: "argument" or "env:NAME".
    account_from: str = "argument"
    #: Where the signing secret came from: "argument" or "env:NAME".
    signing_from: str = "argument"
    recv_window_ms: int = 5000


@attrs.frozen(kw_only=True)
class BybitStatus(VenueStatus):
    settings: BybitSettings


#: What ends one session, not the executor.
_TRANSIENT = (*CONNECT_ERRORS, httpx.HTTPError, _VenueError)


class BybitExecutor(VenueOrders):
    """Bybit v5 order entry (trade WebSocket), private stream and REST reconciliation (see the module docstring)."""

    connection_name = "Bybit trade WebSocket"

    def __init__(
        self,
        *,
        api_key: str,
        secret: str,
        category: Literal["spot", "linear"] = "spot",
        trade_url: str = TRADE_URL,
        private_url: str = PRIVATE_URL,
        rest_url: str = REST_URL,
        recv_window_ms: int = 5000,
        symbols: tuple[str, ...] | list[str] = (),
        run_id: str | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ping_interval: float = 20.0,
        unknown_after: float = 1.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        history: int | None = 10_000,
        session_max_age: float = SESSION_MAX_AGE,
        api_key_from: str = "argument",
        secret_from: str = "argument",
    ) -> None:
        if not api_key or not isinstance(api_key, str):
            raise ConfigError("BybitExecutor needs api_key")
        if not secret or not isinstance(secret, str):
            raise ConfigError("BybitExecutor needs secret (the API key's HMAC secret)")
        if category not in ("spot", "linear"):
            raise ConfigError(f"BybitExecutor category must be 'spot' or 'linear', got {category!r}")
        if not 0 < recv_window_ms <= 60_000:
            raise ConfigError(f"recv_window_ms must be within (0, 60000], got {recv_window_ms!r}")
        if run_id is not None and not re.fullmatch(r"[0-9a-z]{10}", run_id):
            raise ConfigError(f"run_id must be 10 characters of [0-9a-z], got {run_id!r}")
        self._api_key = api_key
        self._signer = HmacSigner(secret)
        self.category = category
        self.trade_url, self.private_url, self.rest_url = trade_url, private_url, rest_url.rstrip("/")
        self.recv_window_ms = recv_window_ms
        self.symbols = tuple(symbols)
        self.run_id = run_id or new_run_id()
        self.prefix = f"flx{self.run_id}_"
        self.request_timeout, self.connect_timeout, self.ping_interval = request_timeout, connect_timeout, ping_interval
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.session_max_age = check_max_age(session_max_age)
        #: Trade connections handed over to a fresh one (make before break: the age limit, 10019).
        self.handovers = 0
        self.history = history
        self._settings = BybitSettings(category, trade_url, private_url, self.rest_url, api_key_from, secret_from,
                                       recv_window_ms)
        self._orders, self._open, self._by_client, self._client_of = {}, {}, {}, {}
        self._venue_id: dict[str, str] = {}
        self._by_venue: dict[str, Order] = {}
        self._finished = deque()
        self._sent = set()
        self._unknown = {}
        self._unknown_wake = trio.Event()
        self.unknown_after = unknown_after
        self._cancel_wanted = set()
        self._positions: dict[tuple[int, str], Position] = {}
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        #: The latest ``execTime`` (ms) applied: where the next reconciliation starts.
        self.last_exec_ms: int | None = None
        self.fill_log: deque[Fill] = deque(maxlen=history)
        self.fee_assets: dict[str, str] = {}
        self.fills = 0
        self.balances: dict[str, tuple[Decimal, Decimal]] = {}
        #: linear: the venue's (account-wide) position per symbol, and the ``seq`` it was reported at.
        self.venue_positions: dict[str, Position] = {}
        self._position_seq: dict[str, int] = {}
        self._filters: dict[str, SymbolFilters] = {}
        self.foreign_orders: dict[str, str] = {}
        self.adopted: dict[str, Order] = {}
        self._intents: deque[tuple[IntentKind, Order]] = deque()
        self._amend_wanted = {}
        #: The ``updatedTime`` of the newest order row applied, per open order: a row buffered while
        #: reconciling may be older than the snapshot, and must not undo an amend.
        self._row_ms: dict[str, int] = {}
        self._intent_wake = trio.Event()
        self._pending: dict[str, Pending] = {}
        self._sent_on: dict[str, WebSocketConnection] = {}
        self._private_acks: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        self._ws: WebSocketConnection | None = None
        self._buffer: list[dict[str, Any]] | None = []
        self._ready = False
        self._ready_event = trio.Event()
        self._session_end = trio.Event()
        self._rotate = trio.Event()
        self._run_nursery: trio.Nursery | None = None
        self._fatal: BybitAuthError | None = None
        self._paused_until_ms = 0
        self._started_ms: int | None = None
        self._http: httpx.AsyncClient | None = None
        self.connects = 0
        self.reconciliations = 0
        self.last_error = ""

    @classmethod
    def from_env(cls, *, api_key_env: str, secret_env: str, **options: Any) -> BybitExecutor:
        """The key from environment variables (their names are what the settings record)."""
        api_key, secret = os.environ.get(api_key_env), os.environ.get(secret_env)
        if not api_key:
            raise ConfigError(f"the environment variable {api_key_env} (the Bybit API key) is not set")
        if not secret:
            raise ConfigError(f"the environment variable {secret_env} (the Bybit API secret) is not set")
        return cls(api_key=api_key, secret=secret, api_key_from=f"env:{api_key_env}",
                   secret_from=f"env:{secret_env}", **options)

    def __repr__(self) -> str:
        return f"<BybitExecutor {self.category} {self.trade_url} run={self.run_id} " \
               f"{'ready' if self._ready else 'not ready'}>"

    def _now_ms(self) -> int:
        return self._clock.wall_ns() // 1_000_000

    # --- intents ---------------------------------------------------------------------------------------

    def client_id(self, order_id: str) -> str:
        return self.prefix + order_id

    def submit(self, order: Order) -> None:
        if order.order_id in self._orders:
            raise OrderError(f"order id {order.order_id!r} is already in use")
        order.created_ts_ns = self._clock.wall_ns()
        order.venue = order.venue or "bybit"
        self._orders[order.order_id] = self._open[order.order_id] = order
        cid = self.client_id(order.order_id)
        if not CLIENT_ID_RE.fullmatch(cid):
            self._reject(order, f"order id {order.order_id!r} cannot be a Bybit orderLinkId "
                                f"({cid!r} must be at most 36 of [A-Za-z0-9_-])")
            return
        self._client_of[order.order_id] = cid
        self._by_client[cid] = order
        if self._started_ms is None:
            self._started_ms = self._now_ms()
        self._intents.append(("place", order))
        self._intent_wake.set()

    def cancel(self, slot: int, order_id: str) -> None:
        order = self._orders.get(order_id)
        if order is None or order.slot != slot:
            raise OrderError(f"slot {slot} has no order {order_id!r}; ctx.open_orders lists the live ones")
        if not order.is_open:
            self._emit(slot, self._update_event(order, "rejected", f"cancel refused: order is {order.status}"))
            return
        if ("place", order) in self._intents:
            self._intents.remove(("place", order))
            self._finalize(order, "canceled", "canceled by strategy before it was sent")
            return
        self._cancel_wanted.add(order_id)
        self._intents.append(("cancel", order))
        self._intent_wake.set()

    # --- fills and order updates ------------------------------------------------------------------------

    def _note_venue_id(self, order: Order, venue_id: Any) -> None:
        if venue_id and order.order_id not in self._venue_id:
            self._venue_id[order.order_id] = str(venue_id)
            self._by_venue[str(venue_id)] = order

    def _order_of(self, row: Mapping[str, Any]) -> Order | None:
        return self._by_client.get(str(row.get("orderLinkId") or "")) or \
            self._by_venue.get(str(row.get("orderId") or ""))

    def _apply_exec(self, row: Mapping[str, Any]) -> bool:
        if row.get("execType", "Trade") != "Trade":
            return False
        order = self._order_of(row)
        exec_id = str(row["execId"])
        if order is None or exec_id in self._seen:
            return False
        self._seen.add(exec_id)
        self._seen_order.append(exec_id)
        if self.history is not None:
            while len(self._seen_order) > 10 * self.history:
                self._seen.discard(self._seen_order.popleft())
        t = int(row.get("execTime") or 0)
        if self.last_exec_ms is None or t > self.last_exec_ms:
            self.last_exec_ms = t
        self._note_venue_id(order, row.get("orderId"))
        self._settle(order)
        self._accept(order)
        price, qty, fee = dec(row["execPrice"]), dec(row["execQty"]), dec(row.get("execFee") or "0")
        asset = str(row.get("feeCurrency") or "")
        order.filled_qty += qty
        order.notional += price * qty
        order.status = "filled" if order.filled_qty >= order.qty else "partially_filled"
        f = self._filters.get(order.symbol)
        self.fills += 1
        fill = Fill(order.order_id, order.symbol, order.side, price, qty, fee,
                    "maker" if row.get("isMaker") else "taker", self._clock.wall_ns(), exec_id, order.slot,
                    order.venue, "" if f is None or asset in ("", f.quote) else asset)
        book_fill(self.position(order.slot, order.symbol), fill)
        self.fill_log.append(fill)
        self.fee_assets[exec_id] = asset
        self._emit(order.slot, fill)
        self._update(order)
        return True

    def _apply_execs(self, rows: list[Mapping[str, Any]]) -> int:
        rows = sorted(rows, key=lambda r: (int(r.get("execTime") or 0), int(r.get("seq") or 0), str(r["execId"])))
        return sum(self._apply_exec(r) for r in rows)

    async def _apply_order_row(self, row: Mapping[str, Any]) -> None:
        order = self._order_of(row)
        if order is None:
            return
        self._note_venue_id(order, row.get("orderId"))
        self._settle(order)
        status = str(row.get("orderStatus", ""))
        updated = int(row.get("updatedTime") or 0)
        if status in ("New", "PartiallyFilled") and updated >= self._row_ms.get(order.order_id, 0):
            self._row_ms[order.order_id] = updated
            self._amended(order, dec(row.get("price") or "0"), dec(row.get("qty") or "0"))
        if dec(row.get("cumExecQty") or "0") > order.filled_qty:
            await self._recover_execs(order)
        if status in ("New", "PartiallyFilled", "Untriggered", "Triggered"):
            self._accept(order)
        elif status in ("Cancelled", "PartiallyFilledCanceled", "Deactivated"):
            self._finalize(order, "canceled", "canceled" + (" by strategy" if order.order_id in self._cancel_wanted
                                                             else " on Bybit"))
        elif status == "Rejected":
            self._finalize(order, "rejected", f"rejected by Bybit ({row.get('rejectReason') or 'no reason given'})")
        if not order.is_open:
            self._row_ms.pop(order.order_id, None)

    async def _recover_execs(self, order: Order) -> None:
        self._apply_execs(await self._rest_list("/v5/execution/list", {
            "category": self.category, "orderLinkId": self._client_of[order.order_id], "limit": "100"}))

    async def _on_private(self, msg: dict[str, Any]) -> None:
        topic = str(msg.get("topic", ""))
        try:
            if topic.startswith("execution"):
                self._apply_execs(msg.get("data", []))
            elif topic.startswith("order"):
                for row in msg.get("data", []):
                    await self._apply_order_row(row)
            elif topic == "wallet":
                for acct in msg.get("data", []):
                    self._apply_wallet(acct)
            elif topic.startswith("position"):
                for row in msg.get("data", []):
                    self._apply_position(row)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("Bybit %s message not understood (%s); skipped", topic, exc)

    def _apply_wallet(self, acct: Mapping[str, Any]) -> None:
        for c in acct.get("coin", ()):
            locked = dec(c.get("locked") or "0")
            self.balances[str(c["coin"])] = (dec(c.get("walletBalance") or "0") - locked, locked)

    def _apply_position(self, row: Mapping[str, Any]) -> None:
        """A ``position`` push or ``/v5/position/list`` row, unless an older ``seq`` than one already applied.

        Kept as a ``Position`` with one lot at the venue's average entry price, and the
        realized PnL of the current holding (``curRealisedPnl``: fees and funding in).
        """
        if row.get("category", self.category) != self.category:
            return
        symbol, seq = str(row["symbol"]), int(row.get("seq") or -1)
        if seq < self._position_seq.get(symbol, -1):
            return  # a push from before the snapshot, buffered while reconciling
        self._position_seq[symbol] = seq
        size, side = dec(row.get("size") or "0"), row.get("side")
        pos = Position(symbol)
        if size and side in ("Buy", "Sell"):
            pos.apply_fill("buy" if side == "Buy" else "sell", dec(row.get("entryPrice") or row.get("avgPrice") or "0"),
                           size)
        pos.realized_pnl = dec(row.get("curRealisedPnl") or "0")
        self.venue_positions[symbol] = pos

    def _compare_positions(self) -> None:
        """Say so when the venue holds another position than the slots' fills add up to (not ours, or missed)."""
        for symbol, venue in sorted(self.venue_positions.items()):
            held = sum((p.qty for (_, sym), p in self._positions.items() if sym == symbol), ZERO)
            if venue.qty != held:
                log.warning("Bybit holds %s %s, the slots hold %s: the difference is no slot's (a previous run's, "
                            "or traded elsewhere)", plain(venue.qty), symbol, plain(held))

    # --- the session ------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with httpx.AsyncClient(base_url=self.rest_url, timeout=self.request_timeout) as http:
                self._http = http
                async with trio.open_nursery() as nursery:
                    self._run_nursery = nursery
                    nursery.start_soon(self._send_intents)
                    nursery.start_soon(self._supervise, nursery.cancel_scope, "Bybit", _TRANSIENT)
        finally:
            self._http = None
        if self._fatal is not None:
            raise self._fatal

    async def _session(self) -> None:
        self._session_end = trio.Event()
        self._rotate = trio.Event()
        self._buffer = []
        async with open_websocket(self.private_url, self.connect_timeout) as pws, trio.open_nursery() as nursery:
            try:
                nursery.start_soon(self._read_private, pws)
                _, scope = await nursery.start(self._connection)
                nursery.start_soon(self._pinger, pws)
                await self._handshake()
                ack = await self._private_op(pws, "auth", self._auth_args())
                if not ack.get("success"):
                    raise Fatal(BybitAuthError(f"Bybit refused the private stream's auth: "
                                                f"{ack.get('ret_msg') or 'no reason given'}"))
                topics = ["order", "execution", "wallet"] + (["position"] if self.category != "spot" else [])
                ack = await self._private_op(pws, "subscribe", topics)
                if not ack.get("success"):
                    raise SessionLost(f"Bybit refused the subscription: {ack.get('ret_msg')}")
                try:
                    await self._reconcile()
                except _VenueError as exc:
                    if exc.code in _AUTH_CODES:
                        raise Fatal(BybitAuthError(f"Bybit refused a reconciliation query: {exc.describe()}")) \
                            from None
                    raise
                buffered, self._buffer = self._buffer or [], None
                for msg in buffered:
                    await self._on_private(msg)
                self._compare_positions()
                self._ready = True
                self._ready_event.set()
                self._intent_wake.set()
                nursery.start_soon(self._resolve_unknown)
                await self._serve(nursery, scope)
            finally:
                self._ready = False
                self._ready_event = trio.Event()
                self._ws = None
                self._end_requests("the connection ended before the answer")
                for p in self._private_acks.values():
                    p.failure = "the connection ended before the answer"
                    p.done.set()
                self._private_acks.clear()
                nursery.cancel_scope.cancel()

    @property
    def _order_url(self) -> str:
        return self.trade_url

    def _auth_args(self) -> list[Any]:
        expires = self._now_ms() + 10_000
        return [self._api_key, expires, self._signer.sign(bybit_auth_text(expires))]

    async def _handshake(self) -> None:
        """``op: auth`` on the current trade connection: its requests carry no signature of their own."""
        try:
            await self._trade_call("auth", self._auth_args(), header=False)
        except _VenueError as exc:
            if exc.code in _UNKNOWN_CODES | {_RESTARTING}:  # Bybit's trouble, not the key's
                raise SessionLost(f"the trade connection's auth: {exc.describe()}") from None
            raise Fatal(BybitAuthError(f"Bybit refused the trade connection's auth: {exc.describe()}; "
                                        "check the API key, its secret and the machine's clock")) from None

    async def _pinger(self, pws: WebSocketConnection) -> None:
        """Both connections are cut after 10 minutes without a ping; the docs ask for one every 20 s."""
        while True:
            await trio.sleep(self.ping_interval)
            try:
                if self._ws is not None:
                    await self._ws.send_message('{"op":"ping"}')
                await pws.send_message('{"op":"ping"}')
            except ConnectionClosed:
                self._session_end.set()
                return

    async def _read(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                msg = orjson.loads(await ws.get_message())
                if type(msg) is not dict or msg.get("op") == "pong":
                    continue
                self._observe_limits(msg.get("header"))
                if msg.get("retCode") == _RESTARTING and ws is self._ws:
                    log.warning("Bybit's trade service is restarting (10019): moving to a new connection")
                    self._rotate.set()
                self._answered(str(msg.get("reqId", "")), msg)
        except (ConnectionClosed, orjson.JSONDecodeError) as exc:
            if ws is self._ws:
                self.last_error = f"trade connection ended ({type(exc).__name__})"
        finally:
            if ws is self._ws:
                self._session_end.set()

    async def _read_private(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                msg = orjson.loads(await ws.get_message())
                if type(msg) is not dict:
                    continue
                op = msg.get("op")
                if op in ("auth", "subscribe"):
                    p = self._private_acks.pop(str(op), None)
                    if p is not None:
                        p.response = msg
                        p.done.set()
                elif "topic" in msg:
                    if self._buffer is not None:
                        self._buffer.append(msg)
                    else:
                        await self._on_private(msg)
        except (ConnectionClosed, orjson.JSONDecodeError) as exc:
            self.last_error = f"private stream ended ({type(exc).__name__})"
        finally:
            self._session_end.set()

    async def _private_op(self, ws: WebSocketConnection, op: str, args: list[Any]) -> dict[str, Any]:
        p = self._private_acks[op] = Pending(op)
        await ws.send_message(orjson.dumps({"req_id": f"p{next(self._ids)}", "op": op, "args": args}).decode())
        with trio.move_on_after(self.request_timeout):
            await p.done.wait()
        if p.response is None:
            raise SessionLost(p.failure or f"no answer to {op} on the private stream")
        return p.response

    # --- requests -----------------------------------------------------------------------------------------

    def _observe_limits(self, header: Any) -> None:
        if type(header) is not dict:
            return
        h = {str(k).lower(): v for k, v in header.items()}
        try:
            if int(h.get("x-bapi-limit-status", 1)) <= 0:
                self._paused_until_ms = max(self._paused_until_ms, int(h["x-bapi-limit-reset-timestamp"]))
        except (KeyError, TypeError, ValueError):
            return

    async def _trade_send(self, op: str, args: Any, *, header: bool = True) -> Pending:
        while (wait := self._paused_until_ms - self._now_ms()) > 0:
            log.warning("Bybit rate limit reached: holding requests for %.3f s", wait / 1000)
            await trio.sleep(wait / 1000)

        def frame(rid: str) -> dict[str, Any]:
            req: dict[str, Any] = {"reqId": rid, "op": op, "args": args}
            if header:
                req["header"] = {"X-BAPI-TIMESTAMP": str(self._now_ms()),
                                 "X-BAPI-RECV-WINDOW": str(self.recv_window_ms)}
            return req

        return await self._request(op, frame)

    async def _trade_result(self, p: Pending) -> Any:
        with trio.move_on_after(self.request_timeout):
            await p.done.wait()
        if p.response is None:
            raise SessionLost(p.failure or f"no answer to {p.method} within {self.request_timeout:g} s")
        code = int(p.response.get("retCode", 0))
        if code:
            if code in _BUSY_CODES:
                self._paused_until_ms = max(self._paused_until_ms, self._now_ms() + 1000)
            raise _VenueError(code, str(p.response.get("retMsg", "")))
        return p.response.get("data") or {}

    async def _trade_call(self, op: str, args: Any, *, header: bool = True) -> Any:
        return await self._trade_result(await self._trade_send(op, args, header=header))

    async def _rest(self, path: str, params: dict[str, str]) -> Any:
        http = self._http
        if http is None:
            raise SessionLost("not running")
        query = urlencode(params)
        ts = str(self._now_ms())
        headers = {"X-BAPI-API-KEY": self._api_key, "X-BAPI-TIMESTAMP": ts,
                   "X-BAPI-RECV-WINDOW": str(self.recv_window_ms),
                   "X-BAPI-SIGN": self._signer.sign(bybit_rest_text(ts, self._api_key, self.recv_window_ms, query))}
        resp = await http.get(f"{path}?{query}", headers=headers)
        body = resp.json()
        code = int(body.get("retCode", resp.status_code if resp.status_code != 200 else 0))
        if code:
            raise _VenueError(code, str(body.get("retMsg", "")))
        return body.get("result") or {}

    async def _rest_list(self, path: str, params: dict[str, str]) -> list[Mapping[str, Any]]:
        """Every page of a listing (``nextPageCursor``)."""
        rows: list[Mapping[str, Any]] = []
        cursor = ""
        while True:
            result = await self._rest(path, {**params, "cursor": cursor} if cursor else params)
            rows += result.get("list", [])
            cursor = str(result.get("nextPageCursor") or "")
            if not cursor:
                return rows

    # --- reconciliation --------------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Fills since the last one seen, open orders, each order in flight, balances: before any intent."""
        self.reconciliations += 1
        symbols = sorted({o.symbol for o in self._open.values() if o.order_id in self._sent} |
                         {f.symbol for f in self.fill_log} | set(self.symbols))
        for symbol in symbols:
            if symbol not in self._filters:
                await self._load_filters(symbol)
        start = self.last_exec_ms if self.last_exec_ms is not None else self._started_ms
        if start is not None:
            for symbol in symbols:
                self._apply_execs(await self._rest_list("/v5/execution/list", {
                    "category": self.category, "symbol": symbol, "startTime": str(start), "limit": "100"}))
        params = {"category": self.category, "openOnly": "0", "limit": "50"}
        if self.category != "spot":
            params["settleCoin"] = "USDT"
        venue_open = {str(o.get("orderLinkId")): o for o in
                      (await self._rest("/v5/order/realtime", params)).get("list", [])}
        for order in [o for o in self._open.values() if o.order_id in self._sent]:
            cid = self._client_of[order.order_id]
            row = venue_open.get(cid)
            if row is None:
                found = (await self._rest("/v5/order/realtime", {"category": self.category,
                                                                  "orderLinkId": cid})).get("list", [])
                if not found:
                    self._never_placed(order)
                    continue
                row = found[0]
            await self._apply_order_row(row)
        self.foreign_orders = {}
        for cid, row in venue_open.items():
            if cid in self._by_client:
                continue
            ours = parse_client_id(cid)
            if ours is not None and ours[0] != self.run_id:
                self._adopt(cid, ours[1], row)
            else:
                self.foreign_orders[cid] = str(row.get("symbol", ""))
        for order_id in list(self._cancel_wanted):
            wanted = self._orders.get(order_id)
            if wanted is not None and wanted.is_open and ("cancel", wanted) not in self._intents:
                self._intents.appendleft(("cancel", wanted))
        wallet = await self._rest("/v5/account/wallet-balance", {"accountType": "UNIFIED"})
        self.balances = {}
        for acct in wallet.get("list", []):
            self._apply_wallet(acct)
        if self.category != "spot":
            await self._reconcile_positions()
        log.info("Bybit reconciled: %d open orders at the venue, %d ours in flight, %d foreign, %d adopted",
                 len(venue_open), len(self._sent), len(self.foreign_orders), len(self.adopted))

    async def _reconcile_positions(self) -> None:
        """``/v5/position/list``: every open USDT position, and the ones we knew of (closed since, listed by symbol)."""
        rows = await self._rest_list("/v5/position/list",
                                     {"category": self.category, "settleCoin": "USDT", "limit": "200"})
        listed = {str(r.get("symbol")) for r in rows}
        for symbol in sorted(set(self.venue_positions) - listed):
            if self.venue_positions[symbol].qty:
                rows += (await self._rest("/v5/position/list", {"category": self.category,
                                                                "symbol": symbol})).get("list", [])
        for row in rows:
            self._apply_position(row)

    def _adopt(self, cid: str, slot: int, row: Mapping[str, Any]) -> None:
        if cid in self.adopted:
            return
        side: Side = "buy" if row.get("side") == "Buy" else "sell"
        otype: OrderType = "limit" if row.get("orderType") == "Limit" else "market"
        order = Order(cid, slot, str(row["symbol"]), side, otype, dec(row["qty"]),
                      dec(row["price"]) if otype == "limit" else None,
                      "partially_filled" if row.get("orderStatus") == "PartiallyFilled" else "accepted",
                      dec(row.get("cumExecQty") or "0"), dec(row.get("cumExecValue") or "0"),
                      "adopted from a previous run", self._clock.wall_ns(), "bybit")
        self.adopted[cid] = order
        self._orders[cid] = self._open[cid] = self._by_client[cid] = order
        self._client_of[cid] = cid
        self._sent.add(cid)
        self._note_venue_id(order, row.get("orderId"))
        log.warning("adopted open order %s of a previous run into slot %d", cid, slot)

    async def _load_filters(self, symbol: str) -> None:
        http = self._http
        if http is None:
            raise SessionLost("not running")
        resp = await http.get("/v5/market/instruments-info", params={"category": self.category, "symbol": symbol})
        body = resp.json()
        for info in (body.get("result") or {}).get("list", []):
            lot, price = info.get("lotSizeFilter", {}), info.get("priceFilter", {})
            step = dec(lot.get("qtyStep") or lot.get("basePrecision") or "0")
            # Spot's minOrderQty is deprecated ("check minOrderAmt instead"); linear's is the rule.
            least = dec(lot.get("minOrderQty") or "0") if self.category == "linear" else ZERO
            self._filters[info["symbol"]] = SymbolFilters(
                info["symbol"], str(info.get("baseCoin", "")), str(info.get("quoteCoin", "")),
                tick=dec(price.get("tickSize") or "0"), min_qty=least, step=step,
                max_qty=dec(lot.get("maxOrderQty") or "0"),
                min_notional=dec(lot.get("minOrderAmt") or lot.get("minNotionalValue") or "0"))

    # --- sending intents ---------------------------------------------------------------------------------------

    async def _send_cancel(self, order: Order) -> None:
        p = await self._trade_send("order.cancel", [{"category": self.category, "symbol": order.symbol,
                                                     "orderLinkId": self._client_of[order.order_id]}])
        self._watch(self._cancel_outcome(order, p))

    async def _send_amend(self, order: Order) -> None:
        """``order.amend`` on the trade connection; the ``order`` topic then says what the order is."""
        change = self._next_amend(order)
        if change is None:
            return
        price, qty = change.price, change.qty
        f = self._filters.get(order.symbol)
        problem = f.check(change.applied_to(order), self.mark_price(order.slot, order.symbol)) if f else None
        if problem is not None:
            self._refuse_amend(order, problem.replace("exchange filter", "Bybit instrument rule"))
            return
        args: dict[str, Any] = {"category": self.category, "symbol": order.symbol,
                                "orderLinkId": self._client_of[order.order_id]}
        if price is not None:
            args["price"] = plain(price)
        if qty is not None:
            args["qty"] = plain(qty)
        try:
            p = await self._trade_send("order.amend", [args])
        except SessionLost:
            self._amend_again(order, change)  # never left: ``_send_intents`` queues it for the next session
            raise
        self._watch(self._amend_outcome(order, change, p))

    async def _amend_outcome(self, order: Order, change: AmendRequest, p: Pending) -> None:
        try:
            await self._trade_result(p)
        except SessionLost:
            # Taken or not: the reconciliation's order row says which, and a resend of
            # what the order already is goes nowhere (``_send_amend``).
            if order.is_open:
                self._amend_again(order, change)
                self._intents.append(("amend", order))
            return
        except _VenueError as exc:
            if exc.code in _NOT_TAKEN and order.is_open:
                self._amend_again(order, change)
                self._intents.appendleft(("amend", order))
                self._intent_wake.set()
                return
            self._refuse_amend(order, f"refused by {exc.describe()}")
        # Taken: the ``order`` topic brings the order's new price and qty.

    def _watch(self, outcome: Any) -> None:
        assert self._run_nursery is not None

        async def wait() -> None:
            await outcome

        self._run_nursery.start_soon(wait)

    async def _place(self, order: Order) -> None:
        if not order.is_open:
            return
        if order.symbol not in self._filters:
            try:
                await self._load_filters(order.symbol)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                self._reject(order, f"cannot check the instrument rules of {order.symbol}: {exc}")
                return
        f = self._filters.get(order.symbol)
        reason = f.check(order, self.mark_price(order.slot, order.symbol)) if f is not None else None
        if reason is not None:
            self._reject(order, reason.replace("exchange filter", "Bybit instrument rule"))
            return
        args: dict[str, Any] = {"category": self.category, "symbol": order.symbol,
                                "side": "Buy" if order.side == "buy" else "Sell",
                                "orderType": "Limit" if order.order_type == "limit" else "Market",
                                "qty": plain(order.qty), "orderLinkId": self._client_of[order.order_id]}
        if order.order_type == "limit":
            assert order.price is not None
            args["price"], args["timeInForce"] = plain(order.price), "GTC"
        elif self.category == "spot":
            args["marketUnit"] = "baseCoin"
        p = await self._trade_send("order.create", [args])
        self._sent.add(order.order_id)
        self._watch(self._place_outcome(order, p))

    async def _place_outcome(self, order: Order, p: Pending) -> None:
        try:
            data = await self._trade_result(p)
        except SessionLost as exc:
            self._unknown_outcome(order, str(exc))
            return
        except _VenueError as exc:
            if exc.code in _UNKNOWN_CODES:
                self._unknown_outcome(order, exc.describe())
                return
            self._sent.discard(order.order_id)
            if exc.code in _NOT_TAKEN and order.is_open:
                self._intents.appendleft(("place", order))  # send it again: after the window, on a new connection
                self._intent_wake.set()
                return
            self._reject(order, f"refused by {exc.describe()}")
            if exc.code in _AUTH_CODES and self._fatal is None:
                self._fatal = BybitAuthError(f"Bybit refused order {order.order_id}: {exc.describe()}")
                self._session_end.set()
            return
        self._note_venue_id(order, data.get("orderId"))
        self._settle(order)
        self._accept(order)

    async def _query_unknown(self, order: Order) -> None:
        try:
            found = (await self._rest("/v5/order/realtime", {"category": self.category,
                                                              "orderLinkId": self._client_of[order.order_id]}))
        except (_VenueError, httpx.HTTPError, ValueError) as exc:
            log.warning("order %s: status query failed (%s)", order.order_id, exc)
            return
        if order.order_id not in self._unknown:
            return  # the private stream told meanwhile
        rows = found.get("list", [])
        if rows:
            await self._apply_order_row(rows[0])
        else:
            self._never_placed(order)

    def _never_placed(self, order: Order) -> None:
        why = self._unknown.get(order.order_id, ("it was sent",))[0]
        self._reject(order, f"Bybit has no such order after {why}: it was never placed")

    async def _cancel_outcome(self, order: Order, p: Pending) -> None:
        try:
            await self._trade_result(p)
        except SessionLost:
            if order.is_open and ("cancel", order) not in self._intents:
                self._intents.append(("cancel", order))
            return
        except _VenueError as exc:
            if exc.code in _NOT_TAKEN and order.is_open:
                self._intents.appendleft(("cancel", order))
                self._intent_wake.set()
                return
            self._cancel_wanted.discard(order.order_id)
            if order.is_open:
                self._emit(order.slot, self._update_event(order, "rejected", f"cancel refused by {exc.describe()}"))
            return
        # The ack only says the request was taken: the ``order`` topic says it is canceled.

    # --- views ---------------------------------------------------------------------------------------------------

    @property
    def settings(self) -> BybitSettings:
        return self._settings

    def status(self) -> BybitStatus:
        return BybitStatus(
            executor="BybitExecutor", orders=len(self._orders), open_orders=len(self._open), fills=self.fills,
            settings=self._settings, connected=self._ws is not None, ready=self._ready,
            connects=self.connects, handovers=self.handovers, reconciliations=self.reconciliations,
            pending_unknown=tuple(self._unknown),
            queued_intents=len(self._intents), balances={a: f for a, (f, _) in sorted(self.balances.items())},
            foreign_orders=tuple(sorted(self.foreign_orders)), adopted_orders=tuple(sorted(self.adopted)),
            last_error=self.last_error,
            venue_positions={s: p.qty for s, p in sorted(self.venue_positions.items())})



