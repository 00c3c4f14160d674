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
