"""BybitExecutor against the simulator's Bybit v5 trade WebSocket, private stream and signed REST."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
import trio

from flox_trio import FloxError
from flox_trio.sim import Simulator

from .conftest import ASKS, BIDS, SYMBOL, Engine, order, start, until

KEY = "bybitSimKey0123456789"
SECRET = "bybitSimSecret-0f1e2d3c4b5a69788796a5b4"


@pytest.fixture
async def bsim(nursery: trio.Nursery) -> Simulator:
    from flox_trio.sim import SymbolSpec

    s = Simulator(port=0, generate=False, rate=None, symbols=[SymbolSpec(SYMBOL, 100.0, tick=0.01, lot=0.0001)])
    await nursery.start(s.serve)
    s.set_bybit_book(SYMBOL, 1000, BIDS, ASKS)
    s.bybit_private.add_account(KEY, secret=SECRET, balances={"USDT": "100000", "BTC": "10"})
    return s


def bybit(sim: Simulator, **options: Any) -> Any:
    from flox_trio.execution import BybitExecutor

    kw: dict[str, Any] = {"api_key": KEY, "secret": SECRET, "category": "spot"}
    kw.update(options)
    return BybitExecutor(trade_url=sim.bybit_trade_url, private_url=sim.bybit_private_url,
                         rest_url=sim.bybit_rest_url, **kw)


async def test_limit_order_acked_filled_partially_then_fully_exactly_once(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99.00"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    venue = bsim.bybit_private
    assert [o.client_id for o in venue.open_orders_of(KEY)] == [ex.client_id("0-1")]
    assert venue.print_trade(SYMBOL, "99.00", "0.1") == 1
    await until(lambda: len(engine.fills()) == 1)
    assert venue.print_trade(SYMBOL, "98.50", "0.5") == 1
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await trio.sleep(30)
    fills = engine.fills("0-1")
    assert [(f.price, f.qty, f.fee, f.liquidity) for f in fills] == [
        (Decimal("99"), Decimal("0.1"), Decimal("0.0001"), "maker"),
        (Decimal("99"), Decimal("0.2"), Decimal("0.0002"), "maker")]
    assert len({f.trade_id for f in fills}) == 2
    assert [ex.fee_assets[f.trade_id] for f in fills] == ["BTC", "BTC"]
    assert engine.updates("0-1") == [("accepted", "0"), ("partially_filled", "0.1"), ("filled", "0.3")]
    assert ex.position(0, SYMBOL).qty == Decimal("0.2997")
    assert ex.balances["BTC"][0] == Decimal("10.2997")
    assert ex.open_orders(0) == []


async def test_a_market_order_walks_the_book(bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "market", "1.2"))
    await until(lambda: engine.updates("0-1")[-1:] == [("filled", "1.2")])
    assert [(f.price, f.qty, f.liquidity) for f in engine.fills()] == [
        (Decimal("100"), Decimal("0.5"), "taker"), (Decimal("100.5"), Decimal("0.7"), "taker")]
    assert [s for s, _ in engine.updates("0-1")] == ["accepted", "partially_filled", "filled"]
    assert len([r for r in bsim.bybit_private.requests if r[1] == "order.create"]) == 1


async def test_a_venue_refusal_is_a_rejection_naming_the_retcode(bsim: Simulator, nursery: trio.Nursery,
                                                                 autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    bsim.bybit_private.faults.reject("order.create", 170131, "Balance insufficient")
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: bool(engine.updates("0-1")))
    (_, upd), = engine.events
    assert upd.status == "rejected" and "170131" in upd.reason and "Balance insufficient" in upd.reason


async def test_cancel_a_resting_order(bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "sell", "limit", "0.2", "101"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    ex.cancel(0, "0-1")
    await until(lambda: engine.updates("0-1")[-1][0] == "canceled")
    assert [s for s, _ in engine.updates("0-1")] == ["accepted", "canceled"]
    assert not bsim.bybit_private.open_orders_of(KEY)


async def test_a_wrong_secret_fails_within_seconds_naming_the_auth_error(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    from flox_trio._core._clock import TrioClock
    from flox_trio.execution import BybitAuthError

    from .conftest import Engine

    wrong = "not-the-secret-" + "x" * 20
    ex = bybit(bsim, secret=wrong)
    engine = Engine()
    ex.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    with caplog.at_level(logging.DEBUG), trio.fail_after(5), pytest.raises(BybitAuthError) as info:
        await ex.run()
    assert isinstance(info.value, FloxError)
    assert "10004" in str(info.value)
    assert engine.updates("0-1") == [("rejected", "0")]
    assert ("trade", "auth", 10004) in bsim.bybit_private.requests
    for text in (str(info.value), repr(ex), repr(ex.status()), repr(ex.settings), caplog.text,
                 repr(engine.events)):
        assert wrong not in text and SECRET not in text and KEY not in text


async def test_private_stream_disconnect_during_fills_every_fill_arrives_once(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "1.0", "99.00"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    venue = bsim.bybit_private
    venue.print_trade(SYMBOL, "99.00", "0.1")
    await until(lambda: len(engine.fills()) == 1)
    # The stream is cut, and fills happen while nobody listens; a push is lost too.
    venue.faults.drop_private_events(2)
    venue.print_trade(SYMBOL, "99.00", "0.2")
    assert venue.faults.disconnect_private() == 1
    venue.print_trade(SYMBOL, "99.00", "0.3")
    venue.print_trade(SYMBOL, "99.00", "0.4")
    await until(lambda: ex.reconciliations >= 2 and ex.ready)
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await trio.sleep(30)
    fills = engine.fills("0-1")
    assert [f.qty for f in fills] == [Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), Decimal("0.4")]
    assert [f.trade_id for f in fills] == [str(f.trade_id) for f in venue.fills]
    assert [s for s, _ in engine.updates("0-1")] == ["accepted"] + ["partially_filled"] * 3 + ["filled"]
    assert any(r[1] == "/v5/execution/list" for r in venue.requests)


async def test_rest_refuses_a_wrong_signature_with_10004(bsim: Simulator, autojump_clock: Any) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=bsim.bybit_rest_url) as http:
        ts = str(bsim.now_ms())
        resp = await http.get("/v5/account/wallet-balance?accountType=UNIFIED", headers={
            "X-BAPI-API-KEY": KEY, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": "5000", "X-BAPI-SIGN": "00" * 32})
    assert resp.json()["retCode"] == 10004


async def test_an_order_whose_answer_never_came_is_found_by_a_query(bsim: Simulator, nursery: trio.Nursery,
                                                                    autojump_clock: Any) -> None:
    # Placed, but the answer comes after the request timeout and the order topic's row is lost:
    # nothing on the connection says what became of it, so the executor asks.
    ex = bybit(bsim, request_timeout=2.0)
    engine = await start(nursery, ex)
    bsim.bybit_private.faults.delay_answer("order.create", seconds=30)
    bsim.bybit_private.faults.drop_private_events(2)  # its order row and the wallet's
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: ex.pending_unknown == ("0-1",))
    assert engine.updates("0-1") == []
    await until(lambda: engine.updates("0-1") == [("accepted", "0")], timeout=5)
    assert ex.pending_unknown == () and ex.reconciliations == 1 and ex.connects == 1
    await trio.sleep(40)  # the late answer changes nothing
    assert engine.updates("0-1") == [("accepted", "0")]


async def test_an_order_bybit_answered_ambiguously_and_never_placed_is_rejected_as_such(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    bsim.bybit_private.faults.reject("order.create", 10000, "Server Timeout")
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: ex.pending_unknown == ("0-1",))
    await until(lambda: bool(engine.updates("0-1")), timeout=5)
    (_, upd), = engine.events
    assert upd.status == "rejected" and "it was never placed" in upd.reason and "10000" in upd.reason
    assert ex.pending_unknown == () and ex.connects == 1


async def test_a_duplicate_order_link_id_is_the_order_bybit_has_and_is_settled_from_it(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    # The same id sent twice (a "not taken" answer that was wrong): the second send's 170141 is
    # not a rejection of the order, which rests on Bybit; the query after it says so.
    first = bybit(bsim, run_id="aaaaaaaaaa")
    await start(nursery, first)
    first.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: len(bsim.bybit_private.open_orders_of(KEY)) == 1)
    again = bybit(bsim, run_id="aaaaaaaaaa")
    engine = Engine()
    from flox_trio._core._clock import TrioClock

    again.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    nursery.start_soon(again.run)
    await again.wait_ready()
    again.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: bool(engine.updates("0-1")), timeout=5)
    assert engine.updates("0-1") == [("accepted", "0")]
    assert ("trade", "order.create", 170141) in bsim.bybit_private.requests
    assert len(bsim.bybit_private.open_orders_of(KEY)) == 1 and again.pending_unknown == ()


async def test_a_status_answer_not_understood_is_asked_again_later_and_the_session_lives(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = bybit(bsim)
    engine = await start(nursery, ex)
    bsim.bybit_private.faults.reject("order.create", 10000, "Server Timeout")
    real, asked = ex._query_unknown, []

    async def garbled_once(o: Any) -> None:
        asked.append(trio.current_time())
        if len(asked) == 1:
            raise ValueError("invalid literal for int() with base 10: 'soon'")  # as a malformed row raises
        await real(o)

    ex._query_unknown = garbled_once  # type: ignore[method-assign]
    ex.submit(order("0-1", "buy", "limit", "0.1", "99"))
    await until(lambda: bool(engine.updates("0-1")), timeout=10)
    assert "it was never placed" in engine.events[-1][1].reason
    assert len(asked) == 2 and asked[1] - asked[0] >= ex.unknown_after  # not hammered
    assert ex.connects == 1
