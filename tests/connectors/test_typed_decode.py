"""Frames decode through typed structs: wrong types and missing fields are malformed (counted), never events.

The decoders are driven directly (``connectors._venue.Link`` / ``SessionPort``
recorded by the conftest), one frame at a time, so each refusal is seen with
what it was counted as.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from flox_trio import Bar, Trade
from flox_trio.connectors._binance import BinanceVenue
from flox_trio.connectors._bybit import BybitVenue
from flox_trio.connectors._options import SessionOptions

from .conftest import RecordingLink, RecordingPort

T0 = 1_700_000_000_000


def binance(channels: tuple[str, ...] = ("trade",)) -> tuple[BinanceVenue, RecordingPort]:
    v = BinanceVenue("wss://x", "https://x", channels, SessionOptions())
    port = RecordingPort(["BTCUSDT", "ETHUSDT"])
    v.bind(port)
    v.symbols_changed(frozenset({"BTCUSDT", "ETHUSDT"}), frozenset())
    return v, port


def bybit(channels: tuple[str, ...] = ("publicTrade",)) -> tuple[BybitVenue, RecordingPort]:
    v = BybitVenue("wss://x", channels, SessionOptions())
    port = RecordingPort(["BTCUSDT", "ETHUSDT"])
    v.bind(port)
    v.symbols_changed(frozenset({"BTCUSDT", "ETHUSDT"}), frozenset())
    return v, port


def b_trade(tid: int, changes: dict[str, Any] | None = None, **more: Any) -> bytes:
    data = {"e": "trade", "E": T0, "s": "BTCUSDT", "t": tid, "p": "100.5", "q": "2", "T": T0 + tid, "m": True,
            "M": True}
    data.update(changes or {})
    data.update(more)
    for key in [k for k, v in data.items() if v is ...]:
        del data[key]
    return orjson.dumps({"stream": "btcusdt@trade", "data": data})


@pytest.mark.parametrize("changes", [
    {"t": "2"}, {"t": 2.0}, {"t": True}, {"t": ...},
    {"p": True}, {"p": None}, {"p": [1]}, {"p": ...},
    {"q": {"v": 1}}, {"m": "true"}, {"m": 1}, {"m": ...}, {"T": "1"},
])
def test_a_binance_trade_of_the_wrong_shape_is_malformed(changes: dict[str, Any]) -> None:
    v, port = binance()
    link = RecordingLink()
    (first,) = v.decode(link, b_trade(1), 1) or []
    assert v.decode(link, b_trade(2, changes), 2) is None
    (what, detail, _info) = port.errors[-1]
    assert what == "malformed btcusdt@trade payload" and detail
    # The malformed trade is missing: the next one says so with a Gap.
    gap, third = v.decode(link, b_trade(3), 3) or []
    assert type(first) is Trade and type(third) is Trade and (gap.first_id, gap.last_id) == ("2", "2")
    assert port.refusals == [] and len(port.errors) == 1


def test_json_numbers_and_extra_fields_are_read_as_before() -> None:
    v, _port = binance()
    link = RecordingLink()
    # A price as a JSON number, fields the venue added later (b, a), all read the same.
    (t,) = v.decode(link, b_trade(1, p=7, q=0.5, b=1, a=2, X="new"), 1) or []
    assert (t.price, t.qty, t.side, t.trade_id, t.exchange_ts_ns) == (7.0, 0.5, "sell", "1", (T0 + 1) * 10**6)
    assert type(t.price) is float and type(t.qty) is float


def test_a_frame_of_a_symbol_another_connection_carries_is_late() -> None:
    v, port = binance()
    link = RecordingLink(symbols={"ETHUSDT"})
    assert v.decode(link, b_trade(1), 1) is None
    assert port.late_frames == 1 and port.errors == []


def test_control_replies_and_venue_events_take_the_slow_path_as_before() -> None:
    v, port = binance()
    link = RecordingLink()
    assert v.decode(link, b'{"result":null,"id":7}', 1) is None
    assert v.decode(link, b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":8}', 1) is None
    assert link.replies == [("7", True, "", None), ("8", False, "Binance error 2: Invalid request: invalid stream",
                                                    None)]
    assert v.decode(link, b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}', 1) is None
    assert link.planned == ["serverShutdown"]
    assert v.decode(link, b'{"stream":"btcusdt@trade","data":[1,2]}', 1) is None
    assert v.decode(link, b'{"stream":"btcusdt@trade"}', 1) is None
    assert v.decode(link, b'{"stream":7,"data":{}}', 1) is None
    assert v.decode(link, b'{"stream":"btcusdt@trade","data":{"e":"trade"', 1) is None
    assert [w for w, _, _ in port.errors] == ["malformed envelope", "malformed envelope", "unknown stream 7",
                                             "malformed frame (not JSON)"]


def test_binance_klines_and_depth_decode_typed() -> None:
    v, port = binance(("kline_1m",))
    link = RecordingLink()
    k = {"t": T0, "T": T0 + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": "1", "c": "2", "h": "3",
         "l": "0.5", "v": "4", "n": 2, "x": True, "q": "5", "V": "1", "Q": "1", "B": "0"}
    frame = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": T0, "s": "BTCUSDT", "k": k}}
    (bar,) = v.decode(link, orjson.dumps(frame), 1) or []
    assert type(bar) is Bar and (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == \
        (1.0, 3.0, 0.5, 2.0, 4.0, 2)
    frame["data"]["k"] = {**k, "t": T0 + 60_000, "n": "2"}  # type: ignore[index]
    assert v.decode(link, orjson.dumps(frame), 2) is None
    assert [w for w, _, _ in port.errors] == ["malformed btcusdt@kline_1m payload"]


def y_trades(*rows: dict[str, Any]) -> bytes:
    return orjson.dumps({"topic": "publicTrade.BTCUSDT", "ts": T0, "type": "snapshot", "data": list(rows)})


def row(i: str, **changes: Any) -> dict[str, Any]:
    r = {"i": i, "T": T0, "p": "100", "v": "1", "S": "Buy", "s": "BTCUSDT", "BT": False}
    r.update(changes)
    return r


@pytest.mark.parametrize("changes", [{"T": "1"}, {"p": False}, {"S": 1}, {"S": "Sideways"}, {"v": None}])
def test_a_bybit_trade_of_the_wrong_shape_makes_its_frame_malformed(changes: dict[str, Any]) -> None:
    v, port = bybit()
    link = RecordingLink()
    assert v.decode(link, y_trades(row("a"), row("b", **changes)), 1) is None
    assert [w for w, _, _ in port.errors] == ["malformed publicTrade.BTCUSDT message"]
    (t,) = v.decode(link, y_trades(row("c")), 2) or []
    assert t.trade_id == "c"


def test_bybit_numbers_ids_and_refusals_as_before() -> None:
    v, port = bybit()
    link = RecordingLink()
    got = v.decode(link, y_trades(row("a"), row(7, p=101.5), row("c", p="NaN")), 1) or []  # type: ignore[arg-type]
    assert [(t.trade_id, t.price) for t in got] == [("a", 100.0), ("7", 101.5)]
    assert port.refusals and port.refusals[0][0] == "trade price"


def test_bybit_replies_pongs_and_odd_frames_take_the_slow_path() -> None:
    v, port = bybit(("orderbook.50",))
    link = RecordingLink()
    assert v.decode(link, b'{"success":true,"ret_msg":"pong","op":"ping"}', 1) is None
    assert link.pongs == 1
    assert v.decode(link, b'{"success":true,"ret_msg":"subscribe","op":"subscribe","req_id":"3"}', 1) is None
    assert link.replies == [("3", True, "Bybit: subscribe", "subscribe")]
    # A book message without its type, or without a time: malformed, as before.
    book = {"topic": "orderbook.50.BTCUSDT", "ts": T0, "data": {"s": "BTCUSDT", "b": [], "a": [], "u": 1}}
    assert v.decode(link, orjson.dumps(book), 1) is None
    assert v.decode(link, orjson.dumps({**book, "type": "snapshot", "ts": None}), 1) is None
    assert v.decode(link, orjson.dumps({"topic": "orderbook.50.BTCUSDT", "type": "snapshot"}), 1) is None
    assert [w for w, _, _ in port.errors] == ["malformed orderbook.50.BTCUSDT message"] * 3
    (snapshot,) = v.decode(link, orjson.dumps({**book, "type": "snapshot"}), 2) or []
    assert snapshot.seq == 1
