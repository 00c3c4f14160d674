"""BinanceExecutor against the simulator: placing, acknowledging, filling, refusing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from flox_trio.sim import Simulator

from .conftest import SYMBOL, make_executor, order, start, until


async def test_limit_order_rests_then_fills_partially_and_fully_exactly_once(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99.00"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    venue = sim.binance_private
    assert [o.client_id for o in venue.open_orders_of(ex._api_key)] == [ex.client_id("0-1")]
    assert venue.print_trade(SYMBOL, "99.00", "0.1") == 1
    await until(lambda: len(engine.fills()) == 1)
    assert venue.print_trade(SYMBOL, "98.50", "0.5") == 1
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await trio.sleep(1)
    fills = engine.fills("0-1")
    assert [(f.price, f.qty, f.fee, f.liquidity) for f in fills] == [
        (Decimal("99"), Decimal("0.1"), Decimal("0.0001"), "maker"),
        (Decimal("99"), Decimal("0.2"), Decimal("0.0002"), "maker")]
    assert len({f.trade_id for f in fills}) == 2
    assert [ex.fee_assets[f.trade_id] for f in fills] == ["BTC", "BTC"]
    assert engine.updates("0-1") == [("accepted", "0"), ("partially_filled", "0.10000000"),
                                     ("filled", "0.30000000")]
    pos = ex.position(0, SYMBOL)
    # the buyer's commission is in BTC: the position is what the account holds (0.3 - 0.0003)
    assert pos.qty == Decimal("0.2997") and pos.realized_pnl == -Decimal("0.0003") * 99
    assert ex.open_orders(0) == []
    assert ex.balances["BTC"][0] == Decimal("10.2997")


async def test_a_market_order_walks_the_book(sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "market", "1.2"))
    await until(lambda: engine.updates("0-1")[-1:] == [("filled", "1.20000000")])
    assert [(f.price, f.qty, f.liquidity) for f in engine.fills()] == [
        (Decimal("100"), Decimal("0.5"), "taker"), (Decimal("100.5"), Decimal("0.7"), "taker")]
    assert [s for s, _ in engine.updates("0-1")] == ["accepted", "partially_filled", "filled"]
    sent = [r for r in sim.binance_private.requests if r[1] == "order.place"]
    assert len(sent) == 1


async def test_exchange_filters_reject_before_sending(sim: Simulator, nursery: trio.Nursery,
                                                      autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.1", "99.005"))
    ex.submit(order("0-2", "buy", "limit", "0.00005", "99"))
    ex.submit(order("0-3", "buy", "limit", "0.0001", "99"))
    await until(lambda: len(engine.updates()) == 3)
    reasons = {e.order_id: e.reason for _, e in engine.events}
    assert "PRICE_FILTER" in reasons["0-1"] and "tick size 0.01" in reasons["0-1"]
    assert "LOT_SIZE" in reasons["0-2"]
    assert "NOTIONAL" in reasons["0-3"] and "minimum order value 5" in reasons["0-3"]
    assert [s for s, _ in engine.updates()] == ["rejected"] * 3
    assert not [r for r in sim.binance_private.requests if r[1] == "order.place"]


async def test_a_venue_refusal_is_a_rejection_naming_the_code(sim: Simulator, nursery: trio.Nursery,
                                                               autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    sim.binance_private.faults.reject("order.place", -2010, "Account has insufficient balance for requested action.")
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: bool(engine.updates("0-1")))
    (_, upd), = engine.events
    assert upd.status == "rejected" and "-2010" in upd.reason and "insufficient balance" in upd.reason


async def test_cancel_a_resting_order(sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "sell", "limit", "0.2", "101"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    ex.cancel(0, "0-1")
    await until(lambda: engine.updates("0-1")[-1][0] == "canceled")
    await trio.sleep(1)
    assert [s for s, _ in engine.updates("0-1")] == ["accepted", "canceled"]
    assert not sim.binance_private.open_orders_of(ex._api_key)
    ex.cancel(0, "0-1")  # final: refused locally, like the paper executor
    assert engine.events[-1][1].reason == "cancel refused: order is canceled"
