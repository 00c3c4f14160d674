"""The simulator's matching engine, shared by its private venue APIs (Binance, Bybit).

Accounts, orders and fills against the simulator's own book (a venue mirror
with ``books[symbol].sides()``): market orders and marketable limits walk it
level by level, one venue trade per level; the rest of a GTC limit rests and
fills as maker when a trade prints at or through its price (generated trades,
or ``print_trade``). The simulated account is a small participant: its fills do
not take liquidity out of the public book. Fees are the account's maker/taker
rates: a buyer pays in the base asset, a seller in the quote asset (Binance
without BNB; Bybit spot with positive fee rates).

A venue subclass reports changes in its own wire format: ``_execution`` for an
order's change (exec type ``NEW``, ``TRADE``, ``CANCELED``, ``EXPIRED``) and
``_position`` for the balances it moved; ``_settle_trade`` is how one trade
moves them (spot here; Bybit's linear contracts keep a position instead).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from collections.abc import Callable, Iterable
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal, Protocol

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._binance import split_symbol
from ._market import SymbolMarket

_EIGHT = Decimal("0.00000001")


class _Book(Protocol):
    def sides(self) -> tuple[Any, Any]: ...


class _Venue(Protocol):
    @property
    def books(self) -> Any: ...


def fixed8(value: Decimal) -> str:
    """A Decimal as the venue writes prices and quantities: exactly 8 decimals."""
    return f"{value.quantize(_EIGHT, rounding=ROUND_DOWN):f}"



@attrs.define(eq=False)
class SimAccount:
    """One simulated account and its API key."""

    api_key: str
    key_type: Literal["hmac", "ed25519"]
    secret: bytes = attrs.field(default=b"", repr=False)
    public_key: Ed25519PublicKey | None = attrs.field(default=None, repr=False)
    #: asset → [free, locked]
    balances: dict[str, list[Decimal]] = attrs.field(factory=dict)
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")

    def verify(self, text: str, signature: str) -> bool:
        if self.key_type == "hmac":
            want = hmac.new(self.secret, text.encode("utf-8"), hashlib.sha256).hexdigest()
            return hmac.compare_digest(want, signature.lower())
        assert self.public_key is not None
        try:
            self.public_key.verify(base64.b64decode(signature, validate=True), text.encode("utf-8"))
        except (InvalidSignature, ValueError):
            return False
        return True

    def balance(self, asset: str) -> list[Decimal]:
        return self.balances.setdefault(asset, [Decimal(0), Decimal(0)])


@attrs.define(eq=False)
class SimOrder:
    account: SimAccount = attrs.field(repr=False)
    symbol: str
    order_id: int
    client_id: str
    side: Literal["BUY", "SELL"]
    type: Literal["LIMIT", "MARKET"]
    tif: str
    price: Decimal
    qty: Decimal
    time: int
    executed: Decimal = Decimal(0)
    quote: Decimal = Decimal(0)
    status: str = "NEW"
    update_time: int = 0
    working: bool = False
    #: Quote locked for a buy limit, base for a sell (spot; derivatives lock nothing here).
    locked: Decimal = Decimal(0)
    #: Bybit's product category: "spot" or "linear" (Binance orders are spot).
    category: str = "spot"

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def report(self) -> dict[str, Any]:
        """As ``order.status`` and ``openOrders.status`` list it."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
            "price": fixed8(self.price), "origQty": fixed8(self.qty), "executedQty": fixed8(self.executed),
            "cummulativeQuoteQty": fixed8(self.quote), "status": self.status, "timeInForce": self.tif,
            "type": self.type, "side": self.side, "stopPrice": fixed8(Decimal(0)), "icebergQty": fixed8(Decimal(0)),
            "time": self.time, "updateTime": self.update_time, "isWorking": self.working,
            "workingTime": self.time if self.working else -1, "origQuoteOrderQty": fixed8(Decimal(0)),
            "selfTradePreventionMode": "NONE",
        }


@attrs.frozen
class SimFill:
    symbol: str
    trade_id: int
    order_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def report(self) -> dict[str, Any]:
        """As ``myTrades`` lists it."""
        return {"symbol": self.symbol, "id": self.trade_id, "orderId": self.order_id, "orderListId": -1,
                "price": fixed8(self.price), "qty": fixed8(self.qty), "quoteQty": fixed8(self.price * self.qty),
                "commission": fixed8(self.commission), "commissionAsset": self.asset, "time": self.time,
                "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True}


class MatchingEngine:
    """Orders of simulated accounts matched against a venue mirror's book (see the module docstring)."""

    _venue: _Venue
    _clock: Callable[[], int]
    orders: dict[int, SimOrder]
    fills: list[SimFill]
    _trade_ids: itertools.count[int]

    def _execution(self, order: SimOrder, exec_type: str, *, fill: SimFill | None = None, expiry: str = "",
                   cancel_id: str = "") -> None:
        raise NotImplementedError

    def _position(self, account: SimAccount, assets: Iterable[str]) -> None:
        raise NotImplementedError

    def _levels(self, symbol: str, side: str) -> list[tuple[Decimal, Decimal]]:
        """The opposite side of the simulator's book, best first, as Decimals."""
        book = self._venue.books.get(symbol)
        if book is None:
            return []
        bids, asks = book.sides()
        return [(Decimal(p), Decimal(q)) for p, q in (asks if side == "BUY" else bids)]

    def _min_notional(self, quote: str) -> Decimal:
        return {"BTC": Decimal("0.0001"), "ETH": Decimal("0.001"), "BNB": Decimal("0.01")}.get(quote, Decimal(5))

    def _take(self, order: SimOrder, levels: list[tuple[Decimal, Decimal]]) -> None:
        """Fill ``order`` as taker against ``levels`` (up to its limit price)."""
        for px, available in levels:
            if not order.open or order.executed >= order.qty:
                break
            if order.type == "LIMIT" and (px > order.price if order.side == "BUY" else px < order.price):
                break
            self._trade(order, px, min(available, order.qty - order.executed), maker=False)

    def print_trade(self, symbol: str, price: Any, qty: Any) -> int:
        """A trade prints at ``price`` for ``qty``: resting orders at or through it fill, as maker, oldest first.

        Returns how many venue trades it made for the simulated accounts.
        """
        px, left = Decimal(str(price)), Decimal(str(qty))
        n = 0
        for order in list(self.orders.values()):
            if left <= 0:
                break
            if not (order.open and order.working and order.symbol == symbol):
                continue
            if (order.side == "BUY" and order.price >= px) or (order.side == "SELL" and order.price <= px):
                take = min(left, order.qty - order.executed)
                self._trade(order, order.price, take, maker=True)
                left -= take
                n += 1
        return n

    def on_step(self, market: SymbolMarket, trades: Iterable[Any]) -> None:
        """The generated market printed ``trades`` (ticks and lots): fill what rests at or through them."""
        if not any(o.open and o.working and o.symbol == market.spec.symbol for o in self.orders.values()):
            return
        tick, lot = Decimal(repr(market.spec.tick)), Decimal(repr(market.spec.lot))
        for t in trades:
            self.print_trade(market.spec.symbol, tick * t.ticks, lot * t.lots)

    def _trade(self, order: SimOrder, price: Decimal, qty: Decimal, *, maker: bool) -> None:
        acc = order.account
        base, quote = split_symbol(order.symbol)
        now = self._clock()
        commission, asset = self._settle_trade(order, price, qty, maker)
        fill = SimFill(order.symbol, next(self._trade_ids), order.order_id, price, qty, commission, asset, now,
                       order.side == "BUY", maker)
        self.fills.append(fill)
        order.executed += qty
        order.quote += price * qty
        order.update_time = now
        order.status = "FILLED" if order.executed >= order.qty else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            order.working = False
        self._execution(order, "TRADE", fill=fill)
        self._position(acc, (base, quote))

    def _settle_trade(self, order: SimOrder, price: Decimal, qty: Decimal, maker: bool) -> tuple[Decimal, str]:
        """Move the balances of one trade; (commission, its asset). Here, spot: the coins change hands."""
        acc = order.account
        base, quote = split_symbol(order.symbol)
        rate = acc.maker_fee if maker else acc.taker_fee
        if order.side == "BUY":
            commission, asset = (qty * rate).quantize(_EIGHT), base
            pay = acc.balance(quote)
            if order.type == "LIMIT":
                pay[1] -= order.price * qty
                order.locked -= order.price * qty
                pay[0] += (order.price - price) * qty
            else:
                pay[0] -= price * qty
            acc.balance(base)[0] += qty - commission
        else:
            commission, asset = (price * qty * rate).quantize(_EIGHT), quote
            give = acc.balance(base)
            if order.type == "LIMIT":
                give[1] -= qty
                order.locked -= qty
            else:
                give[0] -= qty
            acc.balance(quote)[0] += price * qty - commission
        return commission, asset

    def _finish(self, order: SimOrder, status: str, expiry: str = "", cancel_id: str = "") -> None:
        base, quote = split_symbol(order.symbol)
        if order.locked:
            bal = order.account.balance(quote if order.side == "BUY" else base)
            bal[0] += order.locked
            bal[1] -= order.locked
            order.locked = Decimal(0)
        order.status = status
        order.working = False
        order.update_time = self._clock()
        self._execution(order, status, expiry=expiry, cancel_id=cancel_id)
        self._position(order.account, (base, quote))


def places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def cost(levels: list[tuple[Decimal, Decimal]], qty: Decimal) -> Decimal:
    """What buying ``qty`` by walking ``levels`` costs."""
    cost, left = Decimal(0), qty
    for px, available in levels:
        take = min(left, available)
        cost += px * take
        left -= take
        if left <= 0:
            break
    return cost


