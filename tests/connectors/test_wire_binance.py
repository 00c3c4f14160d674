"""The documented Binance Spot messages, verbatim, through the connector: every decoded field.

Messages are copied from Binance ``web-socket-streams.md`` / ``rest-api.md``
(comments stripped by ``doc_json``) and played by the simulator inside the
combined-stream envelope ``{"stream": ..., "data": ...}``.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from flox_trio import Bar, Book, Trade
from flox_trio.connectors import Binance
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, assert_same_book, doc_json, running, simulator, wait_until

DOC_TRADE = doc_json("""
{
    "e": "trade",           // Event type
    "E": 1672515782136,     // Event time
    "s": "BNBBTC",          // Symbol
    "t": 12345,             // Trade ID
    "p": "0.001",           // Price
    "q": "100",             // Quantity
    "T": 1672515782136,     // Trade time
    "m": true,              // Is the buyer the market maker?
    "M": true               // Ignore
}
""")

DOC_AGG_TRADE = doc_json("""
{
    "e": "aggTrade",        // Event type
    "E": 1672515782136,     // Event time
    "s": "BNBBTC",          // Symbol
    "a": 12345,             // Aggregate trade ID
    "p": "0.001",           // Price
    "q": "100",             // Quantity
    "f": 100,               // First trade ID
    "l": 105,               // Last trade ID
    "T": 1672515782136,     // Trade time
    "m": true,              // Is the buyer the market maker?
    "M": true               // Ignore
}
""")

DOC_KLINE = doc_json("""
{
    "e": "kline",               // Event type
    "E": 1672515782136,         // Event time
    "s": "BNBBTC",              // Symbol
    "k": {
        "t": 1672515780000,     // Kline start time
        "T": 1672515839999,     // Kline close time
        "s": "BNBBTC",          // Symbol
        "i": "1m",              // Interval
        "f": 100,               // First trade ID
        "L": 200,               // Last trade ID
        "o": "0.0010",          // Open price
        "c": "0.0020",          // Close price
        "h": "0.0025",          // High price
        "l": "0.0015",          // Low price
        "v": "1000",            // Base asset volume
        "n": 100,               // Number of trades
        "x": false,             // Is this kline closed?
        "q": "1.0000",          // Quote asset volume
        "V": "500",             // Taker buy base asset volume
        "Q": "0.500",           // Taker buy quote asset volume
        "B": "123456"           // Ignore
    }
}
""")

DOC_BOOK_TICKER = doc_json("""
{
    "u": 400900217,         // order book updateId
    "s": "BNBUSDT",         // symbol
    "b": "25.35190000",     // best bid price
    "B": "31.21000000",     // best bid qty
    "a": "25.36520000",     // best ask price
    "A": "40.66000000"      // best ask qty
}
""")

DOC_DEPTH = doc_json("""
{
    "e": "depthUpdate",     // Event type
    "E": 1672515782136,     // Event time
    "s": "BNBBTC",          // Symbol
    "U": 157,               // First update ID in event
    "u": 160,               // Final update ID in event
    "b": [                  // Bids to be updated
        [
            "0.0024",       // Price level to be updated
            "10"            // Quantity
        ]
    ],
    "a": [                  // Asks to be updated
        [
            "0.0026",       // Price level to be updated
            "100"           // Quantity
        ]
    ]
}
""")

DOC_REST_DEPTH = doc_json("""
{
    "lastUpdateId": 1027024,
    "bids": [
        [
            "4.00000000",      // PRICE
            "431.00000000"     // QTY
        ]
    ],
    "asks": [["4.00000200", "12.00000000"]]
}
""")

DOC_SERVER_SHUTDOWN = doc_json("""
{
  "stream": "!serverShutdown",
  "data": {
    "e": "serverShutdown", // Event type
    "E": 1770123456789     // Event time
  }
}
""")

DOC_SUBSCRIBE = doc_json("""
{
    "method": "SUBSCRIBE",
    "params": ["btcusdt@aggTrade", "btcusdt@depth"],
    "id": 1
}
""")

CHANNELS = ("trade", "aggTrade", "bookTicker", "depth", "kline_1m")
MS = 1_000_000


def wrap(stream: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"stream": stream, "data": data}


async def start(sim: Simulator, hub: RecordingHub, **options: Any) -> Binance:
    # Recorded frames come only when played: no watchdog reconnects in between.
    feed = Binance(["BNBBTC", "BNBUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                   channels=CHANNELS, **{**FAST, "stale_timeout": 10_000.0, **options})
    return feed


async def test_documented_messages_decode_field_by_field(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BNBBTC", "BNBUSDT"]) as sim:
        hub = RecordingHub()
        feed = await start(sim, hub)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BNBBTC", "BNBUSDT"})
            conn = sim.open_connections("binance")[0]
            # New symbols are subscribed live, in the documented request shape.
            request = orjson.loads(conn.received[0])
            assert set(request) == set(DOC_SUBSCRIBE)
            assert request["method"] == "SUBSCRIBE"
            assert request["id"] == 1
            assert sorted(request["params"]) == sorted(f"{s}@{c}" for s in ("bnbbtc", "bnbusdt")
                                                          for c in ("trade", "aggTrade", "bookTicker",
                                                                    "depth@100ms", "kline_1m"))

            await sim.play("binance", [wrap("bnbbtc@trade", DOC_TRADE)])
            await wait_until(lambda: len(hub.events) == 1)
            trade = hub.events[0]
            assert type(trade) is Trade
            assert (trade.symbol, trade.price, trade.qty, trade.side, trade.trade_id) == \
                ("BNBBTC", 0.001, 100.0, "sell", "12345")  # m: buyer is maker, so the taker sold
            assert trade.exchange_ts_ns == 1672515782136 * MS
            assert trade.venue == "binance"
            assert trade.recv_ts_ns > 0

            await sim.play("binance", [wrap("bnbbtc@aggTrade", DOC_AGG_TRADE)])
            await wait_until(lambda: len(hub.events) == 2)
            agg = hub.events[1]
            assert (agg.symbol, agg.price, agg.qty, agg.side, agg.trade_id, agg.exchange_ts_ns, agg.venue) == \
                ("BNBBTC", 0.001, 100.0, "sell", "12345", 1672515782136 * MS, "binance")

            # An open kline (x false) is not a bar yet; the same kline closed is.
            closed = {**DOC_KLINE, "k": {**DOC_KLINE["k"], "x": True}}
            await sim.play("binance", [wrap("bnbbtc@kline_1m", DOC_KLINE), wrap("bnbbtc@kline_1m", closed)])
            await wait_until(lambda: len(hub.events) == 3)
            bar = hub.events[2]
            assert type(bar) is Bar
            assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == \
                ("BNBBTC", 0.0010, 0.0025, 0.0015, 0.0020, 1000.0, 100)
            assert bar.start_ts_ns == 1672515780000 * MS
            assert bar.end_ts_ns == 1672515840000 * MS
            assert bar.interval_s == 60.0
            assert bar.venue == "binance"
            assert len(hub.batches) == 3  # the open kline published nothing; one batch per frame

            # BNBUSDT has no synced depth book yet: the ticker is a one-level book.
            await sim.play("binance", [wrap("bnbusdt@bookTicker", DOC_BOOK_TICKER)])
            await wait_until(lambda: len(hub.events) == 4)
            top = hub.events[3]
            assert type(top) is Book
            assert (top.symbol, top.bids, top.asks, top.seq) == \
                ("BNBUSDT", ((25.3519, 31.21),), ((25.3652, 40.66),), 400900217)
            assert top.exchange_ts_ns == 0  # bookTicker carries no event time
            assert top.venue == "binance"

            # The documented diff (U=157, u=160) against a snapshot at 157: step 5 wants the first
            # kept diff to hold lastUpdateId within its [U; u].
            sim.set_binance_book("BNBBTC", 157, [["0.0023", "5"]], [["0.0027", "7"]])
            # The REST book stays at 157 so the diff is applied from the client's buffer (step 7).
            await sim.play("binance", [wrap("bnbbtc@depth@100ms", DOC_DEPTH)], update_books=False)
            await wait_until(lambda: feed.book_synced("BNBBTC") and len(hub.events) == 5)
            book = hub.events[4]
            assert type(book) is Book
            assert book.symbol == "BNBBTC"
            assert book.bids == ((0.0024, 10.0), (0.0023, 5.0))
            assert book.asks == ((0.0026, 100.0), (0.0027, 7.0))
            assert book.seq == 160
            assert book.exchange_ts_ns == 1672515782136 * MS
            assert book.venue == "binance"
            client_book = feed.book("BNBBTC")
            assert client_book is not None
            assert client_book.top(100) == (book.bids, book.asks)
            assert sim.rest_requests == [("BNBBTC", 157, False)]
            assert (feed.errors, feed.gaps, feed.resyncs, feed.connect_count) == (0, 0, 0, 1)


async def test_documented_snapshot_newer_than_the_diff_discards_it(autojump_clock: trio.testing.MockClock) -> None:
    """Step 5: diffs with u <= lastUpdateId are dropped; the book is the documented snapshot."""
    async with simulator(generate=False, rate=None, symbols=["BNBBTC", "BNBUSDT"]) as sim:
        hub = RecordingHub()
        feed = await start(sim, hub)
        sim.set_binance_book("BNBBTC", DOC_REST_DEPTH["lastUpdateId"], DOC_REST_DEPTH["bids"],
                             DOC_REST_DEPTH["asks"])
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BNBBTC", "BNBUSDT"})
            await sim.play("binance", [wrap("bnbbtc@depth@100ms", DOC_DEPTH)])
            await wait_until(lambda: feed.book_synced("BNBBTC"))
            await wait_until(lambda: len(hub.events) == 1)
        (book,) = hub.events
        assert book.bids == ((4.0, 431.0),)
        assert book.asks == ((4.000002, 12.0),)
        assert book.seq == 1027024
        assert_same_book(feed.book("BNBBTC"), sim.binance_book("BNBBTC"))


async def test_control_replies_and_documented_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BNBBTC", "BNBUSDT"]) as sim:
        hub = RecordingHub()
        feed = await start(sim, hub)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BNBBTC", "BNBUSDT"})
            # The documented error table's form, the observed wrapped form, and a reply with id null.
            errors = [
                '{"code": 0, "msg": "Unknown property","id": 7}',
                '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}',
                '{"id": null, "error": {"code": 3, "msg": "Invalid json"}}',
                '{"code": 1, "msg": "Invalid value type: expected Boolean"}',
            ]
            for text in errors:
                sim.faults.send_raw(text, "binance")
            await wait_until(lambda: feed.errors == 4)
            details = [e["detail"] for e in hub.kinds("error")]
            assert details == [
                "Binance error 0: Unknown property",
                "Binance error 2: Invalid request: invalid stream",
                "Binance error 3: Invalid json",
                "Binance error 1: Invalid value type: expected Boolean",
            ]
            # A success reply for nothing pending is harmless; the session carries on.
            sim.faults.send_raw('{"result": null, "id": 312}', "binance")
            await sim.play("binance", [wrap("bnbbtc@trade", DOC_TRADE)])
            await wait_until(lambda: len(hub.trades()) == 1)
            assert feed.errors == 4
            assert feed.connect_count == 1


async def test_documented_server_shutdown_moves_to_a_new_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BNBBTC", "BNBUSDT"]) as sim:
        hub = RecordingHub()
        feed = await start(sim, hub)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BNBBTC", "BNBUSDT"})
            first = feed.connection_id
            await sim.play("binance", [DOC_SERVER_SHUTDOWN])
            await wait_until(lambda: feed.connection_id != first and feed.state == "connected")
            # Symbols the venue confirmed go into the URL of the successor.
            new = sim.open_connections("binance")[-1]
            assert "streams=" in new.path and "bnbbtc@trade" in new.path
            assert feed.errors == 0
            (disconnect,) = hub.kinds("disconnect")
            assert disconnect["planned"] is True
            assert "serverShutdown" in disconnect["reason"]


async def test_snapshot_older_than_the_first_diff_is_fetched_again(autojump_clock: trio.testing.MockClock) -> None:
    """Step 4: lastUpdateId < U of the first buffered diff → back to step 3."""
    async with simulator(generate=False, rate=None, symbols=["BNBBTC", "BNBUSDT"]) as sim:
        hub = RecordingHub()
        feed = await start(sim, hub)
        sim.set_binance_book("BNBBTC", 156, [["0.0023", "5"]], [["0.0027", "7"]])
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BNBBTC", "BNBUSDT"})
            await sim.play("binance", [wrap("bnbbtc@depth@100ms", DOC_DEPTH)], update_books=False)
            await wait_until(lambda: feed.stale_snapshots >= 2)
            assert not feed.book_synced("BNBBTC")
            assert hub.books("BNBBTC") == []
            sim.set_binance_book("BNBBTC", 158, [["0.0023", "5"]], [["0.0027", "7"]])
            await wait_until(lambda: feed.book_synced("BNBBTC"))
            await wait_until(lambda: len(hub.books("BNBBTC")) == 1)
        (book,) = hub.books("BNBBTC")
        assert book.seq == 160  # 158 from the snapshot, then the diff's u
        assert book.bids == ((0.0024, 10.0), (0.0023, 5.0))
        assert [r[1] for r in sim.rest_requests][-1] == 158
        assert all(r[1] == 156 for r in sim.rest_requests[:-1])


async def test_microsecond_time_unit_gives_the_same_timestamps(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub_ms, hub_us = RecordingHub(), RecordingHub()
        ms = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                     channels=("trade",), **FAST)
        us = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                     channels=("trade",), time_unit="us", **FAST)
        async with running(ms, hub_ms), running(us, hub_us):
            await wait_until(lambda: len(hub_ms.trades()) >= 10 and len(hub_us.trades()) >= 10)
        assert any("timeUnit=MICROSECOND" in c.path for c in sim.connections)
        by_id = {t.trade_id: t.exchange_ts_ns for t in hub_ms.trades()}
        common = [t for t in hub_us.trades() if t.trade_id in by_id]
        assert len(common) >= 5
        assert all(t.exchange_ts_ns == by_id[t.trade_id] for t in common)
        assert all(t.exchange_ts_ns % 1_000_000 == 0 for t in common)  # generated on whole milliseconds
