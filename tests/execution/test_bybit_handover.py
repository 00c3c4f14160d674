"""Make before break on Bybit's trade WebSocket: before ``session_max_age``, and when Bybit answers 10019."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from flox_trio.sim import Simulator

from .conftest import SYMBOL, order, start, until
from .test_bybit_executor import bsim as bsim  # the Bybit simulator fixture, by name
from .test_bybit_executor import bybit


def trade_connections(venue: Any) -> list[Any]:
    return [conn for conn, _ in venue.trade_sessions]


def creates_on(conn: Any) -> list[str]:
    """The orderLinkIds of the ``order.create`` requests ``conn`` received."""
    import orjson

    return [m["args"][0]["orderLinkId"] for m in map(orjson.loads, conn.received) if m.get("op") == "order.create"]


async def test_an_answer_in_flight_comes_on_the_old_connection_and_new_orders_go_on_the_new_one(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    venue = bsim.bybit_private
    ex = bybit(bsim, session_max_age=3600)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.5", "99"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    [first] = trade_connections(venue)
    # Two seconds before the age limit, an order whose answer takes five: still in flight at the handover.
    await trio.sleep(first.opened_at + 3598 - trio.current_time())
    venue.faults.delay_answer("order.create", 5.0)
    ex.submit(order("0-2", "buy", "limit", "0.2", "98"))
    await until(lambda: bool(ex._pending))
    [in_flight] = ex._pending.values()
    await until(lambda: ex.handovers == 1)
    second = trade_connections(venue)[-1]
    assert second is not first and first.open, "the old connection waits for its answer"
    ex.submit(order("0-3", "sell", "limit", "0.1", "105"))
    await until(lambda: engine.updates("0-3") == [("accepted", "0")])
    await until(lambda: not first.open)
    # The old connection closed only once its answer was out, and no request was lost or sent twice.
    assert first.closed_at is not None and first.closed_at >= first.opened_at + 3603
    assert in_flight.response is not None and in_flight.response["retCode"] == 0 and not in_flight.failure
    assert creates_on(first) == [ex.client_id("0-1"), ex.client_id("0-2")]
    assert creates_on(second) == [ex.client_id("0-3")]
    assert ex.pending_unknown == () and ex._pending == {} and ex._sent_on == {}
    assert ex.connects == 2 and ex.reconciliations == 1 and ex.ready
    assert ex.status().handovers == 1 and ex.status().connected
    venue.print_trade(SYMBOL, "98", "0.7")
    venue.print_trade(SYMBOL, "105", "0.1")
    await until(lambda: [engine.updates(o)[-1][0] for o in ("0-1", "0-2", "0-3")] == ["filled"] * 3)
    await trio.sleep(30)
    assert engine.updates("0-1") == [("accepted", "0"), ("filled", "0.5")]
    assert engine.updates("0-2") == [("accepted", "0"), ("filled", "0.2")]
    assert engine.updates("0-3") == [("accepted", "0"), ("filled", "0.1")]
    assert [f.trade_id for f in engine.fills()] == [str(f.trade_id) for f in venue.fills]


async def test_the_connection_is_renewed_every_session_max_age(bsim: Simulator, nursery: trio.Nursery,
                                                               autojump_clock: Any) -> None:
    venue = bsim.bybit_private
    ex = bybit(bsim, session_max_age=3600)
    engine = await start(nursery, ex)
    await trio.sleep(3 * 3600 + 60)
    assert ex.handovers == 3 and ex.connects == 4 and ex.reconciliations == 1 and ex.ready
    assert [c.open for c in trade_connections(venue)] == [False, False, False, True]
    ex.submit(order("0-1", "buy", "market", "0.1"))
    await until(lambda: engine.updates("0-1")[-1:] == [("filled", "0.1")])
    assert creates_on(trade_connections(venue)[-1]) == [ex.client_id("0-1")]


async def test_a_restarting_trade_service_moves_the_order_to_a_new_connection(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    venue = bsim.bybit_private
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    venue.faults.reject("order.create", 10019, "ws trade service is restarting, do not accept new request")
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    first, second = trade_connections(venue)
    # Refused on the old connection (not taken: no outcome to guess), sent again on the new one.
    assert creates_on(first) == creates_on(second) == [ex.client_id("0-1")]
    assert [r for r in venue.requests if r[1] == "order.create"] == [("trade", "order.create", 10019),
                                                                    ("trade", "order.create", 0)]
    assert ex.handovers == 1 and ex.reconciliations == 1 and ex.pending_unknown == ()
    await until(lambda: not first.open)
    [placed] = venue.open_orders_of(ex._api_key)
    assert placed.qty == Decimal("0.1")
