"""A client too slow for the simulator is cut off as a venue cuts it: never with a torn frame."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from flox_trio.sim import open_simulator

from ..connectors.conftest import ws_client


async def test_a_slow_client_is_dropped_between_frames_not_inside_one(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(seed=1, start_ms=1_700_000_000_000, rate=200, symbols=["BTCUSDT"],
                              outbox_size=64, ping_interval=0) as sim, \
            ws_client(f"{sim.binance_ws_url}/stream?streams=btcusdt@trade/btcusdt@depth@100ms") as ws:
        await trio.sleep(120)  # read nothing: the socket's buffers fill, then the outbox overflows
        received: list[object] = []

        async def read_until_cut() -> None:
            while True:
                # Every frame the client gets is a whole one: valid UTF-8 (else wsproto
                # ends the connection with 1007) and a whole JSON message.
                received.append(json.loads(await ws.get_message()))

        with pytest.raises(ConnectionClosed) as info, trio.fail_after(60):
            await read_until_cut()
        assert info.value.reason.code != 1007, info.value.reason
        assert len(received) > 64
        (conn,) = sim.connections
        assert conn.close_reason == "slow consumer" and conn.dropped
