"""Bybit v5's private APIs as the simulator serves them: the trade WebSocket, the private stream, signed REST.

The wire format is Bybit's v5 docs (quoted in ``order-entry-protocols.md``, section 3):

* ``/v5/trade``: ``{"op": "auth", "args": [key, expires, signature]}`` with the
  signature ``hex(HMAC_SHA256(secret, "GET/realtime" + expires))`` (wrong:
  retCode ``10004``, unknown key: ``10003``, expired: ``10001``), then
  ``order.create`` / ``order.amend`` / ``order.cancel`` with ``reqId`` and
  ``header.X-BAPI-TIMESTAMP`` (outside ``X-BAPI-RECV-WINDOW``: ``10002``),
  answered with ``retCode``/``retMsg``/``data`` and the rate-limit ``header``
  (``X-Bapi-Limit``, ``X-Bapi-Limit-Status``, ``X-Bapi-Limit-Reset-Timestamp``;
  over the limit: ``10006``); ``{"op": "ping"}`` → ``pong``;
* ``/v5/private``: the same ``op: auth`` (answered ``success``/``ret_msg``),
  ``op: subscribe`` to ``order``, ``execution``, ``position``, ``wallet``;
* REST ``GET /v5/order/realtime``, ``/v5/execution/list``,
  ``/v5/account/wallet-balance``, ``/v5/position/list``,
  ``/v5/market/instruments-info``: signed with ``X-BAPI-API-KEY``,
  ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW`` and ``X-BAPI-SIGN`` =
  ``hex(HMAC_SHA256(secret, timestamp + key + recv_window + queryString))``.

Orders match in the shared engine (``_matching``) against the simulator's Bybit
book, in two categories over the same symbols and book:

* ``spot``: coins change hands; market orders are taken in the base coin
  (``marketUnit=baseCoin``);
* ``linear`` (USDT perpetuals, one-way mode, ``positionIdx`` 0): each fill moves
  the account's position in the symbol (average entry price, as Bybit keeps
  it), its fee and the PnL it realizes are paid in the settle coin (the quote);
  there is no margin model beyond refusing (110007) an order that grows the
  position past ``LEVERAGE`` times the free settle coin, and no funding or
  liquidation. Every change of a linear order is followed by a ``position``
  push, as Bybit's docs say ("regardless if there's any actual change"), and
  ``/v5/position/list`` lists the positions.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import attrs
import orjson
from trio_websocket import WebSocketRequest

from ._binance import split_symbol
from ._connection import Limits, SimConnection
from ._market import SymbolSpec
from ._matching import MatchingEngine, SimAccount, SimFill, SimOrder, cost, fixed8

if TYPE_CHECKING:
    from ._bybit import BybitVenue
    from ._transport import HttpResponse, _SimStream

log = logging.getLogger("flox_trio.sim")

TRADE_ROUTE = "/v5/trade"
PRIVATE_ROUTE = "/v5/private"
#: The REST paths this module answers.
REST_PATHS = frozenset({"/v5/order/realtime", "/v5/execution/list", "/v5/account/wallet-balance",
                        "/v5/position/list", "/v5/market/instruments-info"})
_TOPICS = frozenset({"order", "execution", "position", "wallet"})
_STATUS = {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled", "CANCELED": "Cancelled",
           "EXPIRED": "Cancelled", "REJECTED": "Rejected"}
_CATEGORIES = frozenset({"spot", "linear"})
#: linear: how many times its free settle coin an account's orders may grow a position to.
LEVERAGE = Decimal(10)
_AUTH_MSG = {10001: "Params Error", 10002: "The request time exceeds the time window range.",
             10003: "API key is invalid.", 10004: "Error sign, please check your signature generation algorithm."}


def _num(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


class BybitFaults:
    """What the Bybit private side is asked to get wrong; each ``take_*`` consumes one."""

    def __init__(self, private: BybitPrivate) -> None:
        self._private = private
        self._rejects: deque[tuple[str, int, str]] = deque()
        self._drops: deque[str] = deque()
        self._delays: deque[tuple[str, float]] = deque()
        #: Private-stream messages still to be dropped (never delivered).
        self.drop_events = 0

    def reject(self, op: str = "order.create", code: int = 170131, msg: str = "Balance insufficient",
               times: int = 1) -> None:
        """Refuse the next ``times`` ``op`` requests with ``code``."""
        self._rejects.extend([(op, code, msg)] * times)

    def drop_after_request(self, op: str = "order.create", times: int = 1) -> None:
        """Carry out the next ``times`` ``op`` requests, then cut the trade connection before the answer."""
        self._drops.extend([op] * times)

    def delay_answer(self, op: str = "order.create", seconds: float = 5.0, times: int = 1) -> None:
        """Carry out the next ``times`` ``op`` requests at once, but answer each ``seconds`` later."""
        self._delays.extend([(op, seconds)] * times)

    def drop_private_events(self, count: int = 1) -> None:
        self.drop_events += count

    def disconnect_private(self) -> int:
        """Cut every private-stream connection now (no close frame, nothing queued is sent)."""
        conns = [c for c, _ in self._private.private_sessions if c.open]
        for c in conns:
            c.abort("disconnected (simulated)")
        return len(conns)

    def disconnect_trade(self) -> int:
        conns = [c for c, _ in self._private.trade_sessions if c.open]
        for c in conns:
            c.abort("disconnected (simulated)")
        return len(conns)

    def take_reject(self, op: str) -> tuple[int, str] | None:
        if self._rejects and self._rejects[0][0] == op:
            _, code, msg = self._rejects.popleft()
            return code, msg
        return None

    def take_delay(self, op: str) -> float:
        if self._delays and self._delays[0][0] == op:
            return self._delays.popleft()[1]
        return 0.0

    def take_drop(self, op: str) -> bool:
        if self._drops and self._drops[0] == op:
            self._drops.popleft()
            return True
        return False


class _Refusal(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


@attrs.define(eq=False)
class SimPosition:
    """One account's position in one linear contract (one-way mode), at its average entry price."""

    symbol: str
    #: Signed: long > 0, short < 0.
    size: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    #: Realized PnL, fees in: of the current holding (from zero to zero), and of all time.
    cur_realised: Decimal = Decimal(0)
    cum_realised: Decimal = Decimal(0)
    #: The trade id of the last fill that moved it, as Bybit's ``seq`` ties fills and position updates (-1: none).
    seq: int = -1
    created: int = 0
    updated: int = 0

    def trade(self, signed: Decimal, price: Decimal) -> Decimal:
        """Take a fill of ``signed`` quantity at ``price``; the PnL it realizes (before the fee)."""
        if not self.size:
            self.cur_realised = Decimal(0)
        if not self.size or (self.size > 0) == (signed > 0):
            held = abs(self.size)
            self.entry = Decimal(fixed8((self.entry * held + price * abs(signed)) / (held + abs(signed))))
            self.size += signed
            return Decimal(0)
        closed = min(abs(signed), abs(self.size))
        pnl = (price - self.entry) * closed * (1 if self.size > 0 else -1)
        was_long = self.size > 0
        self.size += signed
        if not self.size:
            self.entry = Decimal(0)
        elif (self.size > 0) != was_long:  # through zero: the rest opens at this price
            self.entry = price
        return pnl


@attrs.define(eq=False)
class _Conn:
    account: SimAccount | None = None
    topics: set[str] = attrs.field(factory=set)


class BybitPrivate(MatchingEngine):
    """Accounts, orders, positions and private streams of the simulated Bybit v5 (spot and linear)."""

    def __init__(self, venue: BybitVenue, specs: Iterable[SymbolSpec], clock: Any, limits: Limits, *,
                 orders_per_second: int = 20, recv_window_max: int = 60_000) -> None:
        self._venue = venue
        self._specs = {s.symbol: s for s in specs}
        self._clock = clock
        self._limits = limits
        self.orders_per_second = orders_per_second
        self.recv_window_max = recv_window_max
        self.accounts: dict[str, SimAccount] = {}
        self.orders: dict[int, SimOrder] = {}
        self.fills: list[SimFill] = []
        #: linear positions: (api key, symbol) → position.
        self.positions: dict[tuple[str, str], SimPosition] = {}
        self.faults = BybitFaults(self)
        self.trade_sessions: list[tuple[SimConnection, _Conn]] = []
        self.private_sessions: list[tuple[SimConnection, _Conn]] = []
        #: Every request: (channel "trade" | "private" | "rest", op or path, retCode).
        self.requests: list[tuple[str, str, int]] = []
        self._order_ids = itertools.count(1_800_000_000)
        self._trade_ids = itertools.count(2_100_000_000)
        self._msg_ids = itertools.count(1)
        self._rate: dict[str, tuple[int, int]] = {}  # api key → (second, orders)

    # --- accounts ------------------------------------------------------------------------------

    def add_account(self, api_key: str, *, secret: str, balances: Mapping[str, Any] | None = None,
                    maker_fee: Any = "0.001", taker_fee: Any = "0.001") -> SimAccount:
        account = SimAccount(api_key, "hmac", secret=secret.encode())
        account.maker_fee, account.taker_fee = Decimal(str(maker_fee)), Decimal(str(taker_fee))
        for asset, amount in (balances or {}).items():
            account.balance(asset)[0] = Decimal(str(amount))
        self.accounts[api_key] = account
        return account

    def open_orders_of(self, api_key: str) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.open and o.account.api_key == api_key]

    def position_of(self, api_key: str, symbol: str) -> SimPosition:
        """The account's linear position in ``symbol`` (a flat one if it never traded it)."""
        pos = self.positions.get((api_key, symbol))
        if pos is None:
            pos = self.positions[(api_key, symbol)] = SimPosition(symbol)
        return pos

    # --- WebSockets ------------------------------------------------------------------------------

    async def serve(self, request: WebSocketRequest, stream: _SimStream) -> None:
        route = urlsplit(request.path).path
        ws = await request.accept()
        conn = SimConnection("bybit", request.path, ws, stream, self._limits)
        state = _Conn()
        trade = route == TRADE_ROUTE
        (self.trade_sessions if trade else self.private_sessions).append((conn, state))
        log.info("sim bybit %s connection %d open", "trade" if trade else "private", conn.id)
        handler = self._on_trade if trade else self._on_private
        await conn.run(lambda c, text: handler(c, state, text), lambda c: None, lambda c: state.topics.clear())

    def _auth(self, args: Any) -> SimAccount:
        if type(args) is not list or len(args) != 3 or type(args[0]) is not str or type(args[2]) is not str:
            raise _Refusal(10001, _AUTH_MSG[10001])
        key, expires, signature = args
        account = self.accounts.get(key)
        if account is None:
            raise _Refusal(10003, _AUTH_MSG[10003])
        if type(expires) is not int or expires <= self._clock():
            raise _Refusal(10001, "Params Error: expires is in the past")
        if not account.verify(f"GET/realtime{expires}", signature):
            raise _Refusal(10004, _AUTH_MSG[10004])
        return account

    def _on_private(self, conn: SimConnection, state: _Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        op = msg.get("op") if type(msg) is dict else None
        base = {"req_id": msg.get("req_id", "")} if type(msg) is dict and "req_id" in msg else {}
        conn_id = f"sim-private-{conn.id}"
        if op == "ping":
            conn.push(orjson.dumps({**base, "op": "pong", "args": [str(self._clock())], "conn_id": conn_id}).decode())
        elif op == "auth":
            try:
                state.account = self._auth(msg.get("args"))
                ok, why = True, ""
            except _Refusal as r:
                ok, why = False, f"{r.msg} (retCode {r.code})"
            self.requests.append(("private", "auth", 0 if ok else 10004))
            conn.push(orjson.dumps({**base, "success": ok, "ret_msg": why, "op": "auth", "conn_id": conn_id}).decode())
        elif op == "subscribe":
            topics = msg.get("args")
            ok = state.account is not None and type(topics) is list and all(t in _TOPICS for t in topics)
            if ok:
                state.topics.update(topics)
            why = "" if ok else ("Request not authorized" if state.account is None else "invalid topic")
            conn.push(orjson.dumps({**base, "success": ok, "ret_msg": why, "op": "subscribe",
                                    "conn_id": conn_id}).decode())

    def _on_trade(self, conn: SimConnection, state: _Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if type(msg) is not dict:
            return
        op = str(msg.get("op", ""))
        conn_id = f"sim-trade-{conn.id}"
        base: dict[str, Any] = {"reqId": msg["reqId"]} if "reqId" in msg else {}
        if op == "ping":
            conn.push(orjson.dumps({"retCode": 0, "retMsg": "OK", "op": "pong", "data": [str(self._clock())],
                                    "connId": conn_id}).decode())
            return
        if op == "auth":
            code, why = 0, "OK"
            if state.account is not None:
                code, why = 20001, "Repeat auth"
            else:
                try:
                    state.account = self._auth(msg.get("args"))
                except _Refusal as r:
                    code, why = r.code, r.msg
            self.requests.append(("trade", "auth", code))
            conn.push(orjson.dumps({**base, "retCode": code, "retMsg": why, "op": "auth",
                                    "connId": conn_id}).decode())
            return
        now = self._clock()
        data: Any = {}
        limit_status = 0
        try:
            account = state.account
            if account is None:
                raise _Refusal(10003, "Request not authorized: op auth first")
            if op not in ("order.create", "order.amend", "order.cancel"):
                raise _Refusal(10404, f"op type is not found: {op}")
            header = msg.get("header")
            if type(header) is not dict or "X-BAPI-TIMESTAMP" not in header:
                raise _Refusal(10001, "header X-BAPI-TIMESTAMP is missing")
            ts, window = int(header["X-BAPI-TIMESTAMP"]), int(header.get("X-BAPI-RECV-WINDOW", 5000))
            if not (now - min(window, self.recv_window_max) <= ts < now + 1000):
                raise _Refusal(10002, _AUTH_MSG[10002])
            second, used = self._rate.get(account.api_key, (-1, 0))
            if second != now // 1000:
                second, used = now // 1000, 0
            if used >= self.orders_per_second:
                raise _Refusal(10006, "Too many visits!")
            self._rate[account.api_key] = (second, used + 1)
            limit_status = self.orders_per_second - used - 1
            args = msg.get("args")
            if type(args) is not list or len(args) != 1 or type(args[0]) is not dict:
                raise _Refusal(10001, "args must hold one order")
            refusal = self.faults.take_reject(op)
            if refusal is not None:
                raise _Refusal(*refusal)
            data = self._create(account, args[0]) if op == "order.create" else \
                self._cancel(account, args[0]) if op == "order.cancel" else self._amend(account, args[0])
            code, why = 0, "OK"
        except _Refusal as r:
            code, why = r.code, r.msg
        self.requests.append(("trade", op, code))
        if self.faults.take_drop(op):
            conn.abort("dropped after the request (simulated)")
            return
        reset = now if limit_status > 0 else (now // 1000 + 1) * 1000
        answer = orjson.dumps({
            **base, "retCode": code, "retMsg": why, "op": op, "data": data, "retExtInfo": {},
            "header": {"X-Bapi-Limit": str(self.orders_per_second), "X-Bapi-Limit-Status": str(limit_status),
                       "X-Bapi-Limit-Reset-Timestamp": str(reset), "Traceid": f"sim{next(self._msg_ids)}",
                       "Timenow": str(now)},
            "connId": conn_id}).decode()
        delay = self.faults.take_delay(op)
        if delay:
            conn.push_later(delay, answer)
        else:
            conn.push(answer)

    # --- order entry -------------------------------------------------------------------------------

    def _create(self, acc: SimAccount, a: dict[str, Any]) -> dict[str, Any]:
        category = a.get("category")
        if category not in _CATEGORIES:
            raise _Refusal(10404, "category is not correct/supported (the simulator trades spot and linear)")
        symbol = a.get("symbol")
        spec = self._specs.get(symbol) if type(symbol) is str else None
        if spec is None or type(symbol) is not str:
            raise _Refusal(170121, "Invalid symbol.")
        side, otype = a.get("side"), a.get("orderType")
        if side not in ("Buy", "Sell") or otype not in ("Limit", "Market"):
            raise _Refusal(10001, "Request parameter error: side or orderType")
        qty = _decimal(a, "qty")
        tick, lot = Decimal(repr(spec.tick)), Decimal(repr(spec.lot))
        price = Decimal(0)
        tif = str(a.get("timeInForce") or ("GTC" if otype == "Limit" else "IOC"))
        if otype == "Limit":
            price = _decimal(a, "price")
            if price <= 0 or price % tick:
                raise _Refusal(170134, "Order price decimal too long.")
            if tif not in ("GTC", "IOC"):
                raise _Refusal(10001, "Request parameter error: timeInForce")
        elif category == "spot" and a.get("marketUnit") != "baseCoin":
            raise _Refusal(10001, "Request parameter error: the simulator takes market orders in marketUnit=baseCoin")
        if qty <= 0 or qty % lot:
            raise _Refusal(170137, "Order volume decimal too long")
        link = a.get("orderLinkId") or f"sim{next(self._msg_ids)}"
        if type(link) is not str or len(link) > 36:
            raise _Refusal(10001, "Request parameter error: orderLinkId")
        if any(o.account is acc and o.client_id == link for o in self.orders.values()):
            raise _Refusal(170141, "Duplicate clientOrderId")
        base, quote = split_symbol(symbol)
        bside: Literal["BUY", "SELL"] = "BUY" if side == "Buy" else "SELL"
        levels = self._levels(symbol, bside)
        reference = price if otype == "Limit" else (levels[0][0] if levels else None)
        if reference is None:
            raise _Refusal(170143, "Cannot be found on order book")
        if reference * qty < Decimal(5):
            raise _Refusal(170140, "Order value exceeded lower limit")
        if category == "linear":
            held = self.position_of(acc.api_key, symbol).size
            grows = held == 0 or (held > 0) == (bside == "BUY") or qty > abs(held)
            if grows and acc.balance(quote)[0] * LEVERAGE < reference * qty:
                raise _Refusal(110007, "ab not enough for new order")
        elif bside == "BUY":
            if acc.balance(quote)[0] < (price * qty if otype == "Limit" else cost(levels, qty)):
                raise _Refusal(170131, "Balance insufficient")
        elif acc.balance(base)[0] < qty:
            raise _Refusal(170131, "Balance insufficient")
        now = self._clock()
        order = SimOrder(acc, symbol, next(self._order_ids), link, bside, "LIMIT" if otype == "Limit" else "MARKET",
                         tif, price, qty, now, update_time=now, category=category)
        if otype == "Limit" and category == "spot":
            order.locked = price * qty if bside == "BUY" else qty
            bal = acc.balance(quote if bside == "BUY" else base)
            bal[0] -= order.locked
            bal[1] += order.locked
        self.orders[order.order_id] = order
        self._execution(order, "NEW")
        self._take(order, levels)
        if order.open and (otype == "Market" or tif == "IOC"):
            self._finish(order, "EXPIRED")
        elif order.open:
            order.working = True
        return {"orderId": str(order.order_id), "orderLinkId": link}

    def _find(self, acc: SimAccount, a: Mapping[str, Any]) -> SimOrder | None:
        oid, link = a.get("orderId"), a.get("orderLinkId")
        for order in reversed(list(self.orders.values())):
            if order.account is acc and ((oid and str(order.order_id) == oid) or
                                         (not oid and link and order.client_id == link)):
                return order
        return None

    def _cancel(self, acc: SimAccount, a: dict[str, Any]) -> dict[str, Any]:
        order = self._find(acc, a)
        if order is None:
            raise _Refusal(170213, "Order does not exist.")
        if order.status == "FILLED":
            raise _Refusal(170139, "Order has been filled.")
        if not order.open:
            raise _Refusal(170142, "Order has been cancelled")
        self._finish(order, "CANCELED")
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    def _amend(self, acc: SimAccount, a: dict[str, Any]) -> dict[str, Any]:
        """Change a resting limit order's price and/or total qty; a new price or a larger qty loses its place."""
        order = self._find(acc, a)
        if order is None or not order.open:
            raise _Refusal(170213, "Order does not exist.")
        if order.type != "LIMIT":
            raise _Refusal(10001, "Request parameter error: only a limit order can be amended")
        spec = self._specs[order.symbol]
        tick, lot = Decimal(repr(spec.tick)), Decimal(repr(spec.lot))
        price = _decimal(a, "price") if a.get("price") not in (None, "") else order.price
        qty = _decimal(a, "qty") if a.get("qty") not in (None, "") else order.qty
        if price <= 0 or price % tick:
            raise _Refusal(170134, "Order price decimal too long.")
        if qty % lot:
            raise _Refusal(170137, "Order volume decimal too long")
        if qty <= order.executed:
            raise _Refusal(170136, "Order quantity lower than the minimum.")
        base, quote = split_symbol(order.symbol)
        if order.category == "spot":
            # What the order holds back is what its remaining quantity could spend.
            lock = price * (qty - order.executed) if order.side == "BUY" else qty - order.executed
            bal = acc.balance(quote if order.side == "BUY" else base)
            if lock - order.locked > bal[0]:
                raise _Refusal(170131, "Balance insufficient")
            bal[0] -= lock - order.locked
            bal[1] += lock - order.locked
            order.locked = lock
        requeue = price != order.price or qty > order.qty
        order.price, order.qty = price, qty
        order.update_time = self._clock()
        if requeue:  # to the back of the queue at its price, as print_trade takes them oldest first
            del self.orders[order.order_id]
            self.orders[order.order_id] = order
        self._execution(order, "NEW")
        self._take(order, self._levels(order.symbol, order.side))
        self._position(acc, (base, quote))
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    # --- the private stream -------------------------------------------------------------------------

    def order_row(self, order: SimOrder) -> dict[str, Any]:
        """An order as the ``order`` topic and ``/v5/order/realtime`` list it."""
        status = _STATUS[order.status]
        spot = order.category == "spot"
        if order.status in ("CANCELED", "EXPIRED") and order.executed and spot:
            status = "PartiallyFilledCanceled"  # spot only: a derivative's Cancelled may have executed qty
        avg = order.quote / order.executed if order.executed else None
        return {
            "category": order.category, "orderId": str(order.order_id), "orderLinkId": order.client_id,
            "isLeverage": "0" if spot else "",
            "blockTradeId": "", "symbol": order.symbol, "price": _num(order.price), "qty": _num(order.qty),
            "side": "Buy" if order.side == "BUY" else "Sell", "positionIdx": 0, "orderStatus": status,
            "cancelType": "CancelByUser" if order.status == "CANCELED" else "UNKNOWN", "rejectReason": "EC_NoError",
            "avgPrice": _num(avg) if avg is not None else "", "leavesQty": _num(order.qty - order.executed)
            if order.open else "0", "leavesValue": "0", "cumExecQty": _num(order.executed),
            "cumExecValue": _num(order.quote), "cumExecFee": "0", "timeInForce": order.tif,
            "orderType": "Limit" if order.type == "LIMIT" else "Market", "stopOrderType": "",
            "marketUnit": "baseCoin" if order.type == "MARKET" and spot else "", "triggerPrice": "0",
            "createdTime": str(order.time), "updatedTime": str(order.update_time),
        }

    def exec_row(self, fill: SimFill) -> dict[str, Any]:
        """A fill as the ``execution`` topic and ``/v5/execution/list`` list it."""
        order = self.orders[fill.order_id]
        return {
            "category": order.category, "symbol": fill.symbol, "isLeverage": "0" if order.category == "spot" else "",
            "orderId": str(fill.order_id),
            "orderLinkId": order.client_id, "side": "Buy" if fill.is_buyer else "Sell",
            "orderPrice": _num(order.price), "orderQty": _num(order.qty), "leavesQty": _num(order.qty - order.executed),
            "orderType": "Limit" if order.type == "LIMIT" else "Market", "stopOrderType": "",
            "execFee": _num(fill.commission), "feeCurrency": fill.asset, "execId": str(fill.trade_id),
            "execPrice": _num(fill.price), "execQty": _num(fill.qty), "execType": "Trade",
            "execValue": _num(fill.price * fill.qty), "execTime": str(fill.time), "isMaker": fill.is_maker,
            "feeRate": _num(order.account.maker_fee if fill.is_maker else order.account.taker_fee),
            "markPrice": "", "blockTradeId": "", "closedSize": "", "seq": fill.trade_id,
        }

    def _wallet(self, account: SimAccount) -> dict[str, Any]:
        return {"accountType": "UNIFIED", "totalEquity": "", "totalWalletBalance": "", "coin": [
            {"coin": a, "walletBalance": _num(f + lk), "locked": _num(lk), "equity": _num(f + lk),
             "availableToWithdraw": _num(f), "spotBorrow": "0"}
            for a, (f, lk) in sorted(account.balances.items())]}

    def _execution(self, order: SimOrder, exec_type: str, *, fill: SimFill | None = None, expiry: str = "",
                   cancel_id: str = "") -> None:
        if fill is not None:
            self._publish(order.account, "execution", [self.exec_row(fill)])
        self._publish(order.account, "order", [self.order_row(order)])
        if order.category == "linear":
            pos = self.position_of(order.account.api_key, order.symbol)
            if fill is not None:
                pos.seq = fill.trade_id
            self._publish(order.account, "position", [self.position_row(pos)])

    def _settle_trade(self, order: SimOrder, price: Decimal, qty: Decimal, maker: bool) -> tuple[Decimal, str]:
        if order.category != "linear":
            return super()._settle_trade(order, price, qty, maker)
        acc = order.account
        settle = split_symbol(order.symbol)[1]
        commission = (price * qty * (acc.maker_fee if maker else acc.taker_fee)).quantize(Decimal("0.00000001"))
        pos = self.position_of(acc.api_key, order.symbol)
        now = self._clock()
        pos.created = pos.created or now
        pos.updated = now
        pnl = pos.trade(qty if order.side == "BUY" else -qty, price)
        pos.cur_realised += pnl - commission
        pos.cum_realised += pnl - commission
        acc.balance(settle)[0] += pnl - commission
        return commission, settle

    def position_row(self, pos: SimPosition) -> dict[str, Any]:
        """A linear position as the ``position`` topic and ``/v5/position/list`` list it."""
        mark = self._mark(pos.symbol)
        value = abs(pos.size) * pos.entry
        return {
            "category": "linear", "symbol": pos.symbol, "side": "" if not pos.size else "Buy" if pos.size > 0
            else "Sell", "size": _num(abs(pos.size)), "positionIdx": 0, "tradeMode": 0, "riskId": 1,
            "riskLimitValue": "2000000", "positionValue": _num(value), "entryPrice": _num(pos.entry),
            "avgPrice": _num(pos.entry), "markPrice": _num(mark) if mark is not None else "",
            "leverage": _num(LEVERAGE), "positionIM": _num(value / LEVERAGE), "positionMM": "0",
            "takeProfit": "0", "stopLoss": "0", "trailingStop": "0",
            "unrealisedPnl": _num((mark - pos.entry) * pos.size) if mark is not None and pos.size else "0",
            "curRealisedPnl": _num(pos.cur_realised), "cumRealisedPnl": _num(pos.cum_realised),
            "sessionAvgPrice": "", "liqPrice": "", "bustPrice": "", "positionStatus": "Normal",
            "autoAddMargin": 0, "adlRankIndicator": 0, "isReduceOnly": False, "seq": pos.seq,
            "createdTime": str(pos.created), "updatedTime": str(pos.updated),
        }

    def _mark(self, symbol: str) -> Decimal | None:
        """The middle of the simulator's book (the simulator has no separate mark price)."""
        bids, asks = self._levels(symbol, "SELL"), self._levels(symbol, "BUY")
        if not bids or not asks:
            return None
        return (bids[0][0] + asks[0][0]) / 2

    def _position(self, account: SimAccount, assets: Iterable[str]) -> None:
        self._publish(account, "wallet", [self._wallet(account)])

    def _publish(self, account: SimAccount, topic: str, data: list[dict[str, Any]]) -> None:
        text = ""
        for conn, state in self.private_sessions:
            if not conn.open or state.account is not account or topic not in state.topics:
                continue
            if self.faults.drop_events > 0:
                self.faults.drop_events -= 1
                log.info("sim bybit private: dropped a %s message (simulated)", topic)
                continue
            if not text:
                text = orjson.dumps({"id": f"sim{next(self._msg_ids)}", "topic": topic,
                                     "creationTime": self._clock(), "data": data}).decode()
            conn.push(text)

    # --- REST ----------------------------------------------------------------------------------------

    async def rest(self, method: str, target: str, headers: Mapping[str, str]) -> HttpResponse:
        parts = urlsplit(target)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        now = self._clock()
        try:
            if method != "GET":
                raise _Refusal(10001, "the simulator answers GET only")
            if parts.path == "/v5/market/instruments-info":
                result: Any = self._instruments(params)
            else:
                account = self._rest_auth(headers, parts.query, now)
                result = self._rest_answer(account, parts.path, params)
            code, why = 0, "OK"
        except _Refusal as r:
            code, why, result = r.code, r.msg, {}
        self.requests.append(("rest", parts.path, code))
        body = orjson.dumps({"retCode": code, "retMsg": why, "result": result, "retExtInfo": {}, "time": now})
        return 200, body, [(b"x-bapi-limit", b"50"), (b"x-bapi-limit-status", b"49"),
                           (b"x-bapi-limit-reset-timestamp", str(now).encode())]

    def _rest_auth(self, headers: Mapping[str, str], query: str, now: int) -> SimAccount:
        key, sign, ts = headers.get("x-bapi-api-key"), headers.get("x-bapi-sign"), headers.get("x-bapi-timestamp")
        window = headers.get("x-bapi-recv-window", "5000")
        if not key or not sign or not ts:
            raise _Refusal(10003, "API key is invalid.")
        account = self.accounts.get(key)
        if account is None:
            raise _Refusal(10003, _AUTH_MSG[10003])
        try:
            ts_ms, window_ms = int(ts), int(window)
        except ValueError:
            raise _Refusal(10001, "Request parameter error: X-BAPI-TIMESTAMP") from None
        if not (now - min(window_ms, self.recv_window_max) <= ts_ms < now + 1000):
            raise _Refusal(10002, _AUTH_MSG[10002])
        if not account.verify(f"{ts}{key}{window}{query}", sign):
            raise _Refusal(10004, _AUTH_MSG[10004])
        return account

    def _rest_answer(self, acc: SimAccount, path: str, params: dict[str, str]) -> Any:
        if path == "/v5/account/wallet-balance":
            return {"list": [self._wallet(acc)]}
        category = params.get("category")
        if path == "/v5/position/list":
            return self._positions(acc, params)
        if category not in _CATEGORIES:
            raise _Refusal(10001, "Request parameter error: category")
        if path == "/v5/order/realtime":
            mine = [o for o in self.orders.values() if o.account is acc and o.category == category]
            if params.get("orderId") or params.get("orderLinkId"):
                mine = [o for o in mine if str(o.order_id) == params.get("orderId")
                        or o.client_id == params.get("orderLinkId")]
            elif params.get("openOnly", "0") == "0":
                mine = [o for o in mine if o.open]
            if params.get("symbol"):
                mine = [o for o in mine if o.symbol == params["symbol"]]
            mine.sort(key=lambda o: o.time, reverse=True)
            return {"category": category, "list": [self.order_row(o) for o in mine[:50]], "nextPageCursor": ""}
        if path == "/v5/execution/list":
            fills = [f for f in self.fills if self.orders[f.order_id].account is acc
                     and self.orders[f.order_id].category == category]
            for name, pick in (("symbol", lambda f: f.symbol), ("orderId", lambda f: str(f.order_id)),
                               ("orderLinkId", lambda f: self.orders[f.order_id].client_id)):
                if params.get(name):
                    fills = [f for f in fills if pick(f) == params[name]]
            if params.get("startTime"):
                fills = [f for f in fills if f.time >= int(params["startTime"])]
            limit = min(100, int(params.get("limit", "50")))
            rows = sorted(fills, key=lambda f: (f.time, f.trade_id), reverse=True)
            offset = int(params.get("cursor") or 0)
            page = rows[offset:offset + limit]
            more = offset + limit < len(rows)
            return {"category": category, "list": [self.exec_row(f) for f in page],
                    "nextPageCursor": str(offset + limit) if more else ""}
        raise _Refusal(10017, "Route not found.")

    def _positions(self, acc: SimAccount, params: dict[str, str]) -> Any:
        """``/v5/position/list``: a symbol's position whatever its size, or the open ones of a settle coin."""
        if params.get("category") != "linear":
            raise _Refusal(10001, "Request parameter error: the simulator's positions are linear")
        symbol, settle = params.get("symbol"), params.get("settleCoin")
        if symbol:
            if symbol not in self._specs:
                raise _Refusal(10001, "params error: symbol invalid")
            rows = [self.position_of(acc.api_key, symbol)]
        elif settle:
            rows = [p for (key, sym), p in sorted(self.positions.items())
                    if key == acc.api_key and p.size and split_symbol(sym)[1] == settle]
        else:
            raise _Refusal(10001, "params error: symbol or settleCoin is required")
        return {"category": "linear", "list": [self.position_row(p) for p in rows], "nextPageCursor": ""}

    def _instruments(self, params: dict[str, str]) -> Any:
        category = params.get("category", "spot")
        if category not in _CATEGORIES:
            raise _Refusal(10001, "Request parameter error: category")
        rows = []
        for spec in self._specs.values():
            if params.get("symbol") and spec.symbol != params["symbol"]:
                continue
            base, quote = split_symbol(spec.symbol)
            lot, tick = _num(Decimal(repr(spec.lot))), _num(Decimal(repr(spec.tick)))
            if category == "spot":
                rows.append({"symbol": spec.symbol, "baseCoin": base, "quoteCoin": quote, "status": "Trading",
                             "lotSizeFilter": {"basePrecision": lot, "quotePrecision": "0.00000001",
                                               "minOrderQty": lot, "maxOrderQty": "1000000", "minOrderAmt": "5",
                                               "maxOrderAmt": "100000000"},
                             "priceFilter": {"tickSize": tick}})
            else:
                rows.append({"symbol": spec.symbol, "contractType": "LinearPerpetual", "status": "Trading",
                             "baseCoin": base, "quoteCoin": quote, "settleCoin": quote,
                             "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": lot, "qtyStep": lot,
                                               "postOnlyMaxOrderQty": "1000000", "maxMktOrderQty": "1000000",
                                               "minNotionalValue": "5"},
                             "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", "tickSize": tick}})
        return {"category": category, "list": rows, "nextPageCursor": ""}


def _decimal(a: Mapping[str, Any], name: str) -> Decimal:
    raw = a.get(name)
    if type(raw) is not str:
        raise _Refusal(10001, f"Request parameter error: {name}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _Refusal(170130, f"Data sent for paramter '{name}' is not valid.") from None
    if not value.is_finite() or "e" in raw.lower():
        raise _Refusal(170130, f"Data sent for paramter '{name}' is not valid.")
    return value
