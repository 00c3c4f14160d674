"""The simulated market: a seeded random walk of trades and an L2 book per symbol.

The generator works in integer ticks and lots so the book never accumulates
float error; prices and quantities reach the wire as the fixed-decimal
strings both venues use. Each venue keeps its own mirror of the book with its
own sequence numbers (Binance update ids, Bybit ``u``/``seq``), because that is
what a client syncs against and what tests compare a client's book with.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import attrs


@attrs.frozen
class SymbolSpec:
    """How one simulated symbol trades."""

    symbol: str
    price: float
    tick: float = 0.01
    lot: float = 0.001
    #: Median taker order size; sizes are log-normal, so a few are much larger.
    median_qty: float = 0.1
    #: Levels kept on each side (below Bybit's smallest multi-level depth, 50, so every
    #: orderbook.N view of the book is the whole book).
    levels: int = 20


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCUSDT", 43_000.0, tick=0.01, lot=0.00001, median_qty=0.004),
    SymbolSpec("ETHUSDT", 2_300.0, tick=0.01, lot=0.0001, median_qty=0.08),
    SymbolSpec("SOLUSDT", 95.0, tick=0.01, lot=0.001, median_qty=2.0),
)


def spec_for(symbol: str) -> SymbolSpec:
    for spec in DEFAULT_SYMBOLS:
        if spec.symbol == symbol:
            return spec
    return SymbolSpec(symbol, 100.0)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


class SimBook:
    """A venue's view of a book: price string → quantity string, plus its sequence numbers."""

    __slots__ = ("asks", "bids", "seq", "update_id")

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        #: Binance: the last update id. Bybit: ``u``.
        self.update_id = 0
        #: Bybit cross sequence.
        self.seq = 0

    def set(self, side: str, price: str, qty: str) -> None:
        levels = self.bids if side == "b" else self.asks
        if float(qty) == 0:
            levels.pop(price, None)
        else:
            levels[price] = qty

    def apply(self, bids: Iterable[list[str]], asks: Iterable[list[str]]) -> None:
        for p, q in bids:
            self.set("b", p, q)
        for p, q in asks:
            self.set("a", p, q)

    def reset(self, bids: Iterable[list[str]], asks: Iterable[list[str]]) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(bids, asks)

    def sides(self, limit: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        """Both sides as wire levels, best first."""
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        return [[p, q] for p, q in bids], [[p, q] for p, q in asks]

    def copy(self) -> SimBook:
        other = SimBook()
        other.bids = dict(self.bids)
        other.asks = dict(self.asks)
        other.update_id = self.update_id
        other.seq = self.seq
        return other


@attrs.frozen
class BookView:
    """A simulator book as floats, best first: what a client's ``L2Book.top()`` should equal."""

    seq: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


def view(book: SimBook, seq: int) -> BookView:
    bids, asks = book.sides()
    return BookView(seq, tuple((float(p), float(q)) for p, q in bids),
                    tuple((float(p), float(q)) for p, q in asks))


@attrs.define(eq=False)
class SimTrade:
    price: str
    qty: str
    buyer_is_maker: bool
    binance_id: int
    bybit_id: str
    bybit_seq: int


class SymbolMarket:
    """One symbol's random walk: taker trades eat the top of the book, makers refill around it."""

    def __init__(self, spec: SymbolSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self._pfmt = f"{{:.{_decimals(spec.tick)}f}}"
        self._qfmt = f"{{:.{_decimals(spec.lot)}f}}"
        mid = self.mid = round(spec.price / spec.tick)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for k in range(spec.levels):
            self.bids[mid - 1 - k] = self._resting_lots()
            self.asks[mid + 1 + k] = self._resting_lots()
        self.next_trade_id = rng.randrange(10**8, 10**9)
        self.next_bybit_id = 2_100_000_000_000_000_000 + rng.randrange(10**9)
        self.bybit_seq = rng.randrange(10**9, 10**10)

    # --- formatting ------------------------------------------------------------------------

    def price(self, ticks: int) -> str:
        return self._pfmt.format(ticks * self.spec.tick)

    def qty(self, lots: int) -> str:
        return self._qfmt.format(lots * self.spec.lot)

    def format_price(self, value: float) -> str:
        return self._pfmt.format(value)

    def wire_book(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = [[self.price(p), self.qty(q)] for p, q in sorted(self.bids.items(), reverse=True)]
        asks = [[self.price(p), self.qty(q)] for p, q in sorted(self.asks.items())]
        return bids, asks

    def top(self) -> tuple[int | None, int, int | None, int]:
        bb = max(self.bids) if self.bids else None
        ba = min(self.asks) if self.asks else None
        return bb, self.bids.get(bb, 0) if bb is not None else 0, ba, self.asks.get(ba, 0) if ba is not None else 0

    # --- sizes --------------------------------------------------------------------------------

    def _lots(self, median: float, sigma: float) -> int:
        size = self.rng.lognormvariate(math.log(median), sigma)
        return max(1, min(round(size / self.spec.lot), 10**12))

    def _trade_lots(self) -> int:
        return self._lots(self.spec.median_qty, 1.1)

    def _resting_lots(self) -> int:
        return self._lots(self.spec.median_qty * 6, 0.9)

    # --- one step ------------------------------------------------------------------------------

    def step(self, n_trades: int, book: bool = True) -> tuple[list[SimTrade], list[tuple[str, str, str]]]:
        """Advance one tick: ``n_trades`` taker trades, then maker activity.

        Returns the trades and the book changes as (side "b"/"a", price, qty)
        with qty "0…" for a removed level, each price at most once.
        """
        rng = self.rng
        changed: dict[tuple[str, int], int] = {}
        trades: list[SimTrade] = []
        if not book:
            return self._walk(n_trades), []
        for _ in range(n_trades):
            buy = rng.random() < 0.5
            levels = self.asks if buy else self.bids
            if not levels:
                continue
            px = min(levels) if buy else max(levels)
            lots = min(self._trade_lots(), levels[px])
            left = levels[px] - lots
            if left:
                levels[px] = left
            else:
                del levels[px]
            changed[("a" if buy else "b", px)] = left
            self.next_bybit_id += 1
            self.bybit_seq += 1
            trades.append(SimTrade(self.price(px), self.qty(lots), not buy, self.next_trade_id,
                                   str(self.next_bybit_id), self.bybit_seq))
            self.next_trade_id += 1
        if book:
            for _ in range(rng.randint(1, 3)):
                self._maker(changed)
            self._keep_depth(changed)
        out = [(side, self.price(px), self.qty(lots)) for (side, px), lots in changed.items()]
        return trades, out

    def _walk(self, n_trades: int) -> list[SimTrade]:
        """Trades without a book (cheap, for throughput runs): the mid drifts a tick at a time."""
        rng = self.rng
        trades = []
        for _ in range(n_trades):
            r = rng.random()
            self.mid += -1 if r < 0.1 else 1 if r > 0.9 else 0
            buy = rng.random() < 0.5
            self.next_bybit_id += 1
            self.bybit_seq += 1
            trades.append(SimTrade(self.price(self.mid + (1 if buy else -1)), self.qty(self._trade_lots()),
                                   not buy, self.next_trade_id, str(self.next_bybit_id), self.bybit_seq))
            self.next_trade_id += 1
        return trades

    def _maker(self, changed: dict[tuple[str, int], int]) -> None:
        rng = self.rng
        side = "b" if rng.random() < 0.5 else "a"
        levels = self.bids if side == "b" else self.asks
        bb = max(self.bids) if self.bids else (min(self.asks) - 1 if self.asks else round(self.spec.price / self.spec.tick))
        ba = min(self.asks) if self.asks else bb + 1
        r = rng.random()
        if levels and r < 0.55:  # resize a resting order
            px = rng.choice(list(levels))
            levels[px] = self._resting_lots()
        elif levels and r < 0.7:  # cancel
            px = rng.choice(list(levels))
            del levels[px]
        else:  # new price: sometimes inside the spread, mostly behind the top
            if ba - bb > 1 and rng.random() < 0.5:
                px = rng.randrange(bb + 1, ba)
            else:
                off = rng.randrange(0, self.spec.levels + 5)
                px = bb - off if side == "b" else ba + off
            if (side == "b" and px >= ba) or (side == "a" and px <= bb):
                return
            levels[px] = self._resting_lots()
        changed[(side, px)] = levels.get(px, 0)

    def _keep_depth(self, changed: dict[tuple[str, int], int]) -> None:
        n = self.spec.levels
        for side, levels in (("b", self.bids), ("a", self.asks)):
            while len(levels) > n:
                px = min(levels) if side == "b" else max(levels)
                del levels[px]
                changed[(side, px)] = 0
            while len(levels) < n // 2:
                if side == "b":
                    px = (min(levels) if levels else (min(self.asks) if self.asks else 1)) - 1
                else:
                    px = (max(levels) if levels else (max(self.bids) if self.bids else 0)) + 1
                if px <= 0:
                    break
                levels[px] = self._resting_lots()
                changed[(side, px)] = levels[px]


# --- klines ------------------------------------------------------------------------------------

BINANCE_INTERVALS: dict[str, int] = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800,
    "1M": 2592000,
}
BYBIT_INTERVALS: dict[str, int] = {
    "1": 60, "3": 180, "5": 300, "15": 900, "30": 1800, "60": 3600, "120": 7200, "240": 14400,
    "360": 21600, "720": 43200, "D": 86400, "W": 604800, "M": 2592000,
}


class Kline:
    """One open candle, updated from trades, the way both venues publish it."""

    __slots__ = ("close", "first_id", "high", "last_id", "low", "open", "quote", "start_ms", "taker_base",
                 "taker_quote", "trades", "volume", "width_ms")

    def __init__(self, start_ms: int, width_ms: int, last_close: float) -> None:
        self.start_ms = start_ms
        self.width_ms = width_ms
        self.open = self.high = self.low = self.close = last_close
        self.volume = self.quote = self.taker_base = self.taker_quote = 0.0
        self.trades = 0
        self.first_id = -1
        self.last_id = -1

    def add(self, price: float, qty: float, trade_id: int, taker_buy: bool) -> None:
        if self.trades == 0:
            self.open = self.high = self.low = price
            self.first_id = trade_id
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += qty
        self.quote += price * qty
        if taker_buy:
            self.taker_base += qty
            self.taker_quote += price * qty
        self.trades += 1
        self.last_id = trade_id
