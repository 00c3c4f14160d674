"""Make before break: on ``serverShutdown`` and before the 24-hour limit the executor moves to a new connection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from flox_trio.sim import Simulator

from .conftest import SYMBOL, make_executor, order, start, until


def sessions(venue: Any) -> list[Any]:
    return [s for s in venue.sessions if s.conn.open]


async def test_server_shutdown_moves_to_a_new_connection_with_every_fill_once(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    venue = sim.binance_private
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "1.0", "99"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    venue.print_trade(SYMBOL, "99", "0.1")
    await until(lambda: len(engine.fills()) == 1)
    [first] = sessions(venue)
    assert venue.faults.server_shutdown() == 1
    # Fills while the executor moves: the old stream still delivers until the new one is subscribed.
    venue.print_trade(SYMBOL, "99", "0.2")
    await until(lambda: ex.handovers == 1)
    venue.print_trade(SYMBOL, "99", "0.3")
    ex.submit(order("0-2", "sell", "limit", "0.1", "105"))
    await until(lambda: engine.updates("0-2") == [("accepted", "0")])
    await until(lambda: len(sessions(venue)) == 1)
    [second] = sessions(venue)
    assert second is not first and not first.conn.open
    assert ex.connects == 2 and ex.ready and ex.status().handovers == 1
    # The order after the handover went out on the new connection; the old stream was unsubscribed.
    places = [r for r in venue.requests if r[1] == "order.place"]
    assert places[0][0] != places[-1][0]
    assert any(r[1] == "userDataStream.unsubscribe" and r[0] == places[0][0] for r in venue.requests)
    venue.print_trade(SYMBOL, "99", "0.4")
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await trio.sleep(2)
    fills = engine.fills("0-1")
    assert [f.trade_id for f in fills] == [str(f.trade_id) for f in venue.fills]
    assert [f.qty for f in fills] == [Decimal(q) for q in ("0.1", "0.2", "0.3", "0.4")]
    statuses = engine.updates("0-1")
    assert len(statuses) == len(set(statuses)) and statuses[-1] == ("filled", "1.00000000")
    # No reconnect from scratch: the session was never lost, nothing was reconciled again.
    assert ex.reconciliations == 1


async def test_a_connection_is_replaced_before_the_24_hour_limit(sim: Simulator, nursery: trio.Nursery,
                                                                autojump_clock: Any) -> None:
    venue = sim.binance_private
    ex = make_executor(sim, session_max_age=3600)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.5", "99"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    await trio.sleep(3 * 3600 + 60)
    assert ex.handovers == 3 and ex.connects == 4 and ex.ready
    assert len(sessions(venue)) == 1
    venue.print_trade(SYMBOL, "99", "0.5")
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await trio.sleep(1)
    assert len(engine.fills("0-1")) == 1
