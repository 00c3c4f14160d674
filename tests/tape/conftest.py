from __future__ import annotations

import struct
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs
import msgspec
import trio
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.tape._format import looks_secret

BASE_NS = 1_700_000_000_000_000_000


def make_trades(n: int, start: int = 0, symbol: str = "BTCUSDT", step_ns: int = 1_000) -> list[flox.Trade]:
    return [
        flox.Trade(symbol, 100.0 + (i % 97) * 0.5, 0.001 * (i % 13 + 1), "buy" if i % 2 else "sell",
                   str(i), BASE_NS + i * step_ns, BASE_NS + i * step_ns + 7, "binance")
        for i in range(start, start + n)
    ]


def canon(x: Any) -> Any:
    """A value that compares equal only when the two values are exactly the same.

    Floats by bit pattern (NaN payloads, -0.0), Decimals by sign/digits/exponent
    (so 1.0 != 1.00), and every value tagged with its exact type.
    """
    if isinstance(x, float):
        return ("float", struct.pack("<d", x))
    if isinstance(x, Decimal):
        return ("Decimal", x.as_tuple())
    if isinstance(x, tuple | list):
        return (type(x).__name__, tuple(canon(v) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple((canon(k), canon(v)) for k, v in x.items()))
    if attrs.has(type(x)):
        return (type(x).__name__, tuple(canon(getattr(x, f.name)) for f in attrs.fields(type(x))))
    if isinstance(x, msgspec.Struct):
        return (type(x).__name__, tuple(canon(getattr(x, f)) for f in x.__struct_fields__))
    return (type(x).__name__, x)


# --- hypothesis strategies ---------------------------------------------------------------

# Any float64 bit pattern, including NaNs with payloads, signed zeros and infinities.
any_float = st.one_of(
    st.floats(),
    st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]),
)
int64 = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**53) - 1]),
)
text = st.text(st.characters(codec="utf-8"), max_size=16)
decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal(s) for s in (
        "sNaN", "-sNaN", "NaN123", "-0", "0E-30", "1E+400", "-1.2300",
        "12345678901234567890.123456789012345678901234567890",
    )]),
)
levels = st.lists(st.tuples(any_float, any_float), max_size=5).map(tuple)

# The vocabularies are Literals: a tape holding any other side, type or status is refused on read.
sides = st.sampled_from(["buy", "sell"])
order_types = st.sampled_from(["market", "limit"])
statuses = st.sampled_from(["new", "accepted", "partially_filled", "filled", "canceled", "rejected"])
liquidities = st.sampled_from(["maker", "taker"])
trades = st.builds(flox.Trade, symbol=text, price=any_float, qty=any_float, side=sides, trade_id=text,
                   exchange_ts_ns=int64, recv_ts_ns=int64, venue=text)
books = st.builds(flox.Book, symbol=text, bids=levels, asks=levels, exchange_ts_ns=int64, recv_ts_ns=int64,
                  venue=text, seq=int64)
bars = st.builds(flox.Bar, symbol=text, open=any_float, high=any_float, low=any_float, close=any_float,
                 volume=any_float, trade_count=int64, start_ts_ns=int64, end_ts_ns=int64,
                 interval_s=any_float, venue=text)
order_updates = st.builds(flox.OrderUpdate, order_id=text, symbol=text, side=sides, order_type=order_types,
                          status=statuses, qty=decimals, filled_qty=decimals, price=st.none() | decimals,
                          avg_fill_price=st.none() | decimals, reason=text, ts_ns=int64, slot=int64,
                          venue=text)
fills = st.builds(flox.Fill, order_id=text, symbol=text, side=sides, price=decimals, qty=decimals,
                  fee=decimals, liquidity=liquidities, ts_ns=int64, trade_id=text, slot=int64, venue=text)
gaps = st.builds(flox.Gap, symbol=text, reason=st.sampled_from(["trade_ids", "dropped"]), missing=int64,
                 first_id=text, last_id=text, exchange_ts_ns=int64, recv_ts_ns=int64, venue=text)
events = st.one_of(trades, books, bars, gaps, order_updates, fills)

# Batches are mostly one type (as the engine publishes them) and sometimes mixed.
batches = st.one_of(
    st.lists(events, min_size=1, max_size=20),
    st.lists(trades, min_size=1, max_size=40),
    st.lists(books, min_size=1, max_size=10),
)

json_keys = text.filter(lambda k: not looks_secret(k))
json_values = st.recursive(
    st.none() | st.booleans() | int64 | any_float | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=12,
)
json_dicts = st.dictionaries(json_keys, json_values, max_size=5)


# --- a feed hub that collects --------------------------------------------------------------


class CollectingHub:
    """A FeedHub that records each published batch with the Trio time it arrived."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.times: list[float] = []

    async def publish(self, events: Sequence[Any]) -> None:
        self.times.append(trio.current_time())
        self.batches.append(list(events))
        await trio.lowlevel.checkpoint()

    @property
    def watched_symbols(self) -> frozenset[str]:
        return frozenset()

    async def wait_watch_changed(self) -> None:
        await trio.sleep_forever()

    def connector_event(self, kind: str, **info: Any) -> None:
        raise AssertionError("a tape feed reports no connector events")
