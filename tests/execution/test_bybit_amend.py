"""``order.amend`` through BybitExecutor against the simulator: the order topic says what took effect, once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from flox_trio.sim import Simulator

from .conftest import SYMBOL, Engine, order, start, start_resting, until
from .test_bybit_executor import KEY, bsim, bybit

__all__ = ["bsim"]  # the fixture, used by name
D = Decimal


async def test_an_amended_order_rests_at_its_new_price_and_fills_there(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start_resting(nursery, ex, "0-1", "buy", "limit", "0.3", "98.00")
    usdt_free = bsim.bybit_private.accounts[KEY].balance("USDT")[0]
    ex.amend(0, "0-1", D("98.50"), D("0.4"))
    await until(lambda: bool(engine.amend_answers()))
    assert engine.amend_answers() == [("accepted", D("0.4"), D("98.5"), "amended")]
    (venue_order,) = bsim.bybit_private.open_orders_of(KEY)
    assert (venue_order.price, venue_order.qty) == (D("98.50"), D("0.4"))
    # What the order holds back follows it: 0.4 x 98.50 now, 0.3 x 98 before.
    assert usdt_free - bsim.bybit_private.accounts[KEY].balance("USDT")[0] == D("39.4") - D("29.4")
    assert bsim.bybit_private.print_trade(SYMBOL, "98.40", "1") == 1
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    assert [(f.price, f.qty) for f in engine.fills("0-1")] == [(D("98.5"), D("0.4"))]
    await trio.sleep(5)
    assert len(engine.amend_answers()) == 1  # the fill's order row is not taken for a second amend
    assert [r[1] for r in bsim.bybit_private.requests if r[0] == "trade"].count("order.amend") == 1


async def test_an_amend_to_a_marketable_price_trades_at_once(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start_resting(nursery, ex, "0-1", "buy", "limit", "0.2", "99.00")
    ex.amend(0, "0-1", D("100.00"), None)  # the best ask is 100.00 x 0.5
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    assert [(f.price, f.qty, f.liquidity) for f in engine.fills("0-1")] == [(D("100"), D("0.2"), "taker")]
    assert engine.amend_answers() == [("accepted", D("0.2"), D("100"), "amended")]


async def test_a_refused_amend_names_the_retcode_and_leaves_the_order_as_it_was(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start_resting(nursery, ex, "0-1", "sell", "limit", "0.2", "101.00")
    ex.amend(0, "0-1", D("101.005"), None)  # off the 0.01 tick: the instrument rule, before sending
    bsim.bybit_private.faults.reject("order.amend", 170131, "Balance insufficient")
    ex.amend(0, "0-1", None, D("0.3"))
    await until(lambda: len(engine.amend_answers()) == 2)
    (tick, venue) = engine.amend_answers()
    assert tick[3].startswith("amend refused: Bybit instrument rule PRICE_FILTER")
    assert venue[:3] == ("accepted", D("0.2"), D("101")) and "170131" in venue[3] and "Balance insufficient" in venue[3]
    (venue_order,) = bsim.bybit_private.open_orders_of(KEY)
    assert (venue_order.price, venue_order.qty) == (D("101"), D("0.2"))
    assert ex.open_orders(0)[0].qty == D("0.2")


async def test_an_amend_whose_answer_was_lost_is_settled_by_reconciliation_once(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start_resting(nursery, ex, "0-1", "buy", "limit", "0.2", "98.00")
    bsim.bybit_private.faults.drop_after_request("order.amend")
    bsim.bybit_private.faults.drop_private_events(1)  # and the order topic's row of it
    ex.amend(0, "0-1", D("97.50"), None)
    await until(lambda: ex.reconciliations >= 2, timeout=30)
    await until(lambda: bool(engine.amend_answers()))
    await trio.sleep(10)
    assert engine.amend_answers() == [("accepted", D("0.2"), D("97.5"), "amended")]
    # Taken once by the venue: the resend after reconnecting saw the order already as asked.
    assert [r[1] for r in bsim.bybit_private.requests if r[0] == "trade"].count("order.amend") == 1


async def test_an_order_not_sent_yet_goes_out_amended(bsim: Simulator, nursery: trio.Nursery,
                                                      autojump_clock: Any) -> None:
    from flox_trio._core._clock import TrioClock

    ex = bybit(bsim)
    engine = Engine()
    ex.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    ex.submit(order("0-1", "buy", "limit", "0.2", "98.00"))
    ex.amend(0, "0-1", D("97.00"), D("0.1"))
    nursery.start_soon(ex.run)
    await until(lambda: ("accepted", "0") in engine.updates("0-1"))
    assert engine.amend_answers() == [("new", D("0.1"), D("97"), "amended")]
    (venue_order,) = bsim.bybit_private.open_orders_of(KEY)
    assert (venue_order.price, venue_order.qty) == (D("97"), D("0.1"))
    assert [r[1] for r in bsim.bybit_private.requests if r[0] == "trade"].count("order.amend") == 0


async def test_amends_the_venue_would_refuse_are_answered_without_asking_it(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99.00"))
    ex.submit(order("0-2", "buy", "market", "0.1"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")] and engine.updates("0-2")[-1][0] == "filled")
    assert bsim.bybit_private.print_trade(SYMBOL, "99.00", "0.1") == 1
    await until(lambda: engine.updates("0-1")[-1][0] == "partially_filled")
    ex.amend(0, "0-1", None, D("0.1"))
    ex.amend(0, "0-2", D("99"), None)
    assert [r for r in engine.amend_answers("0-1")] == [
        ("partially_filled", D("0.3"), D("99"), "amend refused: new qty 0.1 is not above the 0.1 already filled; "
                                                "cancel the order instead")]
    assert engine.amend_answers("0-2")[0][3] == "amend refused: order is filled"
    await trio.sleep(2)
    assert [r[1] for r in bsim.bybit_private.requests if r[0] == "trade"].count("order.amend") == 0


async def test_an_order_row_older_than_the_last_one_applied_does_not_undo_an_amend(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    # A row buffered while reconciling can be older than the snapshot the reconciliation applied.
    ex = bybit(bsim)
    engine = await start_resting(nursery, ex, "0-1", "buy", "limit", "0.2", "98.00")
    ex.amend(0, "0-1", D("97.50"), None)
    await until(lambda: bool(engine.amend_answers()))
    (venue_order,) = bsim.bybit_private.open_orders_of(KEY)
    stale = {**bsim.bybit_private.order_row(venue_order), "price": "98", "updatedTime": str(venue_order.time - 1)}
    await ex._apply_order_row(stale)
    assert ex.open_orders(0)[0].price == D("97.5")
    assert engine.amend_answers() == [("accepted", D("0.2"), D("97.5"), "amended")]
