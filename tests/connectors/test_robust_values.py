"""Market values are checked where they enter: a number no market could mean is refused, counted and reported.

Prices must be finite, > 0 and at most 1e15; trade quantities the same;
book quantities may also be 0 (that deletes the level); kline prices and
volumes must be finite, >= 0 and at most 1e15 and 1e20. A refused value is
never published. It is counted per reason in ``status().refused`` and
reported as a connector error with the frame excerpt, and a book that
refused a level is resynced like after a gap.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing

import flox_trio as flox
from flox_trio import Bar, Book, Trade
from flox_trio.connectors import Binance, Bybit

from .conftest import FAST, RecordingHub, assert_same_book, running, simulator, wait_until

QUIET = {**FAST, "stale_timeout": 10_000.0}
MS = 1_000_000
T0 = 1_700_000_000_000


def binance_trade(t: int, price: Any, qty: Any = "1.00000000", symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {"stream": f"{symbol.lower()}@trade", "data": {
        "e": "trade", "E": T0 + t, "s": symbol, "t": t, "p": price, "q": qty, "T": T0 + t, "m": False, "M": True}}


def binance_diff(first: int, last: int, bids: list[list[Any]], asks: list[list[Any]]) -> dict[str, Any]:
    return {"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": T0 + last, "s": "BTCUSDT", "U": first, "u": last, "b": bids, "a": asks}}


def binance_kline(start_min: int, **values: Any) -> dict[str, Any]:
    k = {"t": T0 + start_min * 60_000, "T": T0 + start_min * 60_000 + 59_999, "s": "BTCUSDT", "i": "1m",
         "f": 1, "L": 2, "o": "100", "c": "101", "h": "102", "l": "99", "v": "5", "n": 2, "x": True,
         "q": "500", "V": "1", "Q": "100", "B": "0"}
    k.update(values)
    return {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": k["T"], "s": "BTCUSDT", "k": k}}


BAD_TRADES = [
    # (price, qty, reason)
    ("NaN", "1", "trade price"),
    ("nan", "1", "trade price"),
    ("inf", "1", "trade price"),
    ("-Infinity", "1", "trade price"),
    ("-5", "1", "trade price"),
    ("0", "1", "trade price"),
    ("0.00000000", "1", "trade price"),
    ("1e300", "1", "trade price"),
    ("1000000000000001", "1", "trade price"),
    ("100", "NaN", "trade quantity"),
    ("100", "-3", "trade quantity"),
    ("100", "0", "trade quantity"),
    ("100", "inf", "trade quantity"),
    ("100", "1e300", "trade quantity"),
]


async def test_binance_trades_with_impossible_values_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            frames = [binance_trade(1, "100.5")]
            frames += [binance_trade(2, p, q) for p, q, _ in BAD_TRADES]
            # The largest value still taken: 1e15 exactly.
            frames += [binance_trade(2, "1000000000000000", "0.00000001")]
            await sim.play("binance", frames)
            await wait_until(lambda: len(hub.trades()) == 2)
            await trio.sleep(1.0)
            st = feed.status()
        assert [(t.trade_id, t.price, t.qty) for t in hub.trades()] == [("1", 100.5, 1.0), ("2", 1e15, 1e-8)]
        assert st.refused == {"trade price": 9, "trade quantity": 5}
        errors = hub.kinds("error")
        assert len(errors) == len(BAD_TRADES) == st.errors
        for (price, qty, reason), error in zip(BAD_TRADES, errors, strict=True):
            assert error["what"] == f"refused {reason}"
            assert f'"p":"{price}"' in error["frame"] and f'"q":"{qty}"' in error["frame"]
            assert "frame skipped, session continues" in error["detail"]
        assert feed.connect_count == 1


async def test_a_json_number_is_checked_like_a_string(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            # JSON numbers: -0.0 is zero, 1e300 is finite but beyond any price; 1e999 is not JSON at all.
            raw = ['{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":1e300,'
                   '"q":"1","T":1,"m":false}}',
                   '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":-0.0,'
                   '"q":"1","T":1,"m":false}}',
                   '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":7,'
                   '"q":2,"T":1,"m":false}}']
            for text in raw:
                sim.faults.send_raw(text, "binance")
            await wait_until(lambda: len(hub.trades()) == 1)
            await trio.sleep(1.0)
        assert [(t.price, t.qty) for t in hub.trades()] == [(7.0, 2.0)]
        assert feed.status().refused == {"trade price": 2}


async def test_a_refused_depth_level_resyncs_the_book(autojump_clock: trio.testing.MockClock) -> None:
    bad_levels: list[tuple[list[list[Any]], list[list[Any]], str]] = [
        ([["-5", "1"]], [], "level price"),
        ([["0", "1"]], [], "level price"),
        ([], [["inf", "1"]], "level price"),
        ([], [["NaN", "1"]], "level price"),
        ([["1e300", "1"]], [], "level price"),
        ([["99", "-1"]], [], "level quantity"),
        ([], [["101", "NaN"]], "level quantity"),
        ([["99", "1e300"]], [], "level quantity"),
    ]
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("depth",), **QUIET)
        sim.set_binance_book("BTCUSDT", 100, [["99", "1"], ["98", "1"]], [["101", "1"]])
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            # Quantity 0 still deletes a level.
            await sim.play("binance", [binance_diff(101, 101, [["98", "0"]], [])])
            await wait_until(lambda: feed.book_synced("BTCUSDT") and len(hub.books()) == 1)
            seq = 101
            for bids, asks, _ in bad_levels:
                # The venue's real book moved on to seq + 1; the frame that says so is broken.
                sim.set_binance_book("BTCUSDT", seq + 1, [["99", str(seq)]], [["101", "1"]])
                syncs = feed.book_syncs
                await sim.play("binance", [binance_diff(seq + 1, seq + 1, bids, asks)], update_books=False)
                await wait_until(lambda s=syncs: feed.book_syncs == s + 1 and feed.book_synced("BTCUSDT"))
                assert_same_book(feed.book("BTCUSDT"), sim.binance_book("BTCUSDT"))
                seq += 1
            st = feed.status()
        assert hub.books()[0].bids == ((99.0, 1.0),)
        for book in hub.books():
            for price, qty in (*book.bids, *book.asks):
                assert 0 < price < 1e15 and 0 < qty < 1e15
        assert st.refused == {"level price": 5, "level quantity": 3}
        assert [e["what"] for e in hub.kinds("error")] == [f"refused {r}" for _, _, r in bad_levels]
        assert len(hub.kinds("gap")) == len(bad_levels)
        assert len(hub.kinds("resync")) == len(bad_levels)
        assert feed.connect_count == 1


async def test_binance_klines_with_impossible_values_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("kline_1m",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("binance", [
                binance_kline(0, o="NaN"), binance_kline(1, h="inf"), binance_kline(2, l="-1"),
                binance_kline(3, v="-5"), binance_kline(4, c="1e300"), binance_kline(5, v="1e300"),
                binance_kline(6, o="0", l="0", v="0"),  # zero is a quiet minute, not nonsense
                binance_kline(7)])
            await wait_until(lambda: len(hub.bars()) == 2)
            await trio.sleep(1.0)
        assert [b.start_ts_ns for b in hub.bars()] == [(T0 + 6 * 60_000) * MS, (T0 + 7 * 60_000) * MS]
        assert feed.status().refused == {"kline price": 4, "kline volume": 2}


def bybit_trades(*trades: tuple[str, str, str]) -> dict[str, Any]:
    return {"topic": "publicTrade.BTCUSDT", "ts": T0, "type": "snapshot", "data": [
        {"i": i, "T": T0, "p": p, "v": v, "S": "Buy", "s": "BTCUSDT", "BT": False} for i, p, v in trades]}


def bybit_book(kind: str, u: int, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
    return {"topic": "orderbook.50.BTCUSDT", "ts": T0 + u, "type": kind, "cts": T0 + u,
            "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": u}}


async def test_bybit_refuses_the_bad_trades_of_a_frame_and_keeps_the_good(
        autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("publicTrade",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("bybit", [bybit_trades(("a", "100", "1"), ("b", "NaN", "1"), ("c", "101", "-2"),
                                                  ("d", "102", "1"), ("e", "1e300", "1"))])
            await wait_until(lambda: len(hub.trades()) == 2)
            await trio.sleep(1.0)
        assert [t.trade_id for t in hub.trades()] == ["a", "d"]
        assert len(hub.batches) == 1
        assert feed.status().refused == {"trade price": 2, "trade quantity": 1}
        (error,) = hub.kinds("error")
        assert error["what"] == "refused trade price" and '"i":"b"' in error["frame"]
        assert "3 trades" in error["detail"]


async def test_bybit_resubscribes_a_book_that_refused_a_level(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        sim.set_bybit_book("BTCUSDT", 500, [["100", "1"]], [["101", "1"]])
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("orderbook.50",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.book_synced("BTCUSDT") and len(hub.books()) == 1)
            sim.set_bybit_book("BTCUSDT", 501, [["100", "2"]], [["101", "1"]])
            await sim.play("bybit", [bybit_book("delta", 501, [["-100", "2"]], [])], update_books=False)
            await wait_until(lambda: feed.resyncs == 1 and feed.book_synced("BTCUSDT"))
            assert_same_book(feed.book("BTCUSDT"), sim.bybit_book("BTCUSDT"))
            # A refused snapshot leaves the book unsynced until a good one comes.
            await sim.play("bybit", [bybit_book("snapshot", 502, [["100", "inf"]], [])], update_books=False)
            await wait_until(lambda: feed.resyncs == 2)
            st = feed.status()
        assert [b.seq for b in hub.books()] == [500, 501, 501]
        assert st.refused == {"level price": 1, "level quantity": 1}
        assert all(p > 0 and 0 < q < 1e15 for b in hub.books() for p, q in (*b.bids, *b.asks))


async def test_bybit_klines_with_impossible_values_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    def kline(minute: int, **values: str) -> dict[str, Any]:
        k = {"start": T0 + minute * 60_000, "end": T0 + minute * 60_000 + 59_999, "interval": "1",
             "open": "1", "close": "2", "high": "3", "low": "1", "volume": "4", "turnover": "5", "confirm": True,
             "timestamp": T0}
        k.update(values)
        return {"topic": "kline.1.BTCUSDT", "ts": T0, "type": "snapshot", "data": [k]}

    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("kline.1",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("bybit", [kline(0, open="NaN"), kline(1, volume="-1"), kline(2)])
            await wait_until(lambda: len(hub.bars()) == 1)
            await trio.sleep(1.0)
        (bar,) = hub.bars()
        assert type(bar) is Bar and bar.open == 1.0
        assert feed.status().refused == {"kline price": 1, "kline volume": 1}


class RestingBuy(flox.Strategy):
    """Rests a limit buy at 100 on the first trade, and remembers every trade and fill."""

    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.prices: list[float] = []
        self.fills: list[flox.Fill] = []
        self.accepted = False

    def on_trade(self, ctx: flox.Context, trade: Trade) -> None:
        self.prices.append(trade.price)
        if len(self.prices) == 1:
            ctx.limit_buy(100, 1)

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        if update.status == "accepted":
            self.accepted = True

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        self.fills.append(fill)


@pytest.mark.parametrize("price", ["NaN", "-5", "inf", "0", "1e300", "-Infinity"])
async def test_a_resting_paper_order_never_sees_an_impossible_trade(
        price: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        feed = Binance([], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("trade",), **QUIET)
        strategy = RestingBuy(["BTCUSDT"])
        async with flox.open_runner(feed) as runner:
            runner.add_strategy(strategy)
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("binance", [binance_trade(1, "200")])
            await wait_until(lambda: strategy.accepted)
            await sim.play("binance", [binance_trade(2, price), binance_trade(3, "150")])
            await wait_until(lambda: len(strategy.prices) == 2)
            await trio.sleep(1.0)
            status = runner.status()
        assert strategy.prices == [200.0, 150.0]
        assert strategy.fills == []
        assert status.slots[0].state == "running"
        assert status.feed.refused == {"trade price": 1}  # type: ignore[attr-defined]
        # The refused trade's id never reached the strategy: a gap, told before trade 3.
        assert status.slots[0].missed == {"BTCUSDT": 1}


def test_decoding_a_bad_frame_never_publishes_half_of_it() -> None:
    """A Binance diff whose second level is bad applies nothing (the book would be half the venue's)."""
    from flox_trio.connectors._binance import BinanceVenue
    from flox_trio.connectors._options import SessionOptions

    from .conftest import RecordingLink, RecordingPort

    v = BinanceVenue("wss://x", "https://x", ("bookTicker",), SessionOptions())
    port = RecordingPort(["BTCUSDT"])
    v.bind(port)
    v.symbols_changed(frozenset({"BTCUSDT"}), frozenset())
    good = orjson.dumps({"stream": "btcusdt@bookTicker",
                         "data": {"u": 5, "s": "BTCUSDT", "b": "1", "B": "2", "a": "3", "A": "4"}})
    bad = orjson.dumps({"stream": "btcusdt@bookTicker",
                        "data": {"u": 6, "s": "BTCUSDT", "b": "1", "B": "2", "a": "-3", "A": "4"}})
    events = v.decode(RecordingLink(), good, 1)
    assert events is not None and type(events[0]) is Book
    assert v.decode(RecordingLink(), bad, 2) is None
    assert port.refusals == [("level price", bad)]


async def test_a_flood_of_garbage_is_counted_in_full_and_reported_in_moderation(
        autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade",), **QUIET)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            await sim.play("binance", [binance_trade(i, "NaN") for i in range(1, 2001)])
            await wait_until(lambda: feed.errors == 2000)
            await trio.sleep(3.0)
            await sim.play("binance", [binance_trade(2001, "NaN"), binance_trade(2002, "100")])
            await wait_until(lambda: len(hub.trades()) == 1)
            st = feed.status()
        assert st.refused == {"trade price": 2001} and st.errors == 2001
        reports = hub.kinds("error")
        # A burst of 20, then about one a second; the next one says how many it stands for.
        assert 20 <= len(reports) <= 25
        assert sum(1 + r.get("held_back", 0) for r in reports) == 2001
        assert reports[-1]["held_back"] > 0 and "more like it since the last report" in reports[-1]["detail"]
        assert feed.connect_count == 1
