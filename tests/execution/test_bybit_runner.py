"""BybitExecutor under the engine: an order of the old strategy, filled after a swap, reaches the new one once."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.sim import Simulator

from .conftest import SYMBOL, until
from .test_binance_runner import Buyer, tick
from .test_bybit_executor import KEY, SECRET, bsim, bybit

__all__ = ["bsim"]


async def test_an_order_filled_after_replace_strategy_reaches_the_new_strategy_once(
        bsim: Simulator, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    journal: list[Any] = []
    ex = bybit(bsim)
    feed = flox.feeds.PushFeed([SYMBOL])
    with caplog.at_level(logging.DEBUG):
        async with flox.open_runner(feed, executor=ex) as runner:
            runner.add_strategy(Buyer("old", journal))
            await ex.wait_ready()
            await feed.push([tick(1)])
            await until(lambda: ("old", "update", "0-1", "accepted") in journal)
            await runner.replace_strategy(0, Buyer("new", journal, place=False))
            assert bsim.bybit_private.print_trade(SYMBOL, "99", "0.1") == 1
            await until(lambda: ("new", "fill", "0-1", Decimal("0.1")) in journal)
            bsim.bybit_private.print_trade(SYMBOL, "99", "0.3")
            await until(lambda: ("new", "update", "0-1", "filled") in journal)
            await feed.push([tick(2)])
            await runner.wait_idle()
            await trio.sleep(1)
            await runner.wait_idle()
            status = repr(runner.status()) if hasattr(runner, "status") else ""
            feed.close()
    assert journal == [
        ("old", "update", "0-1", "accepted"),
        ("new", "fill", "0-1", Decimal("0.1")), ("new", "update", "0-1", "partially_filled"),
        ("new", "fill", "0-1", Decimal("0.3")), ("new", "update", "0-1", "filled"),
    ]
    assert ex.position(0, SYMBOL).qty == Decimal("0.3996")
    for text in (caplog.text, status, repr(ex.status()), repr(ex.settings), repr(ex)):
        assert SECRET not in text and KEY not in text


class Mover(Buyer):
    """The next strategy: moves the order it inherited up to 98.50 on its first trade."""

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        for o in ctx.open_orders:
            ctx.amend(o.order_id, price="98.50", qty="0.3")

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        self.journal.append((self.label, "update", update.order_id, update.status, update.price, update.reason))


async def test_an_order_of_the_old_strategy_amended_by_the_new_one_fills_at_its_new_price_once(
        bsim: Simulator, autojump_clock: Any) -> None:
    journal: list[Any] = []
    ex = flox.RiskExecutor(bybit(bsim), flox.execution.RiskLimits(per_slot=flox.execution.Limits(max_order_qty=1)))
    feed = flox.feeds.PushFeed([SYMBOL])
    async with flox.open_runner(feed, executor=ex) as runner:
        runner.add_strategy(Buyer("old", journal))
        await ex.inner.wait_ready()  # type: ignore[attr-defined]
        await feed.push([flox.Trade(SYMBOL, 99.5, 0.01, "buy", "1")])
        await until(lambda: ("old", "update", "0-1", "accepted") in journal)
        await runner.replace_strategy(0, Mover("new", journal, place=False))
        await feed.push([tick(2)])
        await until(lambda: any(e[-1] == "amended" for e in journal))
        assert bsim.bybit_private.print_trade(SYMBOL, "98.60", "1") == 0  # above the new bid: nothing
        assert bsim.bybit_private.print_trade(SYMBOL, "98.50", "1") == 1
        await until(lambda: ("new", "fill", "0-1", Decimal("0.3")) in journal)
        await until(lambda: journal[-1][3] == "filled")
        await trio.sleep(1)
        feed.close()
    assert journal == [
        ("old", "update", "0-1", "accepted"),
        ("new", "update", "0-1", "accepted", Decimal("98.5"), "amended"),
        ("new", "fill", "0-1", Decimal("0.3")), ("new", "update", "0-1", "filled", Decimal("98.5"), ""),
    ]
