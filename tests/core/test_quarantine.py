"""A quarantined slot's open orders and position: settled by policy, and said out loud."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import flox_trio as flox

from .conftest import make_trades


class RestsThenBreaks(flox.Strategy):
    """Rests a limit buy far below the market and buys at once, then raises on every trade."""

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        if trade.trade_id == "0":
            ctx.limit_buy(1, 1)
            ctx.market_buy(2)
            return
        raise RuntimeError("broken")


@pytest.mark.parametrize("policy", ["cancel", "keep"])
async def test_quarantine_cancels_or_keeps_open_orders_and_says_what_is_held(
    policy: str, autojump_clock: Any, caplog: Any
) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01), max_errors=2,
                                quarantine_orders=policy) as runner:  # type: ignore[arg-type]
        runner.add_strategy(RestsThenBreaks(["BTCUSDT"]))
        for t in make_trades(4):
            await feed.push([t])
            await trio.sleep(0.1)
        status = runner.status().slots[0]
        orders = runner.executor.orders()
        feed.close()
    assert status.state is flox.SlotState.QUARANTINED
    limit = next(o for o in orders if o.order_type == "limit")
    assert limit.status == ("canceled" if policy == "cancel" else "accepted")
    assert status.position == {"BTCUSDT": 2}
    assert "quarantined with position 2 BTCUSDT and 1 open orders" in caplog.text


async def test_a_bad_quarantine_policy_is_refused() -> None:
    with pytest.raises(flox.RunnerError, match="quarantine_orders"):
        async with flox.open_runner([], quarantine_orders="sell"):  # type: ignore[arg-type]
            pass
