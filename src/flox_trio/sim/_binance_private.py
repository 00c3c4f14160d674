"""Binance Spot's WebSocket API (``/ws-api/v3``) as the simulator serves it: signed requests, a
matching engine, and the account stream on the same connection.

The wire format is ``web-socket-api.md`` and ``user-data-stream.md`` of
binance/binance-spot-api-docs (quoted in ``order-entry-protocols.md``):

* every response is ``{"id", "status", "result" | "error", "rateLimits"}``;
  account events are ``{"subscriptionId", "event"}``;
* SIGNED requests carry ``timestamp`` (outside ``recvWindow``, default 5000 ms:
  -1021), ``apiKey`` (malformed: -2014, unknown: -2015) and ``signature`` over
  the sorted ``name=value`` payload (HMAC-SHA256 hex or Ed25519 base64; wrong:
  -1022), unless the session logged on with an Ed25519 key (``session.logon``);
* ``order.place`` (LIMIT GTC/IOC, MARKET), ``order.cancel``, ``order.amend.keepPriority``, ``order.status``,
  ``openOrders.status``, ``account.status``, ``myTrades``, ``time``, ``ping``,
  ``session.logon``/``status``/``logout``, ``userDataStream.subscribe``,
  ``userDataStream.subscribe.signature``, ``userDataStream.unsubscribe``;
* ``executionReport`` and ``outboundAccountPosition`` for every change.

The matching engine trades against the simulator's own book (the Binance
mirror that REST snapshots serve): market orders and marketable limits walk
it level by level, one venue trade per level; the rest of a GTC limit rests
and fills as maker when a trade prints at or through its price (generated
trades, or ``print_trade``). The simulated account is a small participant: its
fills do not take liquidity out of the public book. Fees are the account's
maker/taker rates, charged like Binance's without BNB: a buyer pays in the
base asset, a seller in the quote asset.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import attrs
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from trio_websocket import WebSocketRequest

from ._binance import split_symbol
from ._connection import Limits, SimConnection
from ._market import SymbolSpec
from ._matching import MatchingEngine, SimAccount, SimFill, SimOrder, cost, fixed8, places

if TYPE_CHECKING:
    from ._binance import BinanceVenue
    from ._transport import _SimStream

log = logging.getLogger("flox_trio.sim")

#: The WebSocket API's path.
ROUTE = "/ws-api/v3"

_EIGHT = Decimal("0.00000001")
_API_KEY = re.compile(r"[A-Za-z0-9]{1,100}")
_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_WEIGHTS = {"order.place": 1, "order.cancel": 1, "order.amend.keepPriority": 4, "order.status": 4, "openOrders.status": 6, "account.status": 20,
            "myTrades": 20, "session.logon": 2, "session.status": 2, "session.logout": 2, "time": 1, "ping": 1,
            "userDataStream.subscribe": 2, "userDataStream.subscribe.signature": 2,
            "userDataStream.unsubscribe": 2, "exchangeInfo": 20}
_SIGNED = frozenset({"order.place", "order.cancel", "order.amend.keepPriority", "order.status", "openOrders.status", "account.status",
                     "myTrades", "session.logon", "userDataStream.subscribe.signature"})
_ORDER_METHODS = frozenset({"order.place"})


class _Refusal(Exception):
    """An error response: HTTP-like status, venue code, message (and ``data``)."""

    def __init__(self, status: int, code: int, msg: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.data = status, code, msg, data


def _bad_param(name: str) -> _Refusal:
    return _Refusal(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class _Session:
    """One WebSocket API connection: its logon and its account-stream subscriptions."""

    def __init__(self, conn: SimConnection, now_ms: int) -> None:
        self.conn = conn
        self.connected_since = now_ms
        self.account: SimAccount | None = None
        self.authorized_since: int | None = None
        #: subscription id → account
        self.subscriptions: dict[int, SimAccount] = {}
        self.next_subscription = 0


class PrivateFaults:
    """What the private side is asked to get wrong; each ``take_*`` consumes one."""

    def __init__(self, private: BinancePrivate) -> None:
        self._private = private
        self._drops: deque[str] = deque()
        self._timeouts: deque[tuple[str, bool]] = deque()
        self._rejects: deque[tuple[str, int, str]] = deque()
        #: Account events still to be dropped (never delivered on any connection).
        self.drop_events = 0
        #: Events are held, not sent, while this is set; ``release_events`` sends them.
        self.holding = False
        self.held: list[tuple[_Session, str]] = []

    def drop_after_request(self, method: str = "order.place", times: int = 1) -> None:
        """Carry out the next ``times`` ``method`` requests, then cut the connection before the response."""
        self._drops.extend([method] * times)

    def answer_timeout(self, method: str = "order.place", times: int = 1, *, execute: bool = True) -> None:
        """Answer the next ``times`` ``method`` requests with -1007 (carried out anyway if ``execute``)."""
        self._timeouts.extend([(method, execute)] * times)

    def reject(self, method: str = "order.place", code: int = -2010,
               msg: str = "Account has insufficient balance for requested action.", times: int = 1) -> None:
        """Refuse the next ``times`` ``method`` requests with ``code``."""
        self._rejects.extend([(method, code, msg)] * times)

    def drop_account_events(self, count: int = 1) -> None:
        self.drop_events += count

    def hold_account_events(self) -> None:
        self.holding = True

    def release_account_events(self) -> int:
        """Send the held events (to the connections still open); returns how many."""
        self.holding = False
        held, self.held = self.held, []
        for session, text in held:
            session.conn.push(text)
        return len(held)

    def server_shutdown(self) -> int:
        """Announce ``serverShutdown`` on every open WebSocket API connection; they stay open (the
        client is to move to a new one). Returns how many were told."""
        text = orjson.dumps({"event": {"e": "serverShutdown", "E": self._private._clock()}}).decode()
        conns = [s.conn for s in self._private.sessions if s.conn.open]
        for c in conns:
            c.push(text)
        return len(conns)

    def disconnect(self) -> int:
        """Cut every WebSocket API connection now (no close frame, nothing queued is sent)."""
        conns = [s.conn for s in self._private.sessions if s.conn.open]
        for c in conns:
            c.abort("disconnected (simulated)")
        return len(conns)

    def take_drop(self, method: str) -> bool:
        if self._drops and self._drops[0] == method:
            self._drops.popleft()
            return True
        return False

    def take_timeout(self, method: str) -> tuple[bool, bool]:
        """(answer -1007, carry it out anyway)."""
        if self._timeouts and self._timeouts[0][0] == method:
            return True, self._timeouts.popleft()[1]
        return False, False

    def take_reject(self, method: str) -> tuple[int, str] | None:
        if self._rejects and self._rejects[0][0] == method:
            _, code, msg = self._rejects.popleft()
            return code, msg
        return None


class BinancePrivate(MatchingEngine):
    """Accounts, orders and the account stream of the simulated Binance WebSocket API."""

    def __init__(self, venue: BinanceVenue, specs: Iterable[SymbolSpec], clock: Callable[[], int],
                 limits: Limits, *, orders_per_10s: int = 100, weight_per_minute: int = 6000,
                 recv_window_max: int = 60_000) -> None:
        self._venue = venue
        self._specs = {s.symbol: s for s in specs}
        self._clock = clock
        self._limits = attrs.evolve(limits, rate_limit=None)
        self.orders_per_10s = orders_per_10s
        self.weight_per_minute = weight_per_minute
        self.recv_window_max = recv_window_max
        self.accounts: dict[str, SimAccount] = {}
        self.sessions: list[_Session] = []
        self.orders: dict[int, SimOrder] = {}
        self.fills: list[SimFill] = []
        self.faults = PrivateFaults(self)
        #: Every request received: (connection id, method, response status or None if none was sent).
        self.requests: list[tuple[int, str, int | None]] = []
        self._order_ids = itertools.count(4_000_000_000)
        self._trade_ids = itertools.count(900_000_000)
        self._cancel_ids = itertools.count(1)
        self._weight: tuple[int, int] = (-1, 0)  # (minute, used)
        self._order_count: dict[str, tuple[int, int]] = {}  # api key → (10 s window, count)
        self._day_count: dict[str, int] = {}

    # --- accounts ---------------------------------------------------------------------------------

    def add_account(self, api_key: str, *, secret: str | bytes | None = None, public_key: bytes | None = None,
                    balances: Mapping[str, Any] | None = None, maker_fee: Any = "0.001",
                    taker_fee: Any = "0.001") -> SimAccount:
        """An account for ``api_key``: an HMAC ``secret`` or an Ed25519 ``public_key`` (PEM)."""
        if (secret is None) == (public_key is None):
            raise ValueError("an account has either an HMAC secret or an Ed25519 public key")
        if public_key is not None:
            key = load_pem_public_key(public_key)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("the public key is not an Ed25519 key")
            account = SimAccount(api_key, "ed25519", public_key=key)
        else:
            assert secret is not None
            account = SimAccount(api_key, "hmac", secret=secret.encode() if isinstance(secret, str) else secret)
        account.maker_fee, account.taker_fee = Decimal(str(maker_fee)), Decimal(str(taker_fee))
        for asset, amount in (balances or {}).items():
            account.balance(asset)[0] = Decimal(str(amount))
        self.accounts[api_key] = account
        return account

    def open_orders_of(self, api_key: str) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.open and o.account.api_key == api_key]

    # --- serving -----------------------------------------------------------------------------------

    async def serve(self, request: WebSocketRequest, stream: _SimStream) -> None:
        ws = await request.accept()
        conn = SimConnection("binance", request.path, ws, stream, self._limits)
        session = _Session(conn, self._clock())
        self.sessions.append(session)
        log.info("sim binance ws-api connection %d open", conn.id)
        await conn.run(lambda c, text: self._on_message(session, text), lambda c: None,
                       lambda c: self._closed(session))

    def _closed(self, session: _Session) -> None:
        session.subscriptions.clear()

    @property
    def connections(self) -> list[SimConnection]:
        return [s.conn for s in self.sessions]

    def _on_message(self, session: _Session, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._respond(session, None, _Refusal(400, -1013, "Invalid JSON"))
            return
        if type(req) is not dict or type(req.get("method")) is not str:
            self._respond(session, req.get("id") if type(req) is dict else None,
                          _Refusal(400, -1013, "Invalid request: missing field `method`"))
            return
        rid = req.get("id")
        method = req["method"].removeprefix("v3/")
        params = req.get("params") or {}
        if type(params) is not dict:
            self._respond(session, rid, _Refusal(400, -1013, "Invalid request: params must be an object"))
            return
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            self._respond(session, rid, _Refusal(400, -1013, f"Invalid request: unknown method `{method}`"))
            return
        account: SimAccount | None = None
        try:
            self._spend_weight(_WEIGHTS.get(method, 1))
            account = self._authenticate(session, method, params) if method in _SIGNED else session.account
            reject = self.faults.take_reject(method)
            if reject is not None:
                raise _Refusal(400, reject[0], reject[1])
            timeout, execute = self.faults.take_timeout(method)
            if timeout:
                if execute:
                    try:
                        handler(session, account, params)
                    except _Refusal:
                        pass
                raise _Refusal(408, -1007, "Timeout waiting for response from backend server. "
                                           "Send status unknown; execution status unknown.")
            result = handler(session, account, params)
        except _Refusal as refusal:
            self._respond(session, rid, refusal, method=method, account=account)
            return
        if self.faults.take_drop(method):
            self.requests.append((session.conn.id, method, None))
            log.info("sim binance ws-api connection %d: dropped after %s (simulated)", session.conn.id, method)
            session.conn.abort("dropped after the request (simulated)")
            return
        self._respond(session, rid, result, method=method, account=account)

    def _respond(self, session: _Session, rid: Any, result: Any, *, method: str = "",
                 account: SimAccount | None = None) -> None:
        out: dict[str, Any] = {"id": rid}
        if isinstance(result, _Refusal):
            err: dict[str, Any] = {"code": result.code, "msg": result.msg}
            if result.data:
                err["data"] = result.data
            out["status"] = result.status
            out["error"] = err
        else:
            out["status"] = 200
            out["result"] = result
        out["rateLimits"] = self._rate_limits(account, method)
        self.requests.append((session.conn.id, method, out["status"]))
        # The response goes out before the events the request caused (queued after it).
        session.conn.push(orjson.dumps(out).decode())

    def _rate_limits(self, account: SimAccount | None, method: str) -> list[dict[str, Any]]:
        out = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                "limit": self.weight_per_minute, "count": self._weight[1]}]
        if method in _ORDER_METHODS:
            key = account.api_key if account is not None else ""
            window, count = self._order_count.get(key, (-1, 0))
            now10 = self._clock() // 10_000
            out.insert(0, {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                           "limit": self.orders_per_10s, "count": count if window == now10 else 0})
        return out

    # --- limits and security ------------------------------------------------------------------------

    def _spend_weight(self, weight: int) -> None:
        minute = self._clock() // 60_000
        last, used = self._weight
        if minute != last:
            used = 0
        if used + weight > self.weight_per_minute:
            self._weight = (minute, used)
            retry = (minute + 1) * 60_000
            raise _Refusal(429, -1003, f"Too much request weight used; current limit is {self.weight_per_minute} "
                                       "request weight per 1 MINUTE.", {"serverTime": self._clock(),
                                                                        "retryAfter": retry})
        self._weight = (minute, used + weight)

    def _count_order(self, account: SimAccount) -> None:
        now10 = self._clock() // 10_000
        window, count = self._order_count.get(account.api_key, (-1, 0))
        if window != now10:
            count = 0
        if count >= self.orders_per_10s:
            raise _Refusal(429, -1015, f"Too many new orders; current limit is {self.orders_per_10s} orders "
                                       "per 10 SECOND.", {"serverTime": self._clock(),
                                                          "retryAfter": (now10 + 1) * 10_000})
        self._order_count[account.api_key] = (now10, count + 1)

    def _authenticate(self, session: _Session, method: str, params: dict[str, Any]) -> SimAccount:
        now = self._clock()
        ts = params.get("timestamp")
        if type(ts) is not int:
            raise _bad_param("timestamp")
        window: Any = params.get("recvWindow", 5000)
        if isinstance(window, bool) or not isinstance(window, int | float) or window > self.recv_window_max:
            raise _Refusal(400, -1131, "recvWindow must be less than 60000")
        ts_ms = ts // 1000 if ts > 10**14 else ts  # microseconds allowed
        if ts_ms >= now + 1000:
            raise _Refusal(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts_ms > window:
            raise _Refusal(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if "signature" not in params and session.account is not None and method != "session.logon":
            return session.account
        key = params.get("apiKey")
        if type(key) is not str or not key:
            raise _bad_param("apiKey")
        if not _API_KEY.fullmatch(key):
            raise _Refusal(401, -2014, "API-key format invalid.")
        account = self.accounts.get(key)
        if account is None:
            raise _Refusal(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature")
        if type(signature) is not str or not signature:
            raise _bad_param("signature")
        text = "&".join(f"{k}={_text(params[k])}" for k in sorted(params) if k != "signature")
        if not account.verify(text, signature):
            raise _Refusal(400, -1022, "Signature for this request is not valid.")
        return account

    @staticmethod
    def _need(account: SimAccount | None) -> SimAccount:
        if account is None:
            raise _Refusal(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return account

    # --- session and stream methods --------------------------------------------------------------------

    def _m_ping(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        return {}

    def _m_time(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        return {"serverTime": self._clock()}

    def _session_status(self, session: _Session) -> dict[str, Any]:
        return {"apiKey": session.account.api_key if session.account else None,
                "authorizedSince": session.authorized_since, "connectedSince": session.connected_since,
                "returnRateLimits": True, "serverTime": self._clock(),
                "userDataStream": bool(session.subscriptions)}

    def _m_session_logon(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        account = self._need(account)
        if account.key_type != "ed25519":
            raise _Refusal(400, -4056, "HMAC_SHA256 API key is not supported.")
        session.account = account
        session.authorized_since = self._clock()
        return self._session_status(session)

    def _m_session_status(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        return self._session_status(session)

    def _m_session_logout(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        for sid, acc in list(session.subscriptions.items()):
            if acc is session.account:
                self._terminate(session, sid)
        session.account = None
        session.authorized_since = None
        return self._session_status(session)

    def _subscribe(self, session: _Session, account: SimAccount) -> dict[str, Any]:
        if any(a is account for a in session.subscriptions.values()):
            raise _Refusal(400, -2035, "User Data Stream subscription already active.")
        sid = session.next_subscription
        session.next_subscription += 1
        session.subscriptions[sid] = account
        return {"subscriptionId": sid}

    def _m_userDataStream_subscribe(self, session: _Session, account: SimAccount | None,
                                    params: dict[str, Any]) -> Any:
        if session.account is None:
            raise _Refusal(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return self._subscribe(session, session.account)

    def _m_userDataStream_subscribe_signature(self, session: _Session, account: SimAccount | None,
                                              params: dict[str, Any]) -> Any:
        return self._subscribe(session, self._need(account))

    def _m_userDataStream_unsubscribe(self, session: _Session, account: SimAccount | None,
                                      params: dict[str, Any]) -> Any:
        sid = params.get("subscriptionId")
        for s in list(session.subscriptions):
            if sid is None or s == sid:
                self._terminate(session, s)
        return {}

    def _terminate(self, session: _Session, sid: int) -> None:
        session.subscriptions.pop(sid, None)
        session.conn.push(orjson.dumps({"subscriptionId": sid, "event": {
            "e": "eventStreamTerminated", "E": self._clock()}}).decode())

    def terminate_streams(self) -> int:
        """End every account-stream subscription with ``eventStreamTerminated`` (a test's fault)."""
        n = 0
        for s in self.sessions:
            if s.conn.open:
                for sid in list(s.subscriptions):
                    self._terminate(s, sid)
                    n += 1
        return n

    # --- queries ---------------------------------------------------------------------------------------

    def _find(self, account: SimAccount, params: dict[str, Any], id_key: str = "origClientOrderId") -> SimOrder:
        symbol = params.get("symbol")
        if type(symbol) is not str or not symbol:
            raise _bad_param("symbol")
        oid, cid = params.get("orderId"), params.get(id_key)
        if oid is None and cid is None:
            raise _Refusal(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for order in reversed(list(self.orders.values())):
            if order.account is account and order.symbol == symbol and \
                    (oid is None or order.order_id == oid) and (cid is None or order.client_id == cid):
                return order
        raise _Refusal(400, -2013, "Order does not exist.")

    def _m_order_status(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        return self._find(self._need(account), params).report()

    def _m_openOrders_status(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        acc = self._need(account)
        symbol = params.get("symbol")
        return [o.report() for o in self.orders.values()
                if o.open and o.account is acc and (symbol is None or o.symbol == symbol)]

    def _m_account_status(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        acc = self._need(account)
        maker, taker = acc.maker_fee, acc.taker_fee
        return {
            "makerCommission": int(maker * 10_000), "takerCommission": int(taker * 10_000),
            "buyerCommission": 0, "sellerCommission": 0, "canTrade": True, "canWithdraw": True, "canDeposit": True,
            "commissionRates": {"maker": fixed8(maker), "taker": fixed8(taker), "buyer": fixed8(Decimal(0)),
                                "seller": fixed8(Decimal(0))},
            "brokered": False, "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self._clock(), "accountType": "SPOT",
            "balances": [{"asset": a, "free": fixed8(f), "locked": fixed8(lk)}
                         for a, (f, lk) in sorted(acc.balances.items())
                         if not (params.get("omitZeroBalances") and not f and not lk)],
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def _m_myTrades(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        acc = self._need(account)
        symbol = params.get("symbol")
        if type(symbol) is not str or not symbol:
            raise _bad_param("symbol")
        limit = params.get("limit", 500)
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise _Refusal(400, -1100, "Illegal characters found in parameter 'limit'.")
        mine = {o.order_id for o in self.orders.values() if o.account is acc and o.symbol == symbol}
        trades = [f for f in self.fills if f.order_id in mine]
        if "orderId" in params:
            trades = [f for f in trades if f.order_id == params["orderId"]]
        if "fromId" in params:
            trades = [f for f in trades if f.trade_id >= params["fromId"]]
            return [f.report() for f in trades[:limit]]
        return [f.report() for f in trades[-limit:]]

    # --- order entry -------------------------------------------------------------------------------------

    def _m_order_place(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        acc = self._need(account)
        symbol = params.get("symbol")
        if type(symbol) is not str or not symbol:
            raise _bad_param("symbol")
        spec = self._specs.get(symbol)
        if spec is None:
            raise _Refusal(400, -1121, "Invalid symbol.")
        side, otype = params.get("side"), params.get("type")
        if side not in ("BUY", "SELL"):
            raise _Refusal(400, -1117, "Invalid side.")
        if otype not in ("LIMIT", "MARKET"):
            raise _Refusal(400, -1116, "Invalid orderType.")
        qty = _decimal(params, "quantity")
        tick, lot = Decimal(repr(spec.tick)), Decimal(repr(spec.lot))
        price = Decimal(0)
        tif = params.get("timeInForce", "GTC" if otype == "LIMIT" else "")
        if otype == "LIMIT":
            price = _decimal(params, "price")
            if tif not in ("GTC", "IOC"):
                raise _Refusal(400, -1115, "Invalid timeInForce.")
            if price <= 0 or price % tick:
                raise _Refusal(400, -1013, "Filter failure: PRICE_FILTER")
        elif "price" in params:
            raise _Refusal(400, -1106, "Parameter 'price' sent when not required.")
        if qty <= 0 or qty % lot:
            raise _Refusal(400, -1013, "Filter failure: LOT_SIZE")
        if places(qty) > 8 or places(price) > 8:
            raise _Refusal(400, -1111, "Parameter 'quantity' has too much precision.")
        cid = params.get("newClientOrderId")
        if cid is None:
            cid = f"sim{next(self._cancel_ids):019d}"
        if type(cid) is not str or not _CLIENT_ID.fullmatch(cid):
            raise _Refusal(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; "
                                       "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        if any(o.open and o.account is acc and o.client_id == cid for o in self.orders.values()):
            raise _Refusal(400, -2010, "Duplicate order sent.")
        base, quote = split_symbol(symbol)
        levels = self._levels(symbol, side)
        reference = price if otype == "LIMIT" else (levels[0][0] if levels else None)
        if reference is None:
            raise _Refusal(400, -2010, "Order book liquidity is less than symbol minimum quantity.")
        if reference * qty < self._min_notional(quote):
            raise _Refusal(400, -1013, "Filter failure: NOTIONAL")
        if side == "BUY":
            need = price * qty if otype == "LIMIT" else cost(levels, qty)
            if acc.balance(quote)[0] < need:
                raise _Refusal(400, -2010, "Account has insufficient balance for requested action.")
        elif acc.balance(base)[0] < qty:
            raise _Refusal(400, -2010, "Account has insufficient balance for requested action.")
        self._count_order(acc)
        now = self._clock()
        order = SimOrder(acc, symbol, next(self._order_ids), cid, side, otype, tif or "GTC", price, qty, now,
                         update_time=now)
        if otype == "LIMIT":
            order.locked = price * qty if side == "BUY" else qty
            bal = acc.balance(quote if side == "BUY" else base)
            bal[0] -= order.locked
            bal[1] += order.locked
        self.orders[order.order_id] = order
        self._execution(order, "NEW")
        self._take(order, levels)
        if order.open and (otype == "MARKET" or tif == "IOC"):
            self._finish(order, "EXPIRED", "INSUFFICIENT_LIQUIDITY" if otype == "MARKET" else
                         "UNFILLED_IOC_QUANTITY_EXPIRED")
        elif order.open:
            order.working = True
        ack: dict[str, Any] = {"symbol": symbol, "orderId": order.order_id, "orderListId": -1,
                               "clientOrderId": cid, "transactTime": now}
        resp_type = params.get("newOrderRespType", "FULL")
        if resp_type == "ACK":
            return ack
        full = {**ack, "price": fixed8(order.price), "origQty": fixed8(qty), "executedQty": fixed8(order.executed),
                "origQuoteOrderQty": fixed8(Decimal(0)), "cummulativeQuoteQty": fixed8(order.quote),
                "status": order.status, "timeInForce": order.tif, "type": otype, "side": side,
                "workingTime": now, "selfTradePreventionMode": "NONE"}
        if resp_type == "FULL":
            full["fills"] = [{"price": fixed8(f.price), "qty": fixed8(f.qty), "commission": fixed8(f.commission),
                              "commissionAsset": f.asset, "tradeId": f.trade_id}
                             for f in self.fills if f.order_id == order.order_id]
        return full

    def _m_order_cancel(self, session: _Session, account: SimAccount | None, params: dict[str, Any]) -> Any:
        acc = self._need(account)
        try:
            order = self._find(acc, params)
        except _Refusal as refusal:
            if refusal.code == -2013:
                raise _Refusal(400, -2011, "Unknown order sent.") from None
            raise
        if not order.open:
            raise _Refusal(400, -2011, "Unknown order sent.")
        new_id = params.get("newClientOrderId") or f"cancel{next(self._cancel_ids):020d}"
        self._finish(order, "CANCELED", cancel_id=str(new_id))
        return {"symbol": order.symbol, "origClientOrderId": order.client_id, "orderId": order.order_id,
                "orderListId": -1, "clientOrderId": new_id, "transactTime": self._clock(),
                "price": fixed8(order.price), "origQty": fixed8(order.qty), "executedQty": fixed8(order.executed),
                "origQuoteOrderQty": fixed8(Decimal(0)), "cummulativeQuoteQty": fixed8(order.quote),
                "status": order.status, "timeInForce": order.tif, "type": order.type, "side": order.side,
                "selfTradePreventionMode": "NONE"}

    def _m_order_amend_keepPriority(self, session: _Session, account: SimAccount | None,
                                    params: dict[str, Any]) -> Any:
        """A smaller quantity for an open order, which keeps its place in the queue (an ``executionReport`` REPLACED)."""
        acc = self._need(account)
        order = self._find(acc, params)
        if not order.open:
            raise _Refusal(400, -2013, "Order does not exist.")
        qty = _decimal(params, "newQty")
        if not Decimal(0) < qty < order.qty:
            raise _Refusal(400, -2038, "Order amend (quantity increase) is not supported.")
        spec = self._specs.get(order.symbol)
        if spec is not None and qty % Decimal(repr(spec.lot)):
            raise _Refusal(400, -1013, "Filter failure: LOT_SIZE")
        new_id = params.get("newClientOrderId") or f"amend{next(self._cancel_ids):020d}"
        if type(new_id) is not str or not _CLIENT_ID.fullmatch(new_id):
            raise _bad_param("newClientOrderId")
        base, quote = split_symbol(order.symbol)
        if order.locked:  # what the order holds back shrinks with it
            release = (order.qty - qty) * (order.price if order.side == "BUY" else Decimal(1))
            bal = acc.balance(quote if order.side == "BUY" else base)
            bal[0] += release
            bal[1] -= release
            order.locked -= release
        original, order.client_id = order.client_id, new_id
        order.qty = qty
        order.update_time = self._clock()
        if order.executed >= order.qty:
            order.status, order.working = "FILLED", False
        self._execution(order, "REPLACED")
        self._position(acc, (base, quote))
        report = order.report()
        report["origClientOrderId"], report["qty"] = original, report.pop("origQty")
        return {"transactTime": order.update_time, "executionId": next(self._trade_ids), "amendedOrder": report}

    # --- matching -----------------------------------------------------------------------------------------

    # --- the account stream --------------------------------------------------------------------------------

    def _execution(self, order: SimOrder, exec_type: str, *, fill: SimFill | None = None, expiry: str = "",
                   cancel_id: str = "") -> None:
        now = self._clock()
        ev: dict[str, Any] = {
            "e": "executionReport", "E": now, "s": order.symbol, "c": cancel_id or order.client_id,
            "S": order.side, "o": order.type, "f": order.tif, "q": fixed8(order.qty), "p": fixed8(order.price),
            "P": fixed8(Decimal(0)), "F": fixed8(Decimal(0)), "g": -1, "C": order.client_id if cancel_id else "",
            "x": exec_type, "X": order.status, "r": "NONE", "i": order.order_id,
            "l": fixed8(fill.qty if fill else Decimal(0)), "z": fixed8(order.executed),
            "L": fixed8(fill.price if fill else Decimal(0)), "n": fixed8(fill.commission) if fill else "0",
            "N": fill.asset if fill else None, "T": now, "t": fill.trade_id if fill else -1,
            "I": next(self._trade_ids), "w": order.working, "m": bool(fill and fill.is_maker), "M": False,
            "O": order.time, "Z": fixed8(order.quote),
            "Y": fixed8(fill.price * fill.qty if fill else Decimal(0)), "Q": fixed8(Decimal(0)),
            "V": "NONE",
        }
        if order.working:
            ev["W"] = order.time
        if expiry:
            ev["eR"] = expiry
        self._publish(order.account, ev)

    def _position(self, account: SimAccount, assets: Iterable[str]) -> None:
        now = self._clock()
        self._publish(account, {"e": "outboundAccountPosition", "E": now, "u": now, "B": [
            {"a": a, "f": fixed8(account.balance(a)[0]), "l": fixed8(account.balance(a)[1])} for a in assets]})

    def _publish(self, account: SimAccount, event: dict[str, Any]) -> None:
        faults = self.faults
        for session in self.sessions:
            if not session.conn.open:
                continue
            for sid, acc in session.subscriptions.items():
                if acc is not account:
                    continue
                if faults.drop_events > 0:
                    faults.drop_events -= 1
                    log.info("sim binance ws-api: dropped a %s event (simulated)", event["e"])
                    continue
                text = orjson.dumps({"subscriptionId": sid, "event": event}).decode()
                if faults.holding:
                    faults.held.append((session, text))
                else:
                    session.conn.push(text)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decimal(params: Mapping[str, Any], name: str) -> Decimal:
    raw = params.get(name)
    if type(raw) is not str:
        raise _bad_param(name)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _Refusal(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite() or "e" in raw.lower():
        raise _Refusal(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value
