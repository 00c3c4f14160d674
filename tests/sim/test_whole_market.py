"""The simulator as a whole market: as many symbols as asked, realistic rates, and the venues' connection limits."""

from __future__ import annotations

import collections
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected

from flox_trio import ConfigError
from flox_trio.sim import DEFAULT_SYMBOLS, Simulator, SymbolSpec, main, open_simulator, whole_market

from ..connectors.conftest import ws_client


def test_a_whole_market_is_a_few_busy_symbols_and_a_long_quiet_tail() -> None:
    market = whole_market(500)
    assert [s.symbol for s in market[:3]] == [s.symbol for s in DEFAULT_SYMBOLS]
    assert market[3].symbol == "S0004USDT" and market[-1].symbol == "S0500USDT"
    assert len({s.symbol for s in market}) == 500
    assert [s.activity for s in market[:3]] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert market[-1].activity == pytest.approx(1 / 500)
    assert all(s.activity == 0.05 for s in whole_market(200, skew=0.0, activity=0.05))
    with pytest.raises(ConfigError, match="activity must be within"):
        SymbolSpec("XUSDT", 1.0, activity=0.0)
    with pytest.raises(ConfigError, match="activity must be within"):
        whole_market(3, activity=2.0)
    with pytest.raises(ConfigError, match="skew"):
        whole_market(3, skew=-1.0)
    with pytest.raises(ConfigError, match="at least one symbol"):
        whole_market(0)


def test_each_symbol_steps_as_often_as_its_activity_says() -> None:
    sim = Simulator(symbols=200, skew=1.0, rate=None, book=False, trades_per_tick=(1, 1))
    assert len(sim.symbols) == 200 == len(sim.markets)
    steps: collections.Counter[str] = collections.Counter()
    for _ in range(20_000):
        for m in sim._stepping():
            steps[m.spec.symbol] += 1
    spec = {s.symbol: s for s in whole_market(200)}
    assert steps["BTCUSDT"] == 20_000  # activity 1: every tick
    for symbol in ("ETHUSDT", "S0010USDT", "S0050USDT"):
        assert steps[symbol] == pytest.approx(20_000 * spec[symbol].activity, rel=0.15)
    tail = sum(steps[s] for s in list(spec)[100:])
    assert tail == pytest.approx(20_000 * sum(spec[s].activity for s in list(spec)[100:]), rel=0.1)
    # Seeded: the same market twice.
    again = Simulator(symbols=200, skew=1.0, rate=None, book=False)
    first = Simulator(symbols=200, skew=1.0, rate=None, book=False)
    assert [[m.spec.symbol for m in first._stepping()] for _ in range(50)] == \
        [[m.spec.symbol for m in again._stepping()] for _ in range(50)]


def test_the_default_market_still_steps_every_symbol_every_tick() -> None:
    sim = Simulator(rate=None)
    assert [m.spec.symbol for m in sim._stepping()] == [s.symbol for s in DEFAULT_SYMBOLS]


async def test_binance_refuses_more_streams_than_a_connection_may_carry(
        autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(symbols=10, skew=0.0, rate=None, max_streams=4) as sim:
        low = [s.lower() for s in sim.symbols]
        with pytest.raises(ConnectionRejected) as info:
            async with ws_client(f"{sim.binance_ws_url}/stream?streams=" + "/".join(f"{s}@trade" for s in low[:5])):
                pass
        assert info.value.status_code == 400
        async with ws_client(f"{sim.binance_ws_url}/stream?streams=" + "/".join(f"{s}@trade" for s in low[:3])) as ws:
            async def ask(rid: int, params: list[str]) -> Any:
                await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": rid}).decode())
                await trio.sleep(0.3)
                return orjson.loads(await ws.get_message())

            assert await ask(1, [f"{low[3]}@trade"]) == {"result": None, "id": 1}
            refused = await ask(2, [f"{low[4]}@trade"])
            assert refused["id"] == 2 and "at most 4 streams" in refused["error"]["msg"]
            # A stream already carried does not count twice.
            assert await ask(3, [f"{low[0]}@trade"]) == {"result": None, "id": 3}


async def test_handshakes_past_the_connection_limit_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(rate=None, connect_limits={"bybit": (3, 300.0)}) as sim:
        for _ in range(3):
            async with ws_client(sim.bybit_ws_url):
                pass
        with pytest.raises(ConnectionRejected) as info:
            async with ws_client(sim.bybit_ws_url):
                pass
        assert info.value.status_code == 429 and sim.over_connect_limit == 1
        # Counted per venue, over a sliding window.
        async with ws_client(f"{sim.binance_ws_url}/ws"):
            pass
        await trio.sleep(300.0)
        async with ws_client(sim.bybit_ws_url):
            pass
        assert sim.over_connect_limit == 1
    assert Simulator().connect_limits == {"binance": (300, 300.0), "bybit": (500, 300.0)}


def test_the_command_line_takes_a_number_of_symbols(capsys: Any) -> None:
    assert main(["--symbols", "50", "--skew", "9", "--port", "0"]) == 2
    assert "skew" in capsys.readouterr().err
