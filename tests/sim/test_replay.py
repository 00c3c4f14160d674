"""Replaying real recorded Binance traffic: the recorded REST snapshots, every frame from the first."""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import trio
import trio.testing

from flox_trio.sim import main, open_simulator
from flox_trio.sim._replay import load_recording, replay

from ..connectors.conftest import ws_client
from .conftest import cryptofeed_binance_rest, cryptofeed_binance_ws, cryptofeed_recording, ext_data


def recorded_streams() -> str:
    """The combined-stream path cryptofeed connected to for the capture."""
    header = ext_data("binance_spot_2021.cryptofeed.ws.txt").read_text().splitlines()[0]
    url = urlsplit(header.split(" <-> ")[0])
    return f"{url.path}?{url.query}"


def book_after(snapshot: dict[str, Any], frames: list[str], symbol: str) -> dict[str, dict[str, str]]:
    """The venue's book once the recorded diffs newer than ``snapshot`` are applied to it."""
    book = {"bids": {p: q for p, q in snapshot["bids"]}, "asks": {p: q for p, q in snapshot["asks"]}}
    last = snapshot["lastUpdateId"]
    for frame in frames:
        data = orjson.loads(frame)["data"]
        if data.get("e") != "depthUpdate" or data["s"] != symbol or data["u"] <= last:
            continue
        for side, levels in (("bids", data["b"]), ("asks", data["a"])):
            for p, q in levels:
                if float(q) == 0:
                    book[side].pop(p, None)
                else:
                    book[side][p] = q
        last = data["u"]
    return book


async def test_a_replay_serves_the_recorded_snapshots_and_every_frame_from_the_first(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    recording = load_recording(cryptofeed_recording(tmp_path / "binance.jsonl"))
    frames = [frame for _, frame in cryptofeed_binance_ws()]
    snapshots = cryptofeed_binance_rest()
    assert recording.symbols == ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
    async with open_simulator(generate=False, rate=None, symbols=list(recording.symbols)) as sim, \
            trio.open_nursery() as nursery, httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        nursery.start_soon(partial(replay, sim, recording, rate=50))
        await trio.sleep(60.0)  # nobody has subscribed: nothing is played, nothing is lost
        for _, url, body in snapshots:
            target = urlsplit(url)
            r = await http.get(f"{target.path}?{target.query}")
            assert r.status_code == 200
            assert r.json() == orjson.loads(body)
        async with ws_client(sim.binance_ws_url + recorded_streams()) as ws:
            got = [await ws.get_message() for _ in frames]
        assert got == frames
        # The REST book moved on with every diff newer than the recorded snapshot, as the venue's does.
        for _, url, body in snapshots:
            symbol = urlsplit(url).query.split("symbol=")[1].split("&")[0]
            r = await http.get("/api/v3/depth", params={"symbol": symbol, "limit": 5000})
            served = r.json()
            assert {"bids": dict(served["bids"]), "asks": dict(served["asks"])} == \
                book_after(orjson.loads(body), frames, symbol)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("snapshots", [False, True], ids=["frames", "frames and snapshots"])
def test_the_replay_command_waits_for_a_subscriber_and_serves_the_recorded_snapshot(
        tmp_path: Path, snapshots: bool) -> None:
    frames = [frame for _, frame in cryptofeed_binance_ws()]
    recording = tmp_path / "binance.jsonl"
    command = [sys.executable, "-m", "flox_trio.sim", "--port", "0", "--json", "--rate", "2000",
               "--replay", str(recording)]
    if snapshots:
        cryptofeed_recording(recording)  # and the symbols listed are the recorded ones
    else:
        recording.write_bytes(b"".join(orjson.dumps({"venue": "binance", "frame": f}) + b"\n" for f in frames))
        command += ["--symbols", "NKNUSDT,BLZETH,LRCBTC,RUNEEUR"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        urls = orjson.loads(line)
        # Long enough to play the whole recording twice over, had it started without a client.
        time.sleep(2 * len(frames) / 2000)

        async def client() -> tuple[Any, list[str]]:
            with trio.fail_after(10):
                async with httpx.AsyncClient(base_url=urls["binance_rest_url"]) as http:
                    snapshot = (await http.get("/api/v3/depth", params={"symbol": "NKNUSDT", "limit": 1000})).json()
                async with ws_client(urls["binance_ws_url"] + recorded_streams()) as ws:
                    return snapshot, [await ws.get_message() for _ in frames]

        snapshot, got = trio.run(client)
        assert got == frames
        if snapshots:
            assert snapshot == orjson.loads(cryptofeed_binance_rest()[0][2])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("record", [
    {"venue": "binance", "rest": "/api/v3/trades?symbol=BTCUSDT", "response": []},
    {"venue": "binance", "rest": "/api/v3/depth", "response": {"lastUpdateId": 1, "bids": [], "asks": []}},
    {"venue": "binance", "rest": "/api/v3/depth?symbol=BTCUSDT", "response": {"bids": [], "asks": []}},
    {"venue": "bybit", "rest": "/v5/market/orderbook?symbol=BTCUSDT", "response": {}},
])
def test_bad_recorded_rest_answers_are_refused(tmp_path: Path, record: dict[str, Any]) -> None:
    path = tmp_path / "frames.jsonl"
    path.write_bytes(orjson.dumps({"venue": "binance", "frame": {"stream": "btcusdt@trade", "data": {}}}) + b"\n"
                     + orjson.dumps(record) + b"\n")
    assert main(["--replay", str(path), "--port", "0"]) == 2
