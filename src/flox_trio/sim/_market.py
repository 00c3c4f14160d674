"""The simulated market: a seeded random walk of trades and an L2 book per symbol.

The generator works in integer ticks and lots so the book never accumulates
float error, and it knows nothing of the wire: each venue renders ticks and
lots the way it does on the wire (``sim/_binance.py``, ``sim/_bybit.py``) and
keeps its own mirror of the book, keyed by its own price strings, with its own
sequence numbers (Binance update ids, Bybit ``u``/``seq``), because that is
what a client syncs against and what tests compare a client's book with.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

import attrs

from .._errors import ConfigError

#: A book side on the wire of both venues: bids and asks.
Side = Literal["b", "a"]
#: One price level as the venues send it: [price, quantity].
WireLevel = list[str]


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
    #: Market steps (taker trades, then makers) per tick, on average, in (0, 1]: 1 steps every
    #: tick; 0.001 about once in a thousand ticks, at random (a quiet symbol of a whole market).
    activity: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not 0.0 < self.activity <= 1.0:
            raise ConfigError(f"sim symbol {self.symbol}: activity must be within (0, 1] steps per tick, "
                              f"got {self.activity!r}")


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCUSDT", 43_000.0, tick=0.01, lot=0.00001, median_qty=0.004),
    SymbolSpec("ETHUSDT", 2_300.0, tick=0.01, lot=0.0001, median_qty=0.08),
    SymbolSpec("SOLUSDT", 95.0, tick=0.01, lot=0.001, median_qty=2.0),
)


def whole_market(n: int, *, skew: float = 1.0, activity: float = 1.0) -> tuple[SymbolSpec, ...]:
    """``n`` symbols as a whole market trades: a few very active, a long quiet tail.

    The first are ``DEFAULT_SYMBOLS``, then ``S0004USDT``, ``S0005USDT``, ...;
    the symbol of rank r steps ``activity / r**skew`` times per tick (Zipf's
    law, as venues' volumes roughly follow), so at ``skew=1`` the 500th symbol
    moves about once in 500 ticks. ``skew=0``: every symbol alike (each tick
    moves ``n * activity`` symbols on average, drawn at random).
    """
    if n < 1:
        raise ConfigError(f"sim market: at least one symbol, got {n}")
    if not 0.0 <= skew <= 4.0:
        raise ConfigError(f"sim market skew must be within [0, 4], got {skew!r}")
    specs = []
    for rank in range(1, n + 1):
        base = DEFAULT_SYMBOLS[rank - 1] if rank <= len(DEFAULT_SYMBOLS) else SymbolSpec(f"S{rank:04d}USDT", 100.0)
        specs.append(attrs.evolve(base, activity=activity / rank**skew))
    return tuple(specs)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for the handful of steps per tick it is meant for)."""
    if mean > 30.0:  # Knuth's loop grows with the mean (and exp(-mean) underflows): the normal limit
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def spec_for(symbol: str) -> SymbolSpec:
    for spec in DEFAULT_SYMBOLS:
        if spec.symbol == symbol:
            return spec
    return SymbolSpec(symbol, 100.0)


def decimals(step: float) -> int:
    """Decimal places that write ``step`` exactly (0.25 → 2, 1.0 → 0, 1e-05 → 5)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    assert isinstance(exponent, int), f"not a finite step: {step}"
    return max(0, -exponent)


def in_units(step: float, places: int) -> int:
    """``step`` as a whole number of ``10**-places`` (0.01 at 8 places → 1_000_000)."""
    return round(Decimal(repr(step)).scaleb(places))


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

    def set(self, side: Side, price: str, qty: str) -> None:
        levels = self.bids if side == "b" else self.asks
        if float(qty) == 0:
            levels.pop(price, None)
        else:
            levels[price] = qty

    def apply(self, bids: Iterable[WireLevel], asks: Iterable[WireLevel]) -> None:
        for p, q in bids:
            self.set("b", p, q)
        for p, q in asks:
            self.set("a", p, q)

    def reset(self, bids: Iterable[WireLevel], asks: Iterable[WireLevel]) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(bids, asks)

    def sides(self, limit: int | None = None) -> tuple[list[WireLevel], list[WireLevel]]:
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


# Not frozen: one is built per generated trade, and a frozen attrs class takes three times as long.
@attrs.define(eq=False)
class SimTrade:
    """One taker trade, in ticks and lots, with the id each venue gives it."""

    ticks: int
    lots: int
    buyer_is_maker: bool
    binance_id: int
    bybit_id: int
    bybit_seq: int


#: The largest size, in lots, a trade or a resting order is drawn with.
_MAX_LOTS = 10**12
#: The spread (sigma of the log) of trade and resting sizes around their medians.
_TRADE_SIGMA = 1.1
_RESTING_SIGMA = 0.9

#: A level that changed in one step: (side, price in ticks, quantity in lots; 0 = removed).
Change = tuple[Side, int, int]
#: One side of the book in ticks and lots, best first.
Levels = list[tuple[int, int]]


class SymbolMarket:
    """One symbol's random walk: taker trades eat the top of the book, makers refill around it."""

    def __init__(self, spec: SymbolSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self._log_trade = math.log(spec.median_qty)
        self._log_resting = math.log(spec.median_qty * 6)
        mid = self.mid = round(spec.price / spec.tick)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for k in range(spec.levels):
            self.bids[mid - 1 - k] = self._resting_lots()
            self.asks[mid + 1 + k] = self._resting_lots()
        self.next_trade_id = rng.randrange(10**8, 10**9)
        self.next_bybit_id = 2_100_000_000_000_000_000 + rng.randrange(10**9)
        self.bybit_seq = rng.randrange(10**9, 10**10)

    def levels(self) -> tuple[Levels, Levels]:
        """The whole book, best first."""
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())

    def top(self) -> tuple[int | None, int, int | None, int]:
        bb = max(self.bids) if self.bids else None
        ba = min(self.asks) if self.asks else None
        return bb, self.bids.get(bb, 0) if bb is not None else 0, ba, self.asks.get(ba, 0) if ba is not None else 0

    # --- sizes --------------------------------------------------------------------------------

    def _lots(self, log_median: float, sigma: float) -> int:
        size = self.rng.lognormvariate(log_median, sigma)
        return max(1, min(round(size / self.spec.lot), _MAX_LOTS))

    def _trade_lots(self) -> int:
        return self._lots(self._log_trade, _TRADE_SIGMA)

    def _resting_lots(self) -> int:
        return self._lots(self._log_resting, _RESTING_SIGMA)

    # --- one step ------------------------------------------------------------------------------

    def step(self, n_trades: int, book: bool = True) -> tuple[list[SimTrade], list[Change]]:
        """Advance one tick: ``n_trades`` taker trades, then maker activity.

        Returns the trades and the book changes, each price at most once.
        """
        if not book:
            return self._walk(n_trades), []
        rng = self.rng
        changed: dict[tuple[Side, int], int] = {}
        trades: list[SimTrade] = []
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
            trades.append(SimTrade(px, lots, not buy, self.next_trade_id, self.next_bybit_id, self.bybit_seq))
            self.next_trade_id += 1
        for _ in range(rng.randint(1, 3)):
            self._maker(changed)
        self._keep_depth(changed)
        return trades, [(side, px, lots) for (side, px), lots in changed.items()]

    def _walk(self, n_trades: int) -> list[SimTrade]:
        """Trades without a book (cheap, for throughput runs): the mid drifts a tick at a time."""
        # The load generator of the latency benchmarks: ``_trade_lots`` written out, the same
        # draws in the same order (``lognormvariate`` is ``exp(normalvariate)``), without its calls.
        rng = self.rng
        random, normal = rng.random, rng.normalvariate
        mu, lot = self._log_trade, self.spec.lot
        trades = []
        for _ in range(n_trades):
            r = random()
            self.mid += -1 if r < 0.1 else 1 if r > 0.9 else 0
            buy = random() < 0.5
            self.next_bybit_id += 1
            self.bybit_seq += 1
            lots = max(1, min(round(math.exp(normal(mu, _TRADE_SIGMA)) / lot), _MAX_LOTS))
            trades.append(SimTrade(self.mid + (1 if buy else -1), lots, not buy, self.next_trade_id,
                                   self.next_bybit_id, self.bybit_seq))
            self.next_trade_id += 1
        return trades

    def _maker(self, changed: dict[tuple[Side, int], int]) -> None:
        rng = self.rng
        side: Side = "b" if rng.random() < 0.5 else "a"
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

    def _keep_depth(self, changed: dict[tuple[Side, int], int]) -> None:
        n = self.spec.levels
        sides: tuple[tuple[Side, dict[int, int]], ...] = (("b", self.bids), ("a", self.asks))
        for side, levels in sides:
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


class Kline:
    """One open candle, updated from trades, the way both venues publish it.

    Kept in ticks and lots (and tick x lot for turnover) so each venue renders
    exact decimals however many trades it sums.
    """

    __slots__ = ("close", "first_id", "high", "last_id", "low", "open", "quote", "start_ms", "taker_base",
                 "taker_quote", "trades", "volume", "width_ms")

    def __init__(self, start_ms: int, width_ms: int, last_close: int) -> None:
        self.start_ms = start_ms
        self.width_ms = width_ms
        self.open = self.high = self.low = self.close = last_close
        self.volume = self.quote = self.taker_base = self.taker_quote = 0
        self.trades = 0
        self.first_id = -1
        self.last_id = -1

    def add(self, ticks: int, lots: int, trade_id: int, taker_buy: bool) -> None:
        if self.trades == 0:
            self.open = self.high = self.low = ticks
            self.first_id = trade_id
        self.high = max(self.high, ticks)
        self.low = min(self.low, ticks)
        self.close = ticks
        self.volume += lots
        self.quote += ticks * lots
        if taker_buy:
            self.taker_base += lots
            self.taker_quote += ticks * lots
        self.trades += 1
        self.last_id = trade_id
