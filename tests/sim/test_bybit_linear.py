"""The simulator's Bybit linear contracts: a position at its average entry price, listed by signed REST."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import trio

from flox_trio.sim import Simulator, SymbolSpec
from flox_trio.sim._bybit_private import SimPosition

KEY, SECRET = "linearSimKey01234", "linearSimSecret-0123456789abcdef"


def test_a_position_realizes_pnl_against_its_average_entry_and_reopens_through_zero() -> None:
    pos = SimPosition("BTCUSDT")
    assert pos.trade(Decimal("0.1"), Decimal("99")) == 0
    assert pos.trade(Decimal("0.3"), Decimal("101")) == 0
    assert (pos.size, pos.entry) == (Decimal("0.4"), Decimal("100.5"))
    # Sell 0.6: 0.4 closes at +0.5 each, 0.2 opens a short at the sell price.
    assert pos.trade(Decimal("-0.6"), Decimal("101")) == Decimal("0.2")
    assert (pos.size, pos.entry) == (Decimal("-0.2"), Decimal("101"))
    assert pos.trade(Decimal("0.2"), Decimal("100")) == Decimal("0.2")
    assert (pos.size, pos.entry) == (0, 0)


async def get(sim: Simulator, path: str, query: str) -> Any:
    from flox_trio.execution._signing import HmacSigner, bybit_rest_text

    ts = str(sim.now_ms())
    async with httpx.AsyncClient(base_url=sim.bybit_rest_url) as http:
        resp = await http.get(f"{path}?{query}", headers={
            "X-BAPI-API-KEY": KEY, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": "5000",
            "X-BAPI-SIGN": HmacSigner(SECRET).sign(bybit_rest_text(ts, KEY, 5000, query))})
    return resp.json()


async def test_position_list_and_instruments_of_the_linear_category(nursery: trio.Nursery,
                                                                   autojump_clock: Any) -> None:
    sim = Simulator(port=0, generate=False, rate=None, symbols=[SymbolSpec("BTCUSDT", 100.0, tick=0.1, lot=0.001)])
    await nursery.start(sim.serve)
    venue = sim.bybit_private
    venue.add_account(KEY, secret=SECRET, balances={"USDT": "1000"})
    venue.position_of(KEY, "BTCUSDT").trade(Decimal("-0.5"), Decimal("100"))
    listed = await get(sim, "/v5/position/list", "category=linear&settleCoin=USDT")
    [row] = listed["result"]["list"]
    assert (row["symbol"], row["side"], row["size"], row["entryPrice"], row["positionIdx"]) == (
        "BTCUSDT", "Sell", "0.5", "100", 0)
    assert (await get(sim, "/v5/position/list", "category=linear"))["retCode"] == 10001
    assert (await get(sim, "/v5/position/list", "category=spot&settleCoin=USDT"))["retCode"] == 10001
    async with httpx.AsyncClient(base_url=sim.bybit_rest_url) as http:
        body = (await http.get("/v5/market/instruments-info?category=linear&symbol=BTCUSDT")).json()
    [info] = body["result"]["list"]
    assert info["contractType"] == "LinearPerpetual" and info["settleCoin"] == "USDT"
    assert info["lotSizeFilter"]["qtyStep"] == info["lotSizeFilter"]["minOrderQty"] == "0.001"
    assert info["priceFilter"]["tickSize"] == "0.1"
