"""Market state derived from raw updates: L2 books and time bars."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from .._errors import FloxError
from ._events import Bar, Book, Event, Level, Trade


class L2Book:
    """A price-level order book maintained from snapshots and deltas.

    Prices are kept sorted (bids descending, asks ascending) with ``bisect``,
    so producing the top N levels for a ``Book`` event costs O(N), not a sort.
    A delta level with quantity 0 removes the level.
    """

    __slots__ = ("_ask_px", "_asks", "_bid_keys", "_bids", "seq", "symbol", "venue")

    def __init__(self, symbol: str, venue: str = "") -> None:
        self.symbol = symbol
        self.venue = venue
        self.seq = 0
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # negated prices, ascending = best bid first
        self._ask_px: list[float] = []  # ascending = best ask first

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_keys.clear()
        self._ask_px.clear()
        self.seq = 0

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], seq: int = 0) -> None:
        self.clear()
        self.apply_delta(bids, asks, seq)

    def apply_delta(self, bids: Iterable[Level], asks: Iterable[Level], seq: int = 0) -> None:
        for price, qty in bids:
            _set_level(self._bids, self._bid_keys, -price, price, qty)
        for price, qty in asks:
            _set_level(self._asks, self._ask_px, price, price, qty)
        if seq:
            self.seq = seq

    @property
    def best_bid(self) -> float | None:
        return -self._bid_keys[0] if self._bid_keys else None

    @property
    def best_ask(self) -> float | None:
        return self._ask_px[0] if self._ask_px else None

    @property
    def crossed(self) -> bool:
        bb, ba = self.best_bid, self.best_ask
        return bb is not None and ba is not None and bb >= ba

    def depth(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)

    def top(self, n: int = 20) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        bids, asks = self._bids, self._asks
        return (
            tuple((-k, bids[-k]) for k in self._bid_keys[:n]),
            tuple((p, asks[p]) for p in self._ask_px[:n]),
        )

    def to_event(self, *, exchange_ts_ns: int = 0, recv_ts_ns: int = 0, depth: int = 20) -> Book:
        bids, asks = self.top(depth)
        return Book(self.symbol, bids, asks, exchange_ts_ns, recv_ts_ns, self.venue, self.seq)


def _set_level(levels: dict[float, float], keys: list[float], key: float, price: float, qty: float) -> None:
    if qty < 0 or price != price or qty != qty:
        raise FloxError(f"bad book level ({price!r}, {qty!r}): price and quantity must be numbers >= 0")
    if qty == 0:
        if levels.pop(price, None) is not None:
            del keys[bisect_left(keys, key)]
        return
    if price not in levels:
        keys.insert(bisect_left(keys, key), key)
    levels[price] = qty


class BarAggregator:
    """Time bars from trades, on the trades' own clock (exchange time, else receive time).

    Bars close when the first trade of a later interval arrives; ``flush``
    closes the open ones (end of data). Using event time rather than the wall
    clock makes bars identical live and on replay.
    """

    def __init__(self, intervals_s: Iterable[float]) -> None:
        self.intervals = tuple(sorted({float(i) for i in intervals_s}))
        for i in self.intervals:
            if i <= 0:
                raise FloxError(f"bar interval must be > 0 seconds, got {i}")
        self._ns = tuple(int(i * 1e9) for i in self.intervals)
        # (symbol, interval index) -> [start, open, high, low, close, volume, count, venue]
        self._open: dict[tuple[str, int], list[Any]] = {}

    def on_trade(self, t: Trade, out: list[Event]) -> None:
        ts = t.exchange_ts_ns or t.recv_ts_ns
        price, qty = t.price, t.qty
        for k, width in enumerate(self._ns):
            start = ts - ts % width
            key = (t.symbol, k)
            cur = self._open.get(key)
            if cur is None or cur[0] != start:
                if cur is not None:
                    if start < cur[0]:  # an out-of-order trade stays in the open bar
                        self._update(cur, price, qty)
                        continue
                    out.append(self._bar(t.symbol, k, cur))
                self._open[key] = [start, price, price, price, price, qty, 1, t.venue]
            else:
                self._update(cur, price, qty)

    @staticmethod
    def _update(cur: list[Any], price: float, qty: float) -> None:
        if price > cur[2]:
            cur[2] = price
        elif price < cur[3]:
            cur[3] = price
        cur[4] = price
        cur[5] += qty
        cur[6] += 1

    def _bar(self, symbol: str, k: int, cur: list[Any]) -> Bar:
        start = cur[0]
        return Bar(symbol, cur[1], cur[2], cur[3], cur[4], cur[5], cur[6], start,
                   start + self._ns[k], self.intervals[k], cur[7])

    def process(self, batch: list[Event]) -> list[Event]:
        """Return ``batch`` with each closed bar inserted before the trade that closed it."""
        out: list[Event] = []
        for ev in batch:
            if ev.__class__ is Trade:
                self.on_trade(ev, out)
            out.append(ev)
        return out

    def flush(self) -> list[Bar]:
        bars = [self._bar(sym, k, cur) for (sym, k), cur in self._open.items()]
        self._open.clear()
        return bars
