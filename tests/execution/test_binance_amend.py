"""Amends on Binance Spot: a smaller qty in place (``order.amend.keepPriority``); a new price is refused in words."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from flox_trio.sim import Simulator

from .conftest import SYMBOL, make_executor, start_resting, until

D = Decimal


def sent(sim: Simulator, method: str) -> int:
    return [m for _, m, _ in sim.binance_private.requests].count(method)


async def test_a_smaller_qty_is_amended_in_place_once_and_fills_as_such(sim: Simulator, nursery: trio.Nursery,
                                                                        autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start_resting(nursery, ex, "0-1", "sell", "limit", "0.5", "101")
    btc = sim.binance_private.accounts[ex._api_key].balance("BTC")
    locked = btc[1]
    ex.amend(0, "0-1", None, D("0.2"))
    await until(lambda: bool(engine.amend_answers()))
    await trio.sleep(2)  # the response and the account stream's REPLACED both said so: one update
    assert engine.amend_answers() == [("accepted", D("0.2"), D("101"), "amended")]
    (venue,) = sim.binance_private.open_orders_of(ex._api_key)
    assert venue.qty == D("0.2") and venue.client_id == ex.client_id("0-1")  # the same client id
    assert locked - btc[1] == D("0.3")
    assert sim.binance_private.print_trade(SYMBOL, "101", "1") == 1
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    assert [(f.price, f.qty) for f in engine.fills("0-1")] == [(D("101"), D("0.2"))]
    assert sent(sim, "order.amend.keepPriority") == 1


async def test_a_new_price_or_a_larger_qty_is_refused_without_asking_binance(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start_resting(nursery, ex, "0-1", "sell", "limit", "0.2", "101")
    ex.amend(0, "0-1", D("102"), None)
    ex.amend(0, "0-1", None, D("0.3"))
    ex.amend(0, "0-1", None, D("0.00001"))  # under the lot step: the exchange filter, before sending
    await until(lambda: len(engine.amend_answers()) == 3)
    price, larger, step = engine.amend_answers()
    assert price[3].startswith("amend refused: Binance Spot changes an order's price only by cancel-replace")
    assert larger[3] == ("amend refused: Binance amends an order in place only to a smaller qty "
                         "(order.amend.keepPriority), not 0.3 from 0.2")
    assert step[3].startswith("amend refused: exchange filter LOT_SIZE")
    assert all(a[:3] == ("accepted", D("0.2"), D("101")) for a in engine.amend_answers())
    await trio.sleep(1)
    assert sent(sim, "order.amend.keepPriority") == 0


async def test_an_amend_whose_answer_was_lost_is_settled_once(sim: Simulator, nursery: trio.Nursery,
                                                             autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = await start_resting(nursery, ex, "0-1", "buy", "limit", "0.4", "99")
    sim.binance_private.faults.drop_after_request("order.amend.keepPriority")
    sim.binance_private.faults.drop_account_events(2)  # and the account stream's REPLACED (and balances)
    ex.amend(0, "0-1", None, D("0.1"))
    await until(lambda: ex.reconciliations >= 2, timeout=30)
    await until(lambda: bool(engine.amend_answers()))
    await trio.sleep(5)
    assert engine.amend_answers() == [("accepted", D("0.1"), D("99"), "amended")]
    assert sent(sim, "order.amend.keepPriority") == 1
    assert ex.open_orders(0)[0].qty == D("0.1")
