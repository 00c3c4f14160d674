"""Bybit spot as the simulator serves it, held against real Bybit spot frames."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import trio
import trio.testing

from flox_trio.sim import open_simulator

from ..connectors.conftest import ws_client
from .conftest import jsonl


def numbers(frame: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(topic kind, number string, whether it is a removed level's quantity) of one Bybit frame."""
    kind = frame.get("topic", "").partition(".")[0]
    data: Any = frame.get("data")
    if kind == "orderbook":
        for p, q in data["b"] + data["a"]:
            yield kind, p, False
            yield kind, q, float(q) == 0
    elif kind == "publicTrade":
        for t in data:
            yield from ((kind, t["p"], False), (kind, t["v"], False))
    elif kind == "kline":
        for k in data:
            yield from ((kind, k[f], False) for f in ("open", "close", "high", "low", "volume", "turnover"))


def spellings(frames: list[dict[str, Any]]) -> dict[str, set[str]]:
    """How each kind of frame writes its numbers: "plain" (no trailing zeros), "zero" (a removed
    level, written "0") or the offending string."""
    out: dict[str, set[str]] = {}
    for frame in frames:
        for kind, text, removed in numbers(frame):
            if removed:
                shape = "zero" if text == "0" else text
            else:
                shape = "plain" if "." not in text or not text.endswith("0") else text
            out.setdefault(kind, set()).add(shape)
    return out


async def test_numbers_are_written_as_bybit_spot_writes_them(autojump_clock: trio.testing.MockClock) -> None:
    recorded = [f for name in ("bybit_spot_open_trader.jsonl", "bybit_spot_rbot.jsonl") for f in jsonl(name)]
    assert spellings(recorded) == {"orderbook": {"plain", "zero"}, "publicTrade": {"plain"}}
    async with open_simulator(seed=7, start_ms=1_700_000_000_000, rate=None) as sim, \
            ws_client(sim.bybit_ws_url) as ws:
        await ws.send_message(orjson.dumps({"op": "subscribe", "args": [
            "orderbook.50.BTCUSDT", "publicTrade.BTCUSDT", "kline.1.BTCUSDT", "orderbook.1.SOLUSDT"]}).decode())
        await sim.wait_subscribed("bybit", "publicTrade.BTCUSDT")
        for _ in range(150):
            await sim.tick()
            await trio.sleep(1.0)  # kline.1 closes every minute
        frames = [orjson.loads(await ws.get_message()) for _ in range(sim.connections[0].sent)]
    generated = spellings(frames)
    assert generated == {**spellings(recorded), "kline": {"plain"}}
