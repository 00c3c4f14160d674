"""Orders to Binance Spot over its WebSocket API, fills from the account stream on the same connection.

One WebSocket API session at a time (``ws_api_url``): Ed25519 keys log the
session on (``session.logon``) and subscribe with ``userDataStream.subscribe``;
HMAC keys sign every request and subscribe with
``userDataStream.subscribe.signature``. Every request is signed over the
sorted ``name=value`` payload (``_signing``). Exchange filters come from REST
``exchangeInfo`` (``rest_url``), once per symbol, before its first order.

What the executor promises (PRODUCT.md section 8):

* the engine's order id goes out as ``newClientOrderId``, behind a prefix
  unique to this executor (``flx<run id>.<order id>``), so every venue order
  and fill maps back to its slot, across restarts too;
* ``accepted`` on the venue's acknowledgement (or its ``NEW`` report,
  whichever comes first), one ``Fill`` per venue trade from ``executionReport``
  (price, quantity, commission as exact Decimals; the commission's asset in
  ``fee_assets``), each exactly once: fills are keyed by venue trade id,
  statuses only move forward;
* a refusal is a ``rejected`` update whose reason names the venue's code (or the
  exchange filter, checked before sending); an unknown outcome (-1007, a
  dropped connection after sending, no answer) stays pending until the account
  stream or ``order.status`` settles it;
* every session starts with a reconciliation — open orders, trades since the
  last one seen (``myTrades``), balances — before queued intents are sent;
* rate limits from ``rateLimits`` are respected before sending; a 429 or 418
  pauses all sending until its ``retryAfter``;
* a wrong key, signature or timestamp ends ``run()`` within seconds with a
  ``BinanceAuthError`` naming the venue's error, never a silent retry loop;
  other failures reconnect with capped exponential backoff.

Secrets (the API key, the secret, the private key) appear nowhere: not in
logs, ``status()``, ``settings``, reprs or exception messages.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._core._events import Fill, OrderStatus, OrderType, Side
from .._core._money import ZERO
from .._core._orders import Order, Position, book_fill
from .._core._ports import Executor
from .._core._status import ExecutorSettings
from .._errors import ConfigError, FloxError, OrderError
from ._signing import Ed25519Signer, HmacSigner, KeyType, Signer
from ._venue import (
    CONNECT_ERRORS,
    AmendRequest,
    Fatal,
    IntentKind,
    VenueOrders,
    VenueStatus,
    check_max_age,
    new_run_id,
    parse_client_id,
)
from ._venue import Pending as _Pending
from ._venue import SessionLost as _SessionLost
from ._venue import dec as _dec
from ._venue import plain as _plain

log = logging.getLogger("flox_trio.execution.binance")

WS_API_URL = "wss://ws-api.binance.com:443/ws-api/v3"
REST_URL = "https://api.binance.com"
TESTNET_WS_API_URL = "wss://ws-api.testnet.binance.vision/ws-api/v3"
TESTNET_REST_URL = "https://testnet.binance.vision"

#: Binance cuts a WebSocket API connection at 24 hours: the executor moves to a new one before.
SESSION_MAX_AGE = 23.5 * 3600

#: Binance's client order id rule.
CLIENT_ID_RE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
#: Codes after which the outcome of a request is unknown (errors.md: "execution status unknown").
_UNKNOWN_CODES = frozenset({-1007, -1006})
#: Codes that mean the key, its signature or the clock is wrong: no retry helps.
_AUTH_CODES = {-1002: "UNAUTHORIZED", -1021: "INVALID_TIMESTAMP", -1022: "INVALID_SIGNATURE",
               -2014: "BAD_API_KEY_FMT", -2015: "REJECTED_MBX_KEY", -4056: "KEY_TYPE_NOT_SUPPORTED"}
_RANK: dict[OrderStatus, int] = {"new": 0, "accepted": 1, "partially_filled": 2, "filled": 3, "canceled": 3,
                                 "rejected": 3}
_UNIT_MS = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
#: Execution types after which an order is final.
_FINAL_EXECUTIONS = frozenset({"CANCELED", "EXPIRED", "REJECTED", "TRADE_PREVENTION"})
_WEIGHTS = {"order.place": 1, "order.cancel": 1, "order.amend.keepPriority": 4, "order.status": 4,
            "openOrders.status": 80, "account.status": 20, "myTrades": 5, "session.logon": 2, "userDataStream.subscribe": 2,
            "userDataStream.subscribe.signature": 2, "time": 1}


class BinanceAuthError(FloxError):
    """Binance refused the key, its signature or the request time: fix the configuration, retrying will not help."""


class _VenueError(Exception):
    def __init__(self, status: int, code: int, msg: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code} {msg}")
        self.status, self.code, self.msg, self.retry_after_ms = status, code, msg, retry_after_ms

    @property
    def unknown_outcome(self) -> bool:
        return self.code in _UNKNOWN_CODES or self.status >= 500

    def describe(self) -> str:
        name = _AUTH_CODES.get(self.code)
        return f"Binance error {self.code}{f' {name}' if name else ''}: {self.msg}"


# --- settings and status -------------------------------------------------------------------------


@attrs.frozen
class BinanceSettings(ExecutorSettings):
    """How a ``BinanceExecutor`` was configured. Never a secret: only where the key came from.

    (Field names avoid "key" and "secret": tapes refuse anything named like a credential.)
    """

    ws_api_url: str = WS_API_URL
    rest_url: str = REST_URL
    #: How requests are signed: "hmac" or "ed25519".
    signing: str = "hmac"
    #: Where the API key came from: "argument" or "env:NAME".
    account_from: str = "argument"
    #: Where the signing secret came from: "argument", "env:NAME" or "file:PATH" (an Ed25519 key file).
    signing_from: str = "argument"
    recv_window_ms: int = 5000


@attrs.frozen(kw_only=True)
class BinanceStatus(VenueStatus):
    settings: BinanceSettings


@attrs.frozen
class SymbolFilters:
    """One symbol's trading rules from ``exchangeInfo``."""

    symbol: str
    base: str
    quote: str
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    tick: Decimal = ZERO
    min_qty: Decimal = ZERO
    max_qty: Decimal = ZERO
    step: Decimal = ZERO
    market_min_qty: Decimal = ZERO
    market_max_qty: Decimal = ZERO
    market_step: Decimal = ZERO
    min_notional: Decimal = ZERO
    min_notional_market: bool = True

    @classmethod
    def parse(cls, info: Mapping[str, Any]) -> SymbolFilters:
        kw: dict[str, Any] = {}
        for f in info.get("filters", ()):
            kind = f.get("filterType")
            if kind == "PRICE_FILTER":
                kw.update(min_price=_dec(f["minPrice"]), max_price=_dec(f["maxPrice"]), tick=_dec(f["tickSize"]))
            elif kind == "LOT_SIZE":
                kw.update(min_qty=_dec(f["minQty"]), max_qty=_dec(f["maxQty"]), step=_dec(f["stepSize"]))
            elif kind == "MARKET_LOT_SIZE":
                kw.update(market_min_qty=_dec(f["minQty"]), market_max_qty=_dec(f["maxQty"]),
                          market_step=_dec(f["stepSize"]))
            elif kind == "NOTIONAL":
                kw.update(min_notional=_dec(f["minNotional"]), min_notional_market=bool(f.get("applyMinToMarket")))
            elif kind == "MIN_NOTIONAL":
                kw.update(min_notional=_dec(f["minNotional"]), min_notional_market=bool(f.get("applyToMarket")))
        return cls(info["symbol"], info.get("baseAsset", ""), info.get("quoteAsset", ""), **kw)

    def check(self, order: Order, mark: Decimal | None) -> str | None:
        """Why ``order`` breaks a filter (in words for the strategy), None if it passes."""
        qty = order.qty
        if order.order_type == "limit":
            price = order.price
            assert price is not None
            if price < self.min_price or (self.max_price and price > self.max_price):
                return (f"exchange filter PRICE_FILTER: price {_plain(price)} is outside "
                        f"[{_plain(self.min_price)}, {_plain(self.max_price)}] for {self.symbol}")
            if self.tick and (price - self.min_price) % self.tick:
                return (f"exchange filter PRICE_FILTER: price {_plain(price)} is not a multiple of the tick size "
                        f"{_plain(self.tick)} for {self.symbol}")
        market_lot = order.order_type == "market" and self.market_step > 0
        lo, hi, step, name = ((self.market_min_qty, self.market_max_qty, self.market_step, "MARKET_LOT_SIZE")
                              if market_lot else (self.min_qty, self.max_qty, self.step, "LOT_SIZE"))
        if qty < lo or (hi and qty > hi):
            return (f"exchange filter {name}: quantity {_plain(qty)} is outside [{_plain(lo)}, {_plain(hi)}] "
                    f"for {self.symbol}")
        if step and (qty - lo) % step:
            return (f"exchange filter {name}: quantity {_plain(qty)} is not a multiple of the step size "
                    f"{_plain(step)} for {self.symbol}")
        price = order.price if order.order_type == "limit" else mark
        if self.min_notional and price is not None and (order.order_type == "limit" or self.min_notional_market):
            notional = price * qty
            if notional < self.min_notional:
                return (f"exchange filter NOTIONAL: {_plain(qty)} x {_plain(price)} = {_plain(notional)} "
                        f"{self.quote} is below the minimum order value {_plain(self.min_notional)} for {self.symbol}")
        return None


# --- rate limits -----------------------------------------------------------------------------------------


_SKEW_MS = 250


class _RateLimits:
    """The venue's limits as its ``rateLimits`` report them, spent locally before each request.

    The venue counts in fixed windows on its own clock, which ours only
    estimates; so each limit is kept as a sliding window ``_SKEW_MS`` longer
    than the venue's: whatever its windows' alignment, no window of it can
    see more than the limit. A count the venue reports above ours (requests of
    an earlier session) is added as spent now.
    """

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        #: (type, interval ms) → limit
        self.limits: dict[tuple[str, int], int] = {}
        #: (type, interval ms) → (when, cost) of what was spent in the last interval + skew
        self._spent: dict[tuple[str, int], deque[tuple[int, int]]] = {}
        #: (type, interval ms) → the sum of the costs in ``_spent``: a day's ORDERS window holds
        #: every order of the day, too many to add up per request.
        self._total: dict[tuple[str, int], int] = {}
        self.paused_until_ms = 0

    def _used(self, key: tuple[str, int], now: int, span: int) -> int:
        log_ = self._spent.setdefault(key, deque())
        total = self._total.get(key, 0)
        while log_ and log_[0][0] <= now - span:
            total -= log_.popleft()[1]
        self._total[key] = total
        return total

    def _spend(self, key: tuple[str, int], now: int, cost: int) -> None:
        self._spent.setdefault(key, deque()).append((now, cost))
        self._total[key] = self._total.get(key, 0) + cost

    def observe(self, limits: Any) -> None:
        if type(limits) is not list:
            return
        now = self._now_ms()
        for rl in limits:
            try:
                kind, interval = str(rl["rateLimitType"]), _UNIT_MS[rl["interval"]] * int(rl["intervalNum"])
                limit, count = int(rl["limit"]), int(rl.get("count", 0))
            except (KeyError, TypeError, ValueError):
                continue
            if kind not in ("ORDERS", "REQUEST_WEIGHT"):
                continue
            key = (kind, interval)
            self.limits[key] = limit
            used = self._used(key, now, interval + _SKEW_MS)
            if count > used:
                self._spend(key, now, count - used)

    def pause_until(self, epoch_ms: int) -> None:
        self.paused_until_ms = max(self.paused_until_ms, epoch_ms)

    async def spend(self, weight: int, order: bool) -> None:
        while True:
            now = self._now_ms()
            wait = self.paused_until_ms + _SKEW_MS - now if self.paused_until_ms else 0
            for key, limit in self.limits.items():
                kind, interval = key
                if kind == "ORDERS" and not order:
                    continue
                cost = 1 if kind == "ORDERS" else weight
                span = interval + _SKEW_MS
                used = self._used(key, now, span)
                if used + cost > limit:
                    # Until enough of the oldest spending has left the window.
                    excess = used + cost - limit
                    for when, spent in self._spent[key]:
                        excess -= spent
                        if excess <= 0:
                            wait = max(wait, when + span - now + 1)
                            break
            if wait <= 0:
                break
            log.warning("Binance rate limit reached: holding requests for %.3f s", wait / 1000)
            await trio.sleep(wait / 1000)
        for key in self.limits:
            if key[0] == "REQUEST_WEIGHT":
                self._spend(key, now, weight)
            elif order:
                self._spend(key, now, 1)


# --- the executor -------------------------------------------------------------------------------------------


class BinanceExecutor(VenueOrders, Executor):
    """Binance Spot order entry and account stream over the WebSocket API (see the module docstring)."""

    connection_name = "Binance WebSocket API"

    def __init__(
        self,
        *,
        api_key: str,
        secret: str | None = None,
        private_key: str | os.PathLike[str] | None = None,
        private_key_password: bytes | None = None,
        ws_api_url: str = WS_API_URL,
        rest_url: str = REST_URL,
        recv_window_ms: int = 5000,
        symbols: tuple[str, ...] | list[str] = (),
        run_id: str | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        unknown_after: float = 1.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        history: int | None = 10_000,
        session_max_age: float = SESSION_MAX_AGE,
        api_key_from: str = "argument",
        secret_from: str | None = None,
    ) -> None:
        if not api_key or not isinstance(api_key, str):
            raise ConfigError("BinanceExecutor needs api_key (the key's name on Binance)")
        if (secret is None) == (private_key is None):
            raise ConfigError("BinanceExecutor needs exactly one of secret= (an HMAC key) or "
                              "private_key=PATH (an Ed25519 key file)")
        signer: Signer
        if private_key is not None:
            signer = Ed25519Signer.from_file(private_key, private_key_password)
            source = secret_from or f"file:{os.fspath(private_key)}"
        else:
            assert secret is not None
            signer = HmacSigner(secret)
            source = secret_from or "argument"
        if not 0 < recv_window_ms <= 60_000:
            raise ConfigError(f"recv_window_ms must be within (0, 60000], got {recv_window_ms!r}")
        if run_id is not None and not re.fullmatch(r"[0-9a-z]{10}", run_id):
            raise ConfigError(f"run_id must be 10 characters of [0-9a-z], got {run_id!r}")
        self._api_key = api_key
        self._signer = signer
        self.key_type: KeyType = signer.key_type
        self.ws_api_url = ws_api_url
        self.rest_url = rest_url.rstrip("/")
        self.recv_window_ms = recv_window_ms
        self.symbols = tuple(symbols)
        self.run_id = run_id or new_run_id()
        self.prefix = f"flx{self.run_id}."
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.session_max_age = check_max_age(session_max_age)
        #: Connections handed over to a fresh one (make-before-break: serverShutdown, the 24 h limit).
        self.handovers = 0
        self.unknown_after = unknown_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.history = history
        self._settings = BinanceSettings(ws_api_url, self.rest_url, self.key_type, api_key_from, source,
                                         recv_window_ms)
        # Orders: by engine id, the open ones, by client id and by venue id.
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}
        self._by_client: dict[str, Order] = {}
        self._client_of: dict[str, str] = {}
        self._venue_id: dict[str, int] = {}
        self._by_venue: dict[int, Order] = {}
        self._finished: deque[str] = deque()
        #: Sent (or maybe sent) to the venue: what reconciliation asks about.
        self._sent: set[str] = set()
        #: Engine id → why its outcome is unknown, and since when (Trio time).
        self._unknown: dict[str, tuple[str, float]] = {}
        self._amend_wanted = {}
        self._cancel_wanted: set[str] = set()
        self._positions: dict[tuple[int, str], Position] = {}
        self._seen: set[tuple[str, int]] = set()
        self._seen_order: deque[tuple[str, int]] = deque()
        #: Symbol → the highest venue trade id applied.
        self.last_trade_id: dict[str, int] = {}
        self.fill_log: deque[Fill] = deque(maxlen=history)
        #: Venue trade id → the asset its commission was charged in.
        self.fee_assets: dict[str, str] = {}
        self.fills = 0
        #: Asset → (free, locked), as the venue last reported.
        self.balances: dict[str, tuple[Decimal, Decimal]] = {}
        self._filters: dict[str, SymbolFilters] = {}
        self.foreign_orders: dict[str, str] = {}
        self.adopted: dict[str, Order] = {}
        self._intents: deque[tuple[IntentKind, Order]] = deque()
        self._intent_wake = trio.Event()
        self._events_send, self._events_recv = trio.open_memory_channel[dict[str, Any]](math.inf)
        self._consumer_idle = False
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._ws: WebSocketConnection | None = None
        self._logged_on = False
        self._authed = trio.Event()
        self._ready = False
        self._ready_event = trio.Event()
        self._session_end = trio.Event()
        self._session_nursery: trio.Nursery | None = None
        self._rotate = trio.Event()
        self._sent_on: dict[str, WebSocketConnection] = {}
        self._run_nursery: trio.Nursery | None = None
        self._unknown_wake = trio.Event()
        self._fatal: BinanceAuthError | None = None
        self._time_offset_ms = 0
        self._limits = _RateLimits(self._now_ms)
        self._http: httpx.AsyncClient | None = None
        self.connects = 0
        self.reconciliations = 0
        self.last_error = ""

    @classmethod
    def from_env(cls, *, api_key_env: str, secret_env: str | None = None,
                 private_key: str | os.PathLike[str] | None = None, **options: Any) -> BinanceExecutor:
        """The key from environment variables (their names are what the settings record)."""
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"the environment variable {api_key_env} (the Binance API key) is not set")
        secret = None
        if secret_env is not None:
            secret = os.environ.get(secret_env)
            if not secret:
                raise ConfigError(f"the environment variable {secret_env} (the Binance API secret) is not set")
        return cls(api_key=api_key, secret=secret, private_key=private_key, api_key_from=f"env:{api_key_env}",
                   secret_from=f"env:{secret_env}" if secret_env else None, **options)

    def __repr__(self) -> str:
        return (f"<BinanceExecutor {self.ws_api_url} key={self.key_type} run={self.run_id} "
                f"{'ready' if self._ready else 'not ready'}>")

    # --- clock -------------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self._clock.wall_ns() // 1_000_000 + self._time_offset_ms

    # --- intents --------------------------------------------------------------------------------------------

    def client_id(self, order_id: str) -> str:
        return self.prefix + order_id

    def submit(self, order: Order) -> None:
        if order.order_id in self._orders:
            raise OrderError(f"order id {order.order_id!r} is already in use")
        order.created_ts_ns = self._clock.wall_ns()
        order.venue = order.venue or "binance"
        self._orders[order.order_id] = order
        self._open[order.order_id] = order
        cid = self.client_id(order.order_id)
        if not CLIENT_ID_RE.fullmatch(cid):
            self._reject(order, f"order id {order.order_id!r} cannot be a Binance client order id "
                                f"({cid!r} must match ^[.A-Z:/a-z0-9_-]{{1,36}}$)")
            return
        self._client_of[order.order_id] = cid
        self._by_client[cid] = order
        filters = self._filters.get(order.symbol)
        if filters is not None:
            reason = filters.check(order, self.mark_price(order.slot, order.symbol))
            if reason is not None:
                self._reject(order, reason)
                return
        self._intents.append(("place", order))
        self._intent_wake.set()

    def cancel(self, slot: int, order_id: str) -> None:
        order = self._orders.get(order_id)
        if order is None or order.slot != slot:
            raise OrderError(f"slot {slot} has no order {order_id!r}; ctx.open_orders lists the live ones")
        if not order.is_open:
            self._emit(slot, self._update_event(order, "rejected", f"cancel refused: order is {order.status}"))
            return
        if ("place", order) in self._intents:  # never sent: nothing to ask the venue
            self._intents.remove(("place", order))
            self._finalize(order, "canceled", "canceled by strategy before it was sent")
            return
        self._cancel_wanted.add(order_id)
        self._intents.append(("cancel", order))
        self._intent_wake.set()

    # --- state machine -----------------------------------------------------------------------------------------

    def _note_venue_id(self, order: Order, venue_id: Any) -> None:
        if isinstance(venue_id, int) and order.order_id not in self._venue_id:
            self._venue_id[order.order_id] = venue_id
            self._by_venue[venue_id] = order

    def _apply_trade(self, order: Order, trade_id: int, price: Decimal, qty: Decimal, fee: Decimal, asset: str,
                     maker: bool) -> bool:
        key = (order.symbol, trade_id)
        if key in self._seen:
            return False
        self._seen.add(key)
        self._seen_order.append(key)
        if self.history is not None:
            while len(self._seen_order) > 10 * self.history:
                self._seen.discard(self._seen_order.popleft())
        if trade_id > self.last_trade_id.get(order.symbol, -1):
            self.last_trade_id[order.symbol] = trade_id
        self._settle(order)
        self._accept(order)
        if not order.is_open:  # a fill after we gave up on it (never: the venue's word wins; logged)
            log.warning("order %s: venue trade %d after the order was %s", order.order_id, trade_id, order.status)
        order.filled_qty += qty
        order.notional += price * qty
        order.status = "filled" if order.filled_qty >= order.qty else "partially_filled"
        self.fills += 1
        fill = Fill(order.order_id, order.symbol, order.side, price, qty, fee, "maker" if maker else "taker",
                    self._clock.wall_ns(), str(trade_id), order.slot, order.venue, self._fee_asset(order.symbol, asset))
        book_fill(self.position(order.slot, order.symbol), fill)
        self.fill_log.append(fill)
        self.fee_assets[str(trade_id)] = asset
        self._emit(order.slot, fill)
        self._update(order)
        return True

    def _fee_asset(self, symbol: str, asset: str) -> str:
        """``Fill.fee_asset``: "" when the commission is in the symbol's quote asset."""
        f = self._filters.get(symbol)
        return "" if f is None or asset == f.quote else asset

    # --- the account stream ------------------------------------------------------------------------------------

    def _account_event(self, ev: dict[str, Any]) -> None:
        """An account-stream event from the reader: applied here when that needs no request and nothing
        is queued before it (a fill reaches its strategy a task switch sooner), else queued in order."""
        if self._consumer_idle and ev.get("e") == "executionReport":
            try:
                if self._execution_nowait(ev):
                    return
            except (KeyError, TypeError, ValueError) as exc:
                log.error("Binance account event executionReport not understood (%s); skipped", exc)
                return
        self._consumer_idle = False
        self._events_send.send_nowait(ev)

    async def _consume_events(self) -> None:
        recv = self._events_recv
        while True:
            # Idle means waiting on an empty queue: only then may the reader apply an event itself.
            self._consumer_idle = recv.statistics().current_buffer_used == 0
            ev = await recv.receive()
            self._consumer_idle = False
            kind = ev.get("e")
            try:
                if kind == "executionReport":
                    await self._on_execution(ev)
                elif kind == "outboundAccountPosition":
                    for b in ev.get("B", ()):
                        self.balances[str(b["a"])] = (_dec(b["f"]), _dec(b["l"]))
                elif kind == "balanceUpdate":
                    free, locked = self.balances.get(str(ev["a"]), (ZERO, ZERO))
                    self.balances[str(ev["a"])] = (free + _dec(ev["d"]), locked)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("Binance account event %s not understood (%s); skipped", kind, exc)

    def _report_order(self, ev: dict[str, Any]) -> Order | None:
        return self._by_client.get(str(ev.get("C") or "")) or self._by_client.get(str(ev["c"]))

    def _execution_nowait(self, ev: dict[str, Any]) -> bool:
        """Apply an ``executionReport`` that needs no request to the venue: False if it needs one."""
        order = self._report_order(ev)
        if order is None:
            return True
        x = ev["x"]
        if x == "TRADE":
            if (order.symbol, int(ev["t"])) not in self._seen and order.filled_qty + _dec(ev["l"]) < _dec(ev["z"]):
                return False  # trades before this one never reached us
        elif x in _FINAL_EXECUTIONS and order.filled_qty < _dec(ev["z"]):
            return False
        self._apply_execution(order, ev)
        return True

    async def _on_execution(self, ev: dict[str, Any]) -> None:
        if not self._execution_nowait(ev):
            order = self._report_order(ev)
            assert order is not None
            await self._recover_trades(order)
            self._apply_execution(order, ev)

    def _apply_execution(self, order: Order, ev: dict[str, Any]) -> None:
        self._note_venue_id(order, ev.get("i"))
        x = ev["x"]
        self._settle(order)
        if x == "NEW":
            self._accept(order)
        elif x == "REPLACED":
            self._smaller(order, _dec(ev["q"]))
        elif x == "TRADE":
            self._apply_trade(order, int(ev["t"]), _dec(ev["L"]), _dec(ev["l"]), _dec(ev["n"]),
                              str(ev.get("N") or ""), bool(ev.get("m")))
        elif x in _FINAL_EXECUTIONS:
            self._finalize_from_venue(order, str(ev["X"]), str(ev.get("eR") or ev.get("r") or ""))

    def _finalize_from_venue(self, order: Order, venue_status: str, why: str) -> None:
        if venue_status == "CANCELED":
            self._finalize(order, "canceled", "canceled" + (" by strategy" if order.order_id in self._cancel_wanted
                                                             else " on Binance"))
        elif venue_status in ("EXPIRED", "EXPIRED_IN_MATCH"):
            self._finalize(order, "canceled", f"expired on Binance{f' ({why})' if why and why != 'NONE' else ''}")
        elif venue_status == "REJECTED":
            self._finalize(order, "rejected", f"rejected by Binance ({why or 'no reason given'})")

    async def _recover_trades(self, order: Order) -> None:
        """Fetch the venue's trades of ``order`` and apply the ones we missed, in venue order."""
        while True:
            if self._fatal is not None:
                return
            await self._authed.wait()
            try:
                venue_id = self._venue_id.get(order.order_id)
                if venue_id is None:
                    snap = await self._call("order.status", {"symbol": order.symbol,
                                                             "origClientOrderId": self._client_of[order.order_id]})
                    self._note_venue_id(order, snap.get("orderId"))
                    venue_id = self._venue_id[order.order_id]
                trades = await self._call("myTrades", {"symbol": order.symbol, "orderId": venue_id, "limit": 1000},
                                          weight=5)
            except _SessionLost:
                await trio.sleep(0.05)  # until the session is restored (or gone for good)
                continue
            except _VenueError as exc:
                log.warning("order %s: could not fetch its trades (%s)", order.order_id, exc.describe())
                return
            self._apply_trades(trades)
            return

    def _apply_trades(self, trades: Any) -> int:
        n = 0
        for t in sorted(trades, key=lambda t: int(t["id"])):
            order = self._by_venue.get(int(t["orderId"]))
            if order is None:
                continue
            n += self._apply_trade(order, int(t["id"]), _dec(t["price"]), _dec(t["qty"]), _dec(t["commission"]),
                                   str(t.get("commissionAsset") or ""), bool(t.get("isMaker")))
        return n

    async def _apply_snapshot(self, order: Order, snap: Mapping[str, Any]) -> None:
        """An ``order.status`` / ``openOrders.status`` report: recover missed trades, then move the status on."""
        self._note_venue_id(order, snap.get("orderId"))
        self._settle(order)
        status = str(snap["status"])
        if _dec(snap["executedQty"]) > order.filled_qty:
            await self._recover_trades(order)
        if status in ("NEW", "PARTIALLY_FILLED", "PENDING_NEW"):
            self._accept(order)
            self._smaller(order, _dec(snap["origQty"]))  # amended while we did not listen
        elif status in ("CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"):
            self._finalize_from_venue(order, status, str(snap.get("expiryReason") or ""))

    # --- the session ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with httpx.AsyncClient(base_url=self.rest_url, timeout=self.request_timeout) as http:
                self._http = http
                async with trio.open_nursery() as nursery:
                    self._run_nursery = nursery
                    nursery.start_soon(self._consume_events)
                    nursery.start_soon(self._send_intents)
                    nursery.start_soon(self._supervise, nursery.cancel_scope, "Binance WebSocket API", _TRANSIENT)
        finally:
            self._http = None
        if self._fatal is not None:
            raise self._fatal

    async def _session(self) -> None:
        self._session_end = trio.Event()
        self._rotate = trio.Event()
        async with trio.open_nursery() as nursery:
            self._session_nursery = nursery
            try:
                _, scope = await nursery.start(self._connection)
                await self._start_session()
                self._ready = True
                self._ready_event.set()
                self._intent_wake.set()
                nursery.start_soon(self._resolve_unknown)
                await self._serve(nursery, scope)
            finally:
                self._ready = False
                self._ready_event = trio.Event()
                self._authed = trio.Event()
                self._logged_on = False
                self._ws = None
                self._session_nursery = None
                self._end_requests("the connection ended before the answer")
                nursery.cancel_scope.cancel()

    @property
    def _order_url(self) -> str:
        return self.ws_api_url

    async def _leaving(self, old: WebSocketConnection) -> None:
        # The old connection keeps its account stream until the new one has its own (fills during the
        # overlap come twice and are applied once); now it can go.
        try:
            await self._call("userDataStream.unsubscribe", {}, signed=False, weight=2, ws=old)
        except (_VenueError, _SessionLost) as exc:
            log.info("Binance: unsubscribing the old connection's account stream: %s", exc)

    async def _handed_over(self) -> None:
        # A balance delta seen on both streams would count twice: read the balances afresh.
        try:
            account = await self._call("account.status", {"omitZeroBalances": True}, weight=20)
            self.balances = {str(b["asset"]): (_dec(b["free"]), _dec(b["locked"]))
                             for b in account.get("balances", ())}
        except (_VenueError, _SessionLost) as exc:
            log.warning("Binance: balances after a handover: %s", exc)

    async def _read(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                text = await ws.get_message()
                try:
                    msg = orjson.loads(text)
                except orjson.JSONDecodeError:
                    log.error("Binance WebSocket API sent a frame that is not JSON; ignored")
                    continue
                if type(msg) is not dict:
                    continue
                if "status" in msg and "id" in msg:
                    self._limits.observe(msg.get("rateLimits"))
                    if msg["id"] is not None and self._answered(str(msg["id"]), msg):
                        continue
                    if msg.get("error"):
                        err = msg["error"]
                        log.error("Binance WebSocket API error for no request: %s %s", err.get("code"), err.get("msg"))
                        if err.get("code") in _AUTH_CODES:
                            self._fatal_later(_VenueError(int(msg["status"]), int(err["code"]), str(err.get("msg"))),
                                              "the session")
                    continue
                ev = msg.get("event")
                if type(ev) is not dict:
                    continue
                kind = ev.get("e")
                if ws is not self._ws:
                    if kind not in ("serverShutdown", "eventStreamTerminated"):
                        self._account_event(ev)  # the old stream's last events, until unsubscribed
                    continue
                if kind == "serverShutdown":
                    log.warning("Binance announced a server shutdown: moving to a new connection")
                    self._rotate.set()
                elif kind == "eventStreamTerminated":
                    log.warning("Binance ended the account stream subscription: resubscribing")
                    if self._session_nursery is not None:
                        self._session_nursery.start_soon(self._resubscribe)
                else:
                    self._account_event(ev)
        except ConnectionClosed as exc:
            reason = exc.reason
            if ws is self._ws:
                self.last_error = (f"connection closed ({reason.code} {reason.name})" if reason
                                   else "connection closed")
        finally:
            if ws is self._ws:
                self._session_end.set()

    def _fatal_later(self, exc: _VenueError, what: str) -> None:
        if self._fatal is None and self._session_nursery is not None:
            self._fatal = BinanceAuthError(f"Binance refused {what}: {exc.describe()}; check the API key, its "
                                           "secret or private key, its permissions and the machine's clock")
            self._session_end.set()

    async def _start_session(self) -> None:
        await self._handshake()
        for symbol in self.symbols:
            await self._filters_for(symbol)
        try:
            await self._reconcile()
        except _VenueError as exc:
            if exc.code in _AUTH_CODES:
                raise Fatal(BinanceAuthError(f"Binance refused a reconciliation query: {exc.describe()}")) from None
            raise _SessionLost(f"reconciliation failed: {exc.describe()}") from None
        if self._fatal is not None:
            raise Fatal(self._fatal)

    async def _handshake(self) -> None:
        """The clock offset, the logon (Ed25519 keys) and the account stream, on the current connection."""
        self._logged_on = False  # a new connection is not logged on: sign until it is
        try:
            before = self._clock.wall_ns() // 1_000_000
            server = await self._call("time", {}, signed=False)
            after = self._clock.wall_ns() // 1_000_000
            self._time_offset_ms = int(server["serverTime"]) - (before + after) // 2
            if self.key_type == "ed25519":
                await self._call("session.logon", {}, weight=2)
                self._logged_on = True
                await self._call("userDataStream.subscribe", {}, signed=False, weight=2)
            else:
                await self._call("userDataStream.subscribe.signature", {}, weight=2)
        except _VenueError as exc:
            if exc.code in _AUTH_CODES:
                raise Fatal(BinanceAuthError(f"Binance refused the session: {exc.describe()}; check the API key, "
                                              "its secret or private key and the machine's clock")) from None
            raise _SessionLost(exc.describe()) from None
        self._authed.set()

    async def _resubscribe(self) -> None:
        try:
            if self.key_type == "ed25519":
                await self._call("userDataStream.subscribe", {}, signed=False, weight=2)
            else:
                await self._call("userDataStream.subscribe.signature", {}, weight=2)
            # Events between the end and the new subscription are lost: reconcile what is open.
            await self._reconcile()
        except (_VenueError, _SessionLost) as exc:
            log.warning("Binance account stream: resubscribing failed (%s); reconnecting", exc)
            self._session_end.set()

    async def _reconcile(self) -> None:
        """Trades since the last one seen, open orders, each order we sent and do not know the end of, balances."""
        self.reconciliations += 1
        symbols = {o.symbol for o in self._open.values() if o.order_id in self._sent} | set(self.last_trade_id)
        for symbol in sorted(symbols):
            last = self.last_trade_id.get(symbol)
            while last is not None:
                trades = await self._call("myTrades", {"symbol": symbol, "fromId": last + 1, "limit": 1000},
                                          weight=20)
                self._apply_trades(trades)
                last = max((int(t["id"]) for t in trades), default=None) if len(trades) >= 1000 else None
        open_orders = await self._call("openOrders.status", {}, weight=80)
        venue_open = {str(o["clientOrderId"]): o for o in open_orders}
        for order in [o for o in self._open.values() if o.order_id in self._sent]:
            cid = self._client_of[order.order_id]
            snap = venue_open.get(cid)
            if snap is None:
                try:
                    snap = await self._call("order.status", {"symbol": order.symbol, "origClientOrderId": cid})
                except _VenueError as exc:
                    if exc.code != -2013:
                        raise
                    self._never_placed(order)
                    continue
            await self._apply_snapshot(order, snap)
        self.foreign_orders = {}
        for cid, snap in venue_open.items():
            if cid in self._by_client:
                continue
            ours = parse_client_id(cid)
            if ours is not None and ours[0] != self.run_id:
                self._adopt(cid, ours[1], snap)
            else:
                self.foreign_orders[cid] = str(snap.get("symbol", ""))
        for order_id in list(self._cancel_wanted):
            wanted = self._orders.get(order_id)
            if wanted is not None and wanted.is_open and ("cancel", wanted) not in self._intents:
                self._intents.appendleft(("cancel", wanted))
        account = await self._call("account.status", {"omitZeroBalances": True}, weight=20)
        self.balances = {str(b["asset"]): (_dec(b["free"]), _dec(b["locked"])) for b in account.get("balances", ())}
        log.info("Binance reconciled: %d open orders at the venue, %d ours in flight, %d foreign, %d adopted",
                 len(venue_open), len(self._sent), len(self.foreign_orders), len(self.adopted))

    def _never_placed(self, order: Order) -> None:
        why = self._unknown.get(order.order_id, ("it was sent",))[0]
        self._reject(order, f"Binance has no such order (-2013 NO_SUCH_ORDER) after {why}: it was never placed")

    def _adopt(self, cid: str, slot: int, snap: Mapping[str, Any]) -> None:
        if cid in self.adopted:
            return
        side: Side = "buy" if snap.get("side") == "BUY" else "sell"
        otype: OrderType = "limit" if snap.get("type") == "LIMIT" else "market"
        order = Order(cid, slot, str(snap["symbol"]), side, otype, _dec(snap["origQty"]),
                      _dec(snap["price"]) if otype == "limit" else None,
                      "partially_filled" if snap.get("status") == "PARTIALLY_FILLED" else "accepted",
                      _dec(snap["executedQty"]), _dec(snap["cummulativeQuoteQty"]), "adopted from a previous run",
                      self._clock.wall_ns(), "binance")
        self.adopted[cid] = order
        self._orders[cid] = self._open[cid] = self._by_client[cid] = order
        self._client_of[cid] = cid
        self._sent.add(cid)
        self._note_venue_id(order, snap.get("orderId"))
        log.warning("adopted open order %s of a previous run into slot %d", cid, slot)

    async def _query_unknown(self, order: Order) -> None:
        order_id = order.order_id
        try:
            snap = await self._call("order.status", {"symbol": order.symbol,
                                                     "origClientOrderId": self._client_of[order_id]})
        except _VenueError as exc:
            if exc.code == -2013 and order_id in self._unknown:
                self._never_placed(order)
            elif exc.code != -2013:
                log.warning("order %s: status query failed (%s)", order_id, exc.describe())
            return
        if order_id in self._unknown:
            await self._apply_snapshot(order, snap)

    # --- requests ------------------------------------------------------------------------------------------------

    def _params(self, params: dict[str, Any], signed: bool) -> dict[str, Any]:
        if not signed:
            return params
        out = {**params, "timestamp": self._now_ms()}
        if self.recv_window_ms != 5000:
            out["recvWindow"] = self.recv_window_ms
        if not self._logged_on:
            out["apiKey"] = self._api_key
            out["signature"] = self._signer.sign_params(out)
        return out

    async def _send(self, method: str, params: dict[str, Any], *, signed: bool = True, weight: int = 1,
                    order: bool = False, ws: WebSocketConnection | None = None) -> _Pending:
        """Send one request (on the current connection unless told); the returned ``_Pending`` completes with
        its response (or a failure)."""
        await self._limits.spend(weight, order)
        return await self._request(method, lambda rid: {"id": rid, "method": method,
                                                        "params": self._params(params, signed)}, ws)

    async def _result(self, p: _Pending, timeout: float | None = None) -> Any:
        with trio.move_on_after(self.request_timeout if timeout is None else timeout):
            await p.done.wait()
        if p.response is None:
            raise _SessionLost(p.failure or f"no answer to {p.method} within {self.request_timeout:g} s")
        resp = p.response
        err = resp.get("error")
        if err is not None:
            data = err.get("data") or {}
            retry = data.get("retryAfter") if isinstance(data, dict) else None
            status = int(resp.get("status", 400))
            exc = _VenueError(status, int(err.get("code", 0)), str(err.get("msg", "")),
                              int(retry) if retry is not None else None)
            if status in (418, 429):
                self._limits.pause_until(exc.retry_after_ms or self._now_ms() + 60_000)
            raise exc
        return resp.get("result")

    async def _call(self, method: str, params: dict[str, Any], *, signed: bool = True, weight: int | None = None,
                    ws: WebSocketConnection | None = None) -> Any:
        p = await self._send(method, params, signed=signed, weight=weight or _WEIGHTS.get(method, 1), ws=ws)
        return await self._result(p)

    # --- sending intents -----------------------------------------------------------------------------------------

    async def _send_cancel(self, order: Order) -> None:
        p = await self._send("order.cancel", {"symbol": order.symbol,
                                              "origClientOrderId": self._client_of[order.order_id]})
        self._watch(self._cancel_outcome, order, p)

    async def _place(self, order: Order) -> None:
        if not order.is_open:
            return
        try:
            filters = await self._filters_for(order.symbol)
        except _SessionLost:
            raise
        except (httpx.HTTPError, _VenueError, KeyError, ValueError) as exc:
            self._reject(order, f"cannot check the exchange filters of {order.symbol}: {exc}")
            return
        reason = filters.check(order, self.mark_price(order.slot, order.symbol))
        if reason is not None:
            self._reject(order, reason)
            return
        params: dict[str, Any] = {"symbol": order.symbol, "side": "BUY" if order.side == "buy" else "SELL",
                                  "type": "LIMIT" if order.order_type == "limit" else "MARKET",
                                  "quantity": _plain(order.qty), "newClientOrderId": self._client_of[order.order_id],
                                  "newOrderRespType": "ACK"}
        if order.order_type == "limit":
            assert order.price is not None
            params["price"] = _plain(order.price)
            params["timeInForce"] = "GTC"
        p = await self._send("order.place", params, order=True)
        self._sent.add(order.order_id)
        self._watch(self._place_outcome, order, p)

    def _amend_rule(self, order: Order, price: Decimal | None, qty: Decimal | None) -> str | None:
        if price is not None and price != order.price:
            return ("Binance Spot changes an order's price only by cancel-replace, a new order: cancel it and place "
                    "a new one (a smaller qty is amended in place)")
        if qty is not None and qty >= order.qty:
            return (f"Binance amends an order in place only to a smaller qty (order.amend.keepPriority), "
                    f"not {_plain(qty)} from {_plain(order.qty)}")
        return None

    def _smaller(self, order: Order, qty: Decimal) -> None:
        """Binance says the order is for ``qty``: an amend took effect if that is less (amends only
        ever lower it here, so a report from before one, read after it, changes nothing)."""
        if qty < order.qty:
            self._amended(order, order.price, qty)

    async def _send_amend(self, order: Order) -> None:
        """``order.amend.keepPriority``: a smaller qty, the same client id, the same place in the queue."""
        change = self._next_amend(order)
        if change is None:
            return
        assert change.qty is not None  # _amend_rule: a price alone is refused
        f = self._filters.get(order.symbol)
        problem = f.check(change.applied_to(order), self.mark_price(order.slot, order.symbol)) if f else None
        if problem is not None:
            self._refuse_amend(order, problem)
            return
        cid = self._client_of[order.order_id]
        try:
            p = await self._send("order.amend.keepPriority", {"symbol": order.symbol, "origClientOrderId": cid,
                                                              "newClientOrderId": cid, "newQty": _plain(change.qty)},
                                 weight=_WEIGHTS["order.amend.keepPriority"])
        except _SessionLost:
            self._amend_again(order, change)  # never left: ``_send_intents`` queues it for the next session
            raise
        self._watch(functools.partial(self._amend_outcome, change=change), order, p)

    async def _amend_outcome(self, order: Order, p: _Pending, change: AmendRequest) -> None:
        try:
            result = await self._result(p)
        except (_SessionLost, _VenueError) as exc:
            if isinstance(exc, _SessionLost) or exc.unknown_outcome:
                # Taken or not: the account stream or the reconciliation's order.status says
                # which, and a resend of what the order already is goes nowhere.
                if order.is_open:
                    self._amend_again(order, change)
                    self._intents.append(("amend", order))
                    self._intent_wake.set()
                return
            self._refuse_amend(order, f"refused by {exc.describe()}")
            return
        amended = result.get("amendedOrder") or {}
        self._smaller(order, _dec(amended.get("qty") or amended.get("origQty") or "0"))

    def _watch(self, outcome: Callable[[Order, _Pending], Any], order: Order, p: _Pending) -> None:
        """Wait for a request's answer beside the sender, which moves on to the next intent."""
        assert self._run_nursery is not None
        self._run_nursery.start_soon(outcome, order, p)

    async def _place_outcome(self, order: Order, p: _Pending) -> None:
        try:
            result = await self._result(p)
        except _SessionLost as exc:
            self._unknown_outcome(order, str(exc))
            return
        except _VenueError as exc:
            if exc.unknown_outcome:
                self._unknown_outcome(order, exc.describe())
                return
            self._sent.discard(order.order_id)
            self._reject(order, f"refused by {exc.describe()}")
            if exc.code in _AUTH_CODES:
                self._fatal_later(exc, f"order {order.order_id}")
            return
        self._note_venue_id(order, result.get("orderId"))
        self._settle(order)
        self._accept(order)

    async def _cancel_outcome(self, order: Order, p: _Pending) -> None:
        try:
            result = await self._result(p)
        except _SessionLost as exc:
            log.warning("cancel of %s: outcome unknown (%s); reconciliation will tell", order.order_id, exc)
            if order.is_open and ("cancel", order) not in self._intents:
                self._intents.append(("cancel", order))
            return
        except _VenueError as exc:
            self._cancel_wanted.discard(order.order_id)
            if order.is_open:
                self._emit(order.slot, self._update_event(order, "rejected", f"cancel refused by {exc.describe()}"))
            return
        self._note_venue_id(order, result.get("orderId"))
        if _dec(result.get("executedQty", "0")) > order.filled_qty:
            await self._recover_trades(order)
        self._finalize_from_venue(order, str(result.get("status", "CANCELED")), "")

    async def _filters_for(self, symbol: str) -> SymbolFilters:
        f = self._filters.get(symbol)
        if f is not None:
            return f
        http = self._http
        if http is None:
            raise _SessionLost("not running")
        resp = await http.get("/api/v3/exchangeInfo", params={"symbol": symbol})
        body = resp.json()
        if resp.status_code != 200:
            raise _VenueError(resp.status_code, int(body.get("code", 0)), str(body.get("msg", "")))
        self._limits.observe(body.get("rateLimits"))
        for info in body.get("symbols", ()):
            parsed = SymbolFilters.parse(info)
            self._filters[parsed.symbol] = parsed
        if symbol not in self._filters:
            raise KeyError(f"Binance does not list {symbol}")
        return self._filters[symbol]

    # --- views ---------------------------------------------------------------------------------------------------

    @property
    def settings(self) -> BinanceSettings:
        return self._settings

    def status(self) -> BinanceStatus:
        return BinanceStatus(
            executor="BinanceExecutor", orders=len(self._orders), open_orders=len(self._open), fills=self.fills,
            settings=self._settings, connected=self._ws is not None, ready=self._ready, connects=self.connects,
            handovers=self.handovers,
            reconciliations=self.reconciliations, pending_unknown=tuple(self._unknown),
            queued_intents=len(self._intents), balances={a: f for a, (f, _) in sorted(self.balances.items())},
            foreign_orders=tuple(sorted(self.foreign_orders)), adopted_orders=tuple(sorted(self.adopted)),
            last_error=self.last_error)


#: What ends one session, not the executor: the next session may do better.
_TRANSIENT = (*CONNECT_ERRORS, httpx.HTTPError)


