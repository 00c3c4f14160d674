"""The documented Bybit v5 public messages, verbatim, through the connector: every decoded field.

Copied from ``bybit-exchange/docs`` (``docs/v5/websocket/public/*.mdx``,
``wss-authentication.mdx``); ``doc_json`` removes the ``...`` placeholders and
trailing commas the docs print.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from flox_trio import Bar, Book, Trade
from flox_trio.connectors import Bybit
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, assert_same_book, doc_json, running, simulator, wait_until

DOC_TRADE = doc_json("""
{
    "topic": "publicTrade.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304486868,
    "data": [
        {
            "T": 1672304486865,
            "s": "BTCUSDT",
            "S": "Buy",
            "v": "0.001",
            "p": "16578.50",
            "L": "PlusTick",
            "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
            "BT": false,
            "seq": 1783284617
        }
    ]
}
""")

DOC_SNAPSHOT = doc_json("""
{
    "topic": "orderbook.50.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304484978,
    "data": {
        "s": "BTCUSDT",
        "b": [
            ...,
            [
                "16493.50",
                "0.006"
            ],
            [
                "16493.00",
                "0.100"
            ]
        ],
        "a": [
            [
                "16611.00",
                "0.029"
            ],
            [
                "16612.00",
                "0.213"
            ],
            ...,
        ],
    "u": 18521288,
    "seq": 7961638724
    },
    "cts": 1672304484976
}
""")

DOC_DELTA = doc_json("""
{
    "topic": "orderbook.50.BTCUSDT",
    "type": "delta",
    "ts": 1687940967466,
    "data": {
        "s": "BTCUSDT",
        "b": [
            ["30247.20", "30.028"],
            ["30245.40", "0.224"],
            ["30242.10", "1.593"],
            ["30240.30", "1.305"],
            ["30240.00", "0"]
        ],
        "a": [
            ["30248.70", "0"],
            ["30249.30", "0.892"],
            ["30249.50", "1.778"],
            ["30249.60", "0"],
            ["30251.90", "2.947"],
            ["30252.20", "0.659"],
            ["30252.50", "4.591"]
        ],
        "u": 177400507,
        "seq": 66544703342
    },
    "cts": 1687940967464
}
""")

DOC_KLINE = doc_json("""
{
    "topic": "kline.5.BTCUSDT",
    "data": [
        {
            "start": 1672324800000,
            "end": 1672325099999,
            "interval": "5",
            "open": "16649.5",
            "close": "16677",
            "high": "16677",
            "low": "16608",
            "volume": "2.081",
            "turnover": "34666.4005",
            "confirm": false,
            "timestamp": 1672324988882
        }
    ],
    "ts": 1672324988882,
    "type": "snapshot"
}
""")

DOC_SUBSCRIBE = doc_json("""
{
    "req_id": "test", // optional
    "op": "subscribe",
    "args": [
        "orderbook.1.BTCUSDT",
        "publicTrade.BTCUSDT",
        "orderbook.1.ETHUSDT"
    ]
}
""")

DOC_PONGS = [
    '{"success": true, "ret_msg": "pong", "conn_id": "0970e817-426e-429a-a679-ff7f55e0b16a", "op": "ping"}',
    '{"success": true, "ret_msg": "pong", "conn_id": "465772b1-7630-4fdc-a492-e003e6f0f260", "req_id": "", '
    '"op": "ping"}',
    '{"args": ["1672916271846"], "op": "pong"}',
]
DOC_ACKS = [
    '{"success": true, "ret_msg": "subscribe", "conn_id": "2324d924-aa4d-45b0-a858-7b8be29ab52b", '
    '"req_id": "10001", "op": "subscribe"}',
    '{"success": true, "ret_msg": "", "conn_id": "3cd84cb1-4d06-4a05-930a-2efe5fc70f0f", "req_id": "", '
    '"op": "subscribe"}',
]
OBSERVED_ERRORS = [
    '{"success":false,"ret_msg":"error:handler not found,topic:orderbook.500.BTCUSDT","conn_id":"c",'
    '"req_id":"subscribe","op":"subscribe"}',
    '{"success":false,"ret_msg":"args size >10","op":"subscribe"}',
]
MS = 1_000_000


def make_feed(sim: Simulator, **options: Any) -> Bybit:
    return Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("publicTrade", "orderbook.50", "kline.5"),
                 **{**FAST, "stale_timeout": 10_000.0, **options})


async def test_documented_messages_decode_field_by_field(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = make_feed(sim)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            conn = sim.open_connections("bybit")[0]
            request = orjson.loads(conn.received[0])
            assert set(request) == set(DOC_SUBSCRIBE)
            assert request["op"] == "subscribe"
            assert request["args"] == ["publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", "kline.5.BTCUSDT"]

            await sim.play("bybit", [DOC_TRADE])
            await wait_until(lambda: len(hub.events) == 1)
            trade = hub.events[0]
            assert type(trade) is Trade
            assert (trade.symbol, trade.price, trade.qty, trade.side, trade.trade_id) == \
                ("BTCUSDT", 16578.5, 0.001, "buy", "20f43950-d8dd-5b31-9112-a178eb6023af")
            assert trade.exchange_ts_ns == 1672304486865 * MS
            assert trade.venue == "bybit"
            assert trade.recv_ts_ns > 0

            await sim.play("bybit", [DOC_SNAPSHOT])
            await wait_until(lambda: len(hub.events) == 2)
            book = hub.events[1]
            assert type(book) is Book
            assert book.symbol == "BTCUSDT"
            assert book.bids == ((16493.5, 0.006), (16493.0, 0.1))
            assert book.asks == ((16611.0, 0.029), (16612.0, 0.213))
            assert book.seq == 18521288
            # The matching engine's time (cts), the clock of trades' T; not the send time (ts).
            assert book.exchange_ts_ns == DOC_SNAPSHOT["cts"] * MS == 1672304484976 * MS
            assert book.venue == "bybit"

            # The documented delta continues a later book: u jumps, which is a gap. The
            # connector re-subscribes the book topic and takes the fresh snapshot.
            await sim.play("bybit", [DOC_DELTA])
            await wait_until(lambda: feed.resyncs == 1)
            assert feed.gaps == 1
            (gap,) = hub.kinds("gap")
            assert (gap["symbol"], gap["expected"], gap["got"]) == ("BTCUSDT", 18521289, 177400507)
            ops = [orjson.loads(m) for m in conn.received[1:]]
            assert [(m["op"], m["args"]) for m in ops] == [
                ("unsubscribe", ["orderbook.50.BTCUSDT"]), ("subscribe", ["orderbook.50.BTCUSDT"])]
            assert_same_book(feed.book("BTCUSDT"), sim.bybit_book("BTCUSDT"))
            resynced = hub.books()[-1]
            assert resynced.seq == 177400507
            assert (30240.0, 0.0) not in resynced.bids and 30240.0 not in dict(resynced.bids)
            assert dict(resynced.bids)[30247.2] == 30.028

            # The same delta one update later applies in place.
            later = {**DOC_DELTA, "data": {**DOC_DELTA["data"], "u": 177400508, "b": [["30247.20", "1.5"]],
                                           "a": [["30249.30", "0"]]}}
            await sim.play("bybit", [later])
            await wait_until(lambda: hub.books()[-1].seq == 177400508)
            assert dict(hub.books()[-1].bids)[30247.2] == 1.5
            assert 30249.3 not in dict(hub.books()[-1].asks)
            assert_same_book(feed.book("BTCUSDT"), sim.bybit_book("BTCUSDT"))

            n = len(hub.events)
            closed = {**DOC_KLINE, "data": [{**DOC_KLINE["data"][0], "confirm": True}]}
            await sim.play("bybit", [DOC_KLINE, closed])
            await wait_until(lambda: len(hub.events) == n + 1)
            bar = hub.events[-1]
            assert type(bar) is Bar
            assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume) == \
                ("BTCUSDT", 16649.5, 16677.0, 16608.0, 16677.0, 2.081)
            assert bar.trade_count == 0  # Bybit klines do not count trades
            assert bar.start_ts_ns == 1672324800000 * MS
            assert bar.end_ts_ns == 1672325100000 * MS
            assert bar.interval_s == 300.0
            assert bar.venue == "bybit"
            assert feed.errors == 0


async def test_documented_pongs_acks_and_observed_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        hub = RecordingHub()
        feed = make_feed(sim, ping_interval=5.0, pong_timeout=2.0)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            for text in DOC_PONGS + DOC_ACKS:
                sim.faults.send_raw(text, "bybit")
            await trio.sleep(1.0)
            assert feed.errors == 0
            for text in OBSERVED_ERRORS:
                sim.faults.send_raw(text, "bybit")
            await wait_until(lambda: feed.errors == 2)
            assert [e["detail"] for e in hub.kinds("error")] == [
                "Bybit: error:handler not found,topic:orderbook.500.BTCUSDT", "Bybit: args size >10"]
            # The client's own pings are answered by the simulator in the documented spot form.
            await trio.sleep(30.0)
            conn = sim.open_connections("bybit")[0]
            pings = [orjson.loads(m) for m in conn.received if '"ping"' in m]
            assert len(pings) == 6
            assert all(p["op"] == "ping" for p in pings)
            assert feed.connect_count == 1


async def test_level_one_book_follows_the_top(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("orderbook.1",), **FAST)
        async with running(feed, hub):
            await wait_until(lambda: len(hub.books()) >= 20)
            sim.pause()
            top = sim.bybit_book("BTCUSDT")
            await wait_until(lambda: hub.books()[-1].seq == top.seq)
        books = hub.books()
        assert all(len(b.bids) == 1 and len(b.asks) == 1 for b in books)
        assert (books[-1].bids, books[-1].asks) == (top.bids[:1], top.asks[:1])
        assert [b.seq for b in books] == sorted({b.seq for b in books})  # unchanged repeats are not republished
        assert (feed.gaps, feed.errors) == (0, 0)
