"""BybitExecutor on USDT perpetuals (``category="linear"``): orders, fills and the venue's position."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
import trio

from flox_trio.sim import Simulator

from .conftest import SYMBOL, order, start, start_resting, until
from .test_bybit_executor import KEY, bybit
from .test_bybit_executor import bsim as bsim  # the Bybit simulator fixture, by name


def linear(sim: Simulator, **options: Any) -> Any:
    return bybit(sim, category="linear", **options)


async def test_a_linear_order_fills_partly_then_fully_and_the_position_topic_reaches_the_executor(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    venue = bsim.bybit_private
    ex = linear(bsim)
    engine = await start_resting(nursery, ex, "0-1", "buy", "limit", "0.3", "99.00")
    [placed] = venue.open_orders_of(KEY)
    assert placed.category == "linear" and placed.client_id == ex.client_id("0-1")
    assert venue.print_trade(SYMBOL, "99.00", "0.1") == 1
    await until(lambda: ex.venue_positions.get(SYMBOL) is not None and ex.venue_positions[SYMBOL].qty)
    assert ex.venue_positions[SYMBOL].qty == Decimal("0.1")
    assert venue.print_trade(SYMBOL, "98.50", "0.5") == 1
    await until(lambda: engine.updates("0-1")[-1][0] == "filled")
    await until(lambda: ex.venue_positions[SYMBOL].qty == Decimal("0.3"))
    await trio.sleep(30)
    assert engine.updates("0-1") == [("accepted", "0"), ("partially_filled", "0.1"), ("filled", "0.3")]
    # A contract's fee is in the settle coin: the whole quantity is the position.
    fills = engine.fills("0-1")
    assert [(f.price, f.qty, f.fee, f.fee_asset, f.liquidity) for f in fills] == [
        (Decimal("99"), Decimal("0.1"), Decimal("0.0099"), "", "maker"),
        (Decimal("99"), Decimal("0.2"), Decimal("0.0198"), "", "maker")]
    mine = ex.position(0, SYMBOL)
    held = ex.venue_positions[SYMBOL]
    assert (mine.qty, mine.avg_entry_price) == (held.qty, held.avg_entry_price) == (Decimal("0.3"), Decimal("99"))
    assert ex.status().venue_positions == {SYMBOL: Decimal("0.3")}

    # Closed by a market sell (bids 99.50 x 1): the venue's PnL of the holding is the slot's, to the digit.
    ex.submit(order("0-2", "sell", "market", "0.3"))
    await until(lambda: engine.updates("0-2")[-1:] == [("filled", "0.3")])
    await until(lambda: ex.venue_positions[SYMBOL].qty == 0)
    assert mine.qty == 0
    assert held is not ex.venue_positions[SYMBOL]
    assert ex.venue_positions[SYMBOL].realized_pnl == mine.realized_pnl == Decimal("0.09045")
    assert ex.balances["USDT"][0] == Decimal("100000.09045")
    # All of it from the stream: the only reconciliation was the first one.
    assert ex.reconciliations == 1 and ex.pending_unknown == ()
    assert {o.category for o in venue.orders.values()} == {"linear"}


async def test_the_venue_position_is_reconciled_from_rest_at_start_and_after_a_reconnect(
        bsim: Simulator, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    venue = bsim.bybit_private
    # Someone else (another tool on the same account) buys 0.2 contracts before the engine starts.
    async with trio.open_nursery() as nursery:
        other = linear(bsim)
        other.prefix = "manual_"
        other_engine = await start(nursery, other)
        other.submit(order("1", "buy", "market", "0.2"))
        await until(lambda: other_engine.updates("1")[-1:] == [("filled", "0.2")])
        nursery.cancel_scope.cancel()
    assert venue.position_of(KEY, SYMBOL).size == Decimal("0.2")

    async with trio.open_nursery() as nursery:
        with caplog.at_level(logging.WARNING, "flox_trio.execution.bybit"):
            ex = linear(bsim)
            engine = await start(nursery, ex)
        # No order changed since: the snapshot alone says what Bybit holds; no slot holds it.
        assert ex.venue_positions[SYMBOL].qty == Decimal("0.2")
        assert ex.venue_positions[SYMBOL].avg_entry_price == Decimal("100")
        assert ex.position(0, SYMBOL).qty == 0
        assert ("rest", "/v5/position/list", 0) in venue.requests
        assert "Bybit holds 0.2 BTCUSDT, the slots hold 0" in caplog.text

        # The engine closes it while every push is lost, then the stream is cut: the reconnect's
        # reconciliation recovers the fill and the (now flat, so no longer listed) position.
        venue.faults.drop_private_events(1000)
        ex.submit(order("0-1", "sell", "market", "0.2"))
        await until(lambda: len(venue.fills) == 2 and engine.updates("0-1") == [("accepted", "0")])
        venue.faults.drop_events = 0
        assert ex.venue_positions[SYMBOL].qty == Decimal("0.2")
        assert venue.faults.disconnect_private() == 1
        await until(lambda: ex.reconciliations == 2 and ex.ready)
        assert ex.venue_positions[SYMBOL].qty == 0
        assert [f.qty for f in engine.fills("0-1")] == [Decimal("0.2")]
        assert engine.updates("0-1") == [("accepted", "0"), ("filled", "0.2")]
        assert ex.position(0, SYMBOL).qty == Decimal("-0.2")
        nursery.cancel_scope.cancel()


async def test_a_linear_order_beyond_the_margin_is_refused_naming_the_retcode(
        bsim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = linear(bsim)
    engine = await start(nursery, ex)
    # 100000 USDT at 10x carries 1,000,000 USDT of contracts: 10,200 at 99 (1,009,800) is more.
    ex.submit(order("0-1", "buy", "limit", "10200", "99.00"))
    await until(lambda: bool(engine.updates("0-1")))
    [(status, _)] = engine.updates("0-1")
    [(_, upd)] = engine.events
    assert status == "rejected" and "110007" in upd.reason


def test_the_category_is_spot_or_linear() -> None:
    from flox_trio import ConfigError
    from flox_trio.execution import BybitExecutor

    with pytest.raises(ConfigError, match="category must be 'spot' or 'linear'"):
        BybitExecutor(api_key="k", secret="s", category="inverse")  # type: ignore[arg-type]
