"""BinanceExecutor when things go wrong: unknown outcomes, lost connections, lost events, bad keys."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio

from flox_trio.execution import BinanceAuthError
from flox_trio.sim import Simulator

from .conftest import SYMBOL, make_executor, order, start, until


async def test_minus_1007_stays_pending_until_the_account_stream_settles_it(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    faults = sim.binance_private.faults
    faults.answer_timeout("order.place", execute=True)
    faults.hold_account_events()
    ex = make_executor(sim, unknown_after=60.0)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99"))
    await until(lambda: ex.pending_unknown == ("0-1",))
    await trio.sleep(5)
    assert engine.updates("0-1") == []  # neither assumed placed nor failed
    assert ex.open_orders(0)[0].status == "new"
    assert faults.release_account_events() >= 1
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    assert ex.pending_unknown == ()
    assert not [r for r in sim.binance_private.requests if r[1] == "order.status"]
    sim.binance_private.print_trade(SYMBOL, "99", "0.3")
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    assert len(engine.fills("0-1")) == 1


async def test_minus_1007_for_an_order_never_placed_is_settled_by_a_query(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    sim.binance_private.faults.answer_timeout("order.place", execute=False)
    ex = make_executor(sim, unknown_after=2.0)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99"))
    await until(lambda: ex.pending_unknown == ("0-1",))
    await until(lambda: bool(engine.updates("0-1")))
    (_, upd), = engine.events
    assert upd.status == "rejected" and "-2013" in upd.reason and "-1007" in upd.reason
    assert ex.pending_unknown == ()


async def test_a_connection_dropped_after_sending_is_reconciled(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    sim.binance_private.faults.drop_after_request("order.place")
    ex = make_executor(sim, unknown_after=60.0)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99"))
    # The order is at the venue; the answer and its events were lost with the connection.
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    assert ex.connects == 2 and ex.reconciliations == 2
    sim.binance_private.print_trade(SYMBOL, "99", "0.3")
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    assert len(engine.fills("0-1")) == 1
    assert len(sim.binance_private.orders) == 1  # never sent twice


async def test_every_fill_arrives_once_through_lost_events_and_a_lost_connection(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    venue = sim.binance_private
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "1.0", "99"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    # Two events lost on a live stream (a TRADE and its balance update): the next TRADE shows the gap.
    venue.faults.drop_account_events(2)
    venue.print_trade(SYMBOL, "99", "0.1")
    venue.print_trade(SYMBOL, "99", "0.2")
    await until(lambda: len(engine.fills()) == 2)
    # The connection goes while fills happen; they are recovered after the reconnect.
    venue.faults.disconnect()
    venue.print_trade(SYMBOL, "99", "0.3")
    venue.print_trade(SYMBOL, "99", "0.1")
    await until(lambda: not ex.ready)
    ex.submit(order("0-2", "sell", "limit", "0.1", "105"))  # queued until the session is reconciled
    assert ex.status().queued_intents == 1
    await until(lambda: len(engine.fills()) == 4)
    await until(lambda: engine.updates("0-2") == [("accepted", "0")])
    placed = [r for r in venue.requests if r[1] == "order.place"]
    first_after = next(i for i, r in enumerate(venue.requests) if r[0] != venue.requests[0][0])
    assert venue.requests.index(placed[-1]) > next(
        i for i, r in enumerate(venue.requests) if i >= first_after and r[1] == "account.status")
    venue.print_trade(SYMBOL, "99", "0.3")
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await trio.sleep(2)
    fills = engine.fills("0-1")
    venue_ids = [str(f.trade_id) for f in venue.fills]
    assert [f.trade_id for f in fills] == venue_ids  # each venue trade once, in venue order
    assert [f.qty for f in fills] == [Decimal(q) for q in ("0.1", "0.2", "0.3", "0.1", "0.3")]
    statuses = engine.updates("0-1")
    assert len(statuses) == len(set(statuses))  # no repeated status and filled quantity
    assert statuses[-1] == ("filled", "1.00000000")
    assert ex.position(0, SYMBOL).qty == Decimal("0.999")  # net of the commission taken in BTC
    assert ex.connects == 2


async def test_the_account_stream_is_resubscribed_after_event_stream_terminated(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    venue = sim.binance_private
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.5", "99"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    assert venue.terminate_streams() == 1
    venue.print_trade(SYMBOL, "99", "0.2")  # no subscription at this moment
    await until(lambda: any(s.subscriptions for s in venue.sessions))
    await until(lambda: len(engine.fills()) == 1)
    venue.print_trade(SYMBOL, "99", "0.3")
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    assert [f.qty for f in engine.fills()] == [Decimal("0.2"), Decimal("0.3")]


async def test_a_wrong_secret_fails_within_seconds_naming_the_signature_error(
        sim: Simulator, autojump_clock: Any) -> None:
    from flox_trio._core._clock import TrioClock

    from .conftest import Engine

    ex = make_executor(sim, secret="definitely-not-the-secret")
    engine = Engine()
    ex.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    start_t = trio.current_time()
    with trio.fail_after(5), pytest.raises(BinanceAuthError, match="-1022 INVALID_SIGNATURE"):
        await ex.run()
    assert trio.current_time() - start_t < 5
    assert ex.connects == 1  # no retry loop
    (_, upd), = engine.events
    assert upd.status == "rejected" and "-1022" in upd.reason


async def test_an_unknown_key_fails_naming_the_key_error(sim: Simulator, autojump_clock: Any) -> None:
    from flox_trio._core._clock import TrioClock

    from .conftest import Engine

    ex = make_executor(sim, api_key="someoneElsesKey")
    engine = Engine()
    ex.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    with trio.fail_after(5), pytest.raises(BinanceAuthError, match="-2015"):
        await ex.run()


async def test_server_pings_are_answered(nursery: trio.Nursery, autojump_clock: Any) -> None:
    from flox_trio.sim import SymbolSpec

    from .conftest import API_KEY, ASKS, BIDS, SECRET

    sim = Simulator(port=0, generate=False, rate=None, ping_interval=2.0, pong_timeout=1.0,
                    symbols=[SymbolSpec(SYMBOL, 100.0, tick=0.01, lot=0.0001)])
    await nursery.start(sim.serve)
    sim.set_binance_book(SYMBOL, 1, BIDS, ASKS)
    sim.binance_private.add_account(API_KEY, secret=SECRET, balances={"USDT": "1000"})
    ex = make_executor(sim)
    await start(nursery, ex)
    await trio.sleep(30)
    assert ex.connects == 1 and ex.ready
    assert sim.binance_private.sessions[0].conn.open


async def test_order_rate_limits_are_respected_before_sending(nursery: trio.Nursery,
                                                             autojump_clock: Any) -> None:
    from flox_trio.sim import SymbolSpec

    from .conftest import API_KEY, ASKS, BIDS, SECRET

    sim = Simulator(port=0, generate=False, rate=None, symbols=[SymbolSpec(SYMBOL, 100.0, tick=0.01, lot=0.0001)])
    await nursery.start(sim.serve)
    sim.set_binance_book(SYMBOL, 1, BIDS, ASKS)
    sim.binance_private.orders_per_10s = 3
    sim.binance_private.add_account(API_KEY, secret=SECRET, balances={"USDT": "100000"})
    ex = make_executor(sim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.1", "90"))  # learns the limit from the answer
    await until(lambda: len(engine.updates()) == 1)
    for i in range(2, 8):
        ex.submit(order(f"0-{i}", "buy", "limit", "0.1", "90"))
    await until(lambda: len(engine.updates()) == 7, timeout=60)
    assert [s for s, _ in engine.updates()] == ["accepted"] * 7
    statuses = [r[2] for r in sim.binance_private.requests if r[1] == "order.place"]
    assert statuses == [200] * 7  # never a 429
