"""The simulator on its own, through plain trio-websocket and HTTP clients."""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from flox_trio.connectors import Binance, Bybit
from flox_trio.sim import SymbolSpec, main, serve_simulator
from flox_trio.sim import _connection as sim_connection
from flox_trio.sim._connection import SentIds

from .conftest import FAST, RecordingHub, running, simulator, wait_until, ws_client


async def receive(ws: Any, n: int) -> list[Any]:
    return [orjson.loads(await ws.get_message()) for _ in range(n)]


async def drain(ws: Any) -> None:
    """Read until the connection closes (raises ConnectionClosed)."""
    while True:
        await ws.get_message()


async def test_binance_control_protocol(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim, ws_client(f"{sim.binance_ws_url}/ws") as ws:
        async def ask(obj: Any) -> Any:
            await ws.send_message(obj if isinstance(obj, str) else orjson.dumps(obj).decode())
            await trio.sleep(0.3)  # the venue allows 5 messages a second
            return orjson.loads(await ws.get_message())

        assert await ask({"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {"result": [], "id": 3}
        assert await ask({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}) == \
            {"result": None, "id": 1}
        assert await ask({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == \
            {"result": False, "id": 2}
        assert (await ask("{nope"))["error"]["code"] == 3
        assert (await ask({"method": "SUBSCRIBE", "params": ["BTCUSDT@trade"], "id": 4})) == \
            {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 4}
        assert (await ask({"method": "SUBSCRIBE", "params": ["xyzusdt@trade"], "id": 5}))["error"]["code"] == 2
        unknown = await ask({"method": "SUBSCRIB", "id": 6})
        assert unknown["error"]["code"] == 2 and "unknown variant" in unknown["error"]["msg"]
        assert await ask({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 7}) == \
            {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 7}
        assert await ask({"method": "LIST_SUBSCRIPTIONS", "id": 8}) == {"result": ["btcusdt@trade"], "id": 8}
        # Raw (/ws) connections get the payload without the combined-stream envelope.
        await sim.tick(30)
        trade = orjson.loads(await ws.get_message())
        assert trade["e"] == "trade" and trade["s"] == "BTCUSDT"


async def test_binance_disconnects_clients_that_send_too_fast(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim, ws_client(f"{sim.binance_ws_url}/ws") as ws:
        for i in range(7):
            await ws.send_message(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
        with pytest.raises(ConnectionClosed) as info:
            await drain(ws)
        assert info.value.reason is not None
        assert info.value.reason.code == 1008


async def test_generated_binance_streams_are_consistent(autojump_clock: trio.testing.MockClock) -> None:
    url = "/stream?streams=btcusdt@trade/btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@kline_1s"
    async with simulator(rate=None) as sim, ws_client(sim.binance_ws_url + url) as ws:
        start = sim.binance_book("BTCUSDT").seq
        await sim.tick(200)
        await trio.sleep(1.0)
        await sim.tick(200)
        frames: list[Any] = []
        with trio.move_on_after(1.0):
            while True:
                frames.append(orjson.loads(await ws.get_message()))
        conn = sim.connections[0]
        assert len(frames) == conn.sent
    by_stream: dict[str, list[Any]] = {}
    for f in frames:
        by_stream.setdefault(f["stream"], []).append(f["data"])
    diffs = by_stream["btcusdt@depth@100ms"]
    # Update ids: each diff starts right after the previous one ends.
    assert diffs[0]["U"] == start + 1
    assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(diffs))
    assert diffs[-1]["u"] == sim.binance_book("BTCUSDT").seq
    # The ticker names the update id of the book it shows, and the book never crosses.
    ticks = by_stream["btcusdt@bookTicker"]
    assert {t["u"] for t in ticks} <= {d["u"] for d in diffs}
    assert all(float(t["b"]) < float(t["a"]) for t in ticks)
    trades = by_stream["btcusdt@trade"]
    assert [str(t["t"]) for t in trades] == conn.trade_ids["BTCUSDT"]
    assert all(b["t"] == a["t"] + 1 for a, b in itertools.pairwise(trades))
    sizes = sorted(float(t["q"]) for t in trades)
    assert sizes[-1] > 5 * sizes[len(sizes) // 2]  # log-normal: a few trades are much larger
    # The 1 s klines close in order and count exactly the trades of their second.
    bars = [k["k"] for k in by_stream["btcusdt@kline_1s"] if k["k"]["x"]]
    assert bars and all(b["t"] - a["t"] >= 1000 for a, b in itertools.pairwise(bars))
    for bar in bars:
        inside = [t for t in trades if bar["t"] <= t["T"] <= bar["T"]]
        assert bar["n"] == len(inside)


async def test_rest_depth_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim, httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        ok = await http.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 5})
        assert ok.status_code == 200
        body = ok.json()
        assert body["lastUpdateId"] == sim.binance_book("ETHUSDT").seq
        assert len(body["bids"]) == len(body["asks"]) == 5
        assert [float(p) for p, _ in body["bids"]] == sorted((float(p) for p, _ in body["bids"]), reverse=True)
        bad = await http.get("/api/v3/depth", params={"symbol": "NOPE"})
        assert (bad.status_code, bad.json()["code"]) == (400, -1121)
        missing = await http.get("/api/v3/depth")
        assert (missing.status_code, missing.json()["code"]) == (400, -1102)
        assert (await http.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 0})).status_code == 400
        assert (await http.get("/api/v3/nothing")).status_code == 404
        sim.faults.rest_error(503)
        assert (await http.get("/api/v3/depth", params={"symbol": "ETHUSDT"})).status_code == 503
        assert (await http.get("/api/v3/ping")).json() == {}


async def test_rest_errors_and_stale_snapshots_are_survived(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        await trio.sleep(3.0)  # history for stale snapshots
        sim.faults.rest_error(500, times=2)
        sim.faults.stale_snapshot(times=1)
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, **FAST)
        async with running(feed, hub):
            await wait_until(lambda: feed.book_synced("BTCUSDT"))
        failures = [e for e in hub.kinds("error") if e["what"] == "depth snapshot failed"]
        assert len(failures) == 2
        assert "HTTP 500" in failures[0]["detail"]
        assert feed.stale_snapshots == 1
        assert [stale for _, _, stale in sim.rest_requests] == [True, False]


async def test_server_pings_are_answered_by_the_client(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=1, ping_interval=20.0, pong_timeout=5.0) as sim:
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       **{**FAST, "stale_timeout": 600.0})
        async with running(feed, hub):
            await trio.sleep(300.0)
            assert feed.connect_count == 1
            assert sim.connections[0].open


async def test_bybit_idle_connections_are_cut_and_pings_prevent_it(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None, bybit_idle_timeout=600.0) as sim:
        async with ws_client(sim.bybit_ws_url) as idle:
            with pytest.raises(ConnectionClosed):
                await idle.get_message()
            assert trio.current_time() == pytest.approx(600.0, abs=0.1)
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, **{**FAST, "stale_timeout": 2000.0})
        async with running(feed, hub):
            await trio.sleep(1500.0)
            assert feed.connect_count == 1


async def test_bybit_protocol_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=None) as sim, ws_client(sim.bybit_ws_url) as ws:
        await ws.send_message('{"op":"subscribe","req_id":"a","args":[' + ",".join(
            f'"publicTrade.S{i}"' for i in range(11)) + "]}")
        await ws.send_message('{"op":"subscribe","req_id":"b","args":["orderbook.500.BTCUSDT"]}')
        await ws.send_message('{"op":"subscribe","req_id":"c","args":["publicTrade.NOPE"]}')
        await ws.send_message('{"op":"subscribe","req_id":"d","args":["orderbook.1.BTCUSDT"]}')
        await ws.send_message('{"op":"subscribe","req_id":"e","args":["orderbook.1.BTCUSDT"]}')
        await ws.send_message('{"req_id":"f","op":"ping"}')
        a, b, c, d, snapshot, e, pong = await receive(ws, 7)
        assert (a["success"], a["ret_msg"]) == (False, "args size >10")
        assert b["ret_msg"] == "error:handler not found,topic:orderbook.500.BTCUSDT"
        assert c["ret_msg"] == "Invalid symbol :[publicTrade.NOPE]"
        assert (d["success"], d["ret_msg"], d["req_id"]) == (True, "subscribe", "d")
        assert snapshot["type"] == "snapshot" and len(snapshot["data"]["b"]) == 1
        assert snapshot["data"]["u"] == sim.bybit_book("BTCUSDT").seq
        assert e["ret_msg"] == "error:already subscribed,topic:orderbook.1.BTCUSDT"
        assert (pong["ret_msg"], pong["op"]) == ("pong", "ping")


async def test_unknown_paths_and_refusals(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(serve_simulator)
        with pytest.raises(ConnectionRejected) as info:
            async with ws_client(f"{sim.binance_ws_url}/nowhere"):
                pass
        assert info.value.status_code == 404
        sim.faults.refuse(times=1, status=429)
        with pytest.raises(ConnectionRejected) as info:
            async with ws_client(sim.bybit_ws_url):
                pass
        assert info.value.status_code == 429
        async with ws_client(sim.bybit_ws_url):
            pass
        nursery.cancel_scope.cancel()


def test_symbol_specs_and_bad_arguments() -> None:
    from flox_trio import ConfigError
    from flox_trio.sim import Simulator

    sim = Simulator(symbols=[SymbolSpec("ABCUSDT", 12.5, tick=0.5, lot=1.0), "btcusdt"])
    assert sim.symbols == ("ABCUSDT", "BTCUSDT")
    # Each venue renders the 0.5 tick its own way: Binance with 8 decimals, Bybit spot without trailing zeros.
    assert sim.binance_books["ABCUSDT"].sides(1)[0][0][0] == "12.00000000"
    assert sim.bybit_books["ABCUSDT"].sides(1)[0][0][0] == "12"
    with pytest.raises(ConfigError, match="trades_per_tick"):
        Simulator(trades_per_tick=(3, 1))
    with pytest.raises(ConfigError, match="rate"):
        Simulator(rate=-1)


def test_cli_main_arguments(tmp_path: Any) -> None:
    bad = tmp_path / "frames.jsonl"
    bad.write_text('{"venue": "kraken", "frame": {}}\n')
    assert main(["--replay", str(bad)]) == 2
    bad.write_text("not json\n")
    assert main(["--replay", str(bad)]) == 2
    assert main(["--help"]) == 0
    assert main(["--trades-per-tick", "x", "--port", "0"]) == 2
    assert main(["--replay", "/nonexistent/frames.jsonl"]) == 2
    assert main(["--bogus"]) == 2


def test_the_simulator_runs_as_a_program() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "flox_trio.sim", "--port", "0", "--json", "--rate", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        urls = orjson.loads(proc.stdout.readline())

        async def check() -> list[Any]:
            async with ws_client(urls["binance_ws_url"] + "/stream?streams=ethusdt@trade") as ws:
                return [orjson.loads(await ws.get_message()) for _ in range(3)]

        frames = trio.run(check)
        assert [f["stream"] for f in frames] == ["ethusdt@trade"] * 3
        assert urls["bybit_ws_url"].endswith("/v5/public/spot")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_sent_ids_keep_runs_of_consecutive_ids_and_other_ids_as_they_came() -> None:
    rec = SentIds("BTCUSDT")
    rec.add((5, 6, 7))
    rec.add(("8", "9"))  # a recording's text, read as the numbers it is
    rec.add(("007", "abc-1", "", 10, 12, 13))
    assert list(rec) == ["5", "6", "7", "8", "9", "007", "abc-1", "", "10", "12", "13"]
    assert len(rec) == 11
    # 5..9, then the three texts kept as they are, 10, then 12..13.
    assert rec.runs == 6


async def test_a_connection_keeps_what_it_sent_in_a_size_that_does_not_grow_with_the_trades(
        autojump_clock: trio.testing.MockClock) -> None:
    url = "/stream?streams=btcusdt@trade/btcusdt@aggTrade"
    async with simulator(rate=None, symbols=["BTCUSDT"], trades_per_tick=(2, 2)) as sim, \
            ws_client(sim.binance_ws_url + url) as ws:
        got: list[Any] = []
        for _ in range(20):
            await sim.tick(100)
            with trio.move_on_after(0.5):
                while True:
                    got.append(orjson.loads(await ws.get_message()))
        conn = sim.connections[0]
        assert conn.sent == len(got) == 8000
        trades = [str(f["data"]["t"]) for f in got if f["stream"] == "btcusdt@trade"]
        aggs = [str(f["data"]["a"]) for f in got if f["stream"] == "btcusdt@aggTrade"]
        assert len(trades) == 4000 and [int(t) for t in trades] == list(range(int(trades[0]), int(trades[0]) + 4000))
        # One run per stream for 4,000 trades each, and the ids read back as written: the trade
        # stream's, then the aggTrade stream's.
        assert [(rec.symbol, len(rec), rec.runs) for rec in conn.sent_ids.values()] == [("BTCUSDT", 4000, 1)] * 2
        assert conn.trade_ids["BTCUSDT"] == trades + aggs
        assert sim.sent_trade_ids("binance", "BTCUSDT") == trades + aggs


async def test_a_connection_keeps_the_latest_client_messages_and_counts_them_all(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_connection, "RECEIVED_KEPT", 4)
    async with simulator(rate=None, rate_limit=None) as sim, ws_client(f"{sim.binance_ws_url}/ws") as ws:
        for i in range(11):
            await ws.send_message(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
            assert orjson.loads(await ws.get_message()) == {"result": [], "id": i}
        conn = sim.connections[0]
        assert conn.received_count == 11
        # Trimmed to the latest 4 when it reached 8, then 3 more came.
        assert [orjson.loads(m)["id"] for m in conn.received] == [4, 5, 6, 7, 8, 9, 10]
        assert len(conn.received_at) == 7
