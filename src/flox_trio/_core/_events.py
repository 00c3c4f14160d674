"""Events the engine dispatches, and symbols.

Market-data events carry floats: that is what indicators read, and it keeps
the hot path cheap. Order updates and fills carry Decimals: they are money.
All events are frozen slotted classes; a strategy can keep a reference to one
without it changing under it. ``Trade``, the bulk of every feed and tape, is a
msgspec Struct: it is built ten times faster than a frozen attrs class (whose
``__init__`` goes through ``object.__setattr__`` for every field), and decoded
from a frame without a Python call; the others are attrs classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Literal, TypeAlias

import attrs
import msgspec

from .._errors import FloxError

# --- symbols -----------------------------------------------------------------


@attrs.frozen(slots=True)
class SymbolRef:
    """A symbol as a strategy names it: ``"BTCUSDT"`` or ``"binance:BTCUSDT"``.

    ``venue`` is empty when the strategy takes the symbol from whichever venue
    the feed serves.
    """

    symbol: str
    venue: str = ""

    def __str__(self) -> str:
        return f"{self.venue}:{self.symbol}" if self.venue else self.symbol


def parse_symbol(text: str) -> SymbolRef:
    """Parse ``"BTCUSDT"`` or ``"binance:BTCUSDT"``; symbols are upper-cased, venues lower-cased."""
    if not isinstance(text, str):
        raise FloxError(f"a symbol must be a string like 'BTCUSDT' or 'binance:BTCUSDT', got {text!r}")
    venue, sep, symbol = text.strip().rpartition(":")
    symbol = symbol.strip().upper()
    if not symbol or (sep and not venue.strip()):
        raise FloxError(f"bad symbol {text!r}: write it as 'BTCUSDT' or 'binance:BTCUSDT'")
    return SymbolRef(symbol, venue.strip().lower())


#: Quote currencies by how a symbol ends, longest first ("BTCUSDT" is quoted in USDT).
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")


def quote_currency(symbols: Iterable[str]) -> str:
    """The currency PnL is in: the symbols' common quote, else "quote"."""
    found = {next((q for q in _QUOTES if parse_symbol(s).symbol.endswith(q)), "quote") for s in symbols}
    return found.pop() if len(found) == 1 else "quote"


def parse_symbols(symbols: object) -> tuple[SymbolRef, ...]:
    """Parse a strategy's symbol list; a lone string is one symbol."""
    if isinstance(symbols, str | SymbolRef):
        symbols = [symbols]
    if not isinstance(symbols, list | tuple | set | frozenset):
        raise FloxError(
            f"symbols must be a list like ['BTCUSDT'] or ['binance:BTCUSDT'], got {symbols!r}"
        )
    out: list[SymbolRef] = []
    for s in symbols:
        ref = s if isinstance(s, SymbolRef) else parse_symbol(s)
        if ref not in out:
            out.append(ref)
    if not out:
        raise FloxError("a strategy must watch at least one symbol, e.g. ['BTCUSDT']")
    return tuple(out)


# --- vocabularies ----------------------------------------------------------------

#: The taker's side of a trade; the side of an order or a fill.
Side: TypeAlias = Literal["buy", "sell"]
OrderType: TypeAlias = Literal["market", "limit"]
#: new (sent) → accepted → partially_filled → filled | canceled | rejected.
OrderStatus: TypeAlias = Literal["new", "accepted", "partially_filled", "filled", "canceled", "rejected"]
Liquidity: TypeAlias = Literal["maker", "taker"]
GapReason: TypeAlias = Literal["trade_ids", "dropped"]

SIDES: frozenset[str] = frozenset({"buy", "sell"})
ORDER_TYPES: frozenset[str] = frozenset({"market", "limit"})

# --- market data ---------------------------------------------------------------

Level: TypeAlias = tuple[float, float]


class Trade(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One public trade. ``side`` is the taker's side, "buy" or "sell"."""

    # array_like: a tape stores a trade as its fields in this order (format 3), so a new
    # field goes last and has a default.

    symbol: str
    price: float
    qty: float
    side: Side
    trade_id: str = ""
    exchange_ts_ns: int = 0
    recv_ts_ns: int = 0
    venue: str = ""


@attrs.frozen(slots=True)
class Book:
    """The top of a maintained L2 book, best level first on each side."""

    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    exchange_ts_ns: int = 0
    recv_ts_ns: int = 0
    venue: str = ""
    seq: int = 0

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None


@attrs.frozen(slots=True)
class Bar:
    """A time bar aggregated from trades over ``[start_ts_ns, end_ts_ns)``."""

    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    start_ts_ns: int
    end_ts_ns: int
    interval_s: float
    venue: str = ""


@attrs.frozen(slots=True)
class Gap:
    """Events the engine knows were missed for ``symbol`` before the next one it delivers.

    ``reason`` says how it knows: "trade_ids" (the venue's consecutive trade ids
    jumped: ``first_id``..``last_id`` never arrived) or "dropped" (a queue's
    overflow policy dropped them). ``missing`` is how many, when known (-1 if not).
    """

    symbol: str
    reason: GapReason
    missing: int = -1
    first_id: str = ""
    last_id: str = ""
    exchange_ts_ns: int = 0
    recv_ts_ns: int = 0
    venue: str = ""


# --- orders --------------------------------------------------------------------


@attrs.frozen(slots=True)
class OrderUpdate:
    """A change of an order's state.

    ``status`` is one of "new", "accepted", "partially_filled", "filled",
    "canceled", "rejected"; ``reason`` says why for rejections and cancels.
    """

    order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    status: OrderStatus
    qty: Decimal
    filled_qty: Decimal
    price: Decimal | None = None
    avg_fill_price: Decimal | None = None
    reason: str = ""
    ts_ns: int = 0
    slot: int = -1
    venue: str = ""

    @property
    def remaining_qty(self) -> Decimal:
        return self.qty - self.filled_qty


@attrs.frozen(slots=True)
class Fill:
    """An execution of (part of) an order. ``liquidity`` is "maker" or "taker"."""

    order_id: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal = Decimal(0)
    liquidity: Liquidity = "taker"
    ts_ns: int = 0
    trade_id: str = ""
    slot: int = -1
    venue: str = ""
    #: The asset ``fee`` is in: "" for the symbol's quote (the paper executor's), else the venue's word.
    fee_asset: str = ""


def event_time_ns(ev: object) -> int:
    """When an event happened, for pacing, warm-ups and time ranges: receive time, else the venue's; 0 if unknown."""
    ts = (
        getattr(ev, "recv_ts_ns", 0) or getattr(ev, "exchange_ts_ns", 0)
        or getattr(ev, "end_ts_ns", 0) or getattr(ev, "ts_ns", 0)
    )
    if isinstance(ts, float) and not math.isfinite(ts):
        return 0
    return int(ts)


Event: TypeAlias = Trade | Book | Bar | Gap | OrderUpdate | Fill
