"""RiskExecutor: every limit refuses with a rejected OrderUpdate that reaches the strategy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.execution._risk import Limits, RiskExecutor, RiskLimits

from .conftest import Scripted, trade


async def run_rounds(strategies: list[Scripted], rounds: list[list[flox.Trade]], limits: RiskLimits,
                     between: Any = None) -> RiskExecutor:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    risk = RiskExecutor(flox.PaperExecutor(latency=0.01), limits)
    async with flox.open_runner(feed, risk) as runner:
        for s in strategies:
            runner.add_strategy(s)
        for i, batch in enumerate(rounds):
            await feed.push(batch)
            await runner.wait_idle()
            await trio.sleep(0.02)  # past the acknowledgement latency
            await runner.wait_idle()
            if between is not None:
                between(i, risk)
                await trio.sleep(0.02)
                await runner.wait_idle()
        feed.close()
    return risk


async def test_order_size_per_slot_and_global(autojump_clock: Any) -> None:
    a = Scripted(plan={"1": lambda ctx: ctx.market_buy(2), "2": lambda ctx: ctx.market_buy(1)})
    b = Scripted(plan={"1": lambda ctx: ctx.market_buy(4), "2": lambda ctx: ctx.market_buy(6)})
    limits = RiskLimits(per_slot=Limits(max_order_qty=Decimal("1.5")), total=Limits(max_order_qty=5),
                        slots={1: Limits(max_order_qty=10)})
    risk = await run_rounds([a, b], [[trade("1")], [trade("2")]], limits)
    assert a.status_of("0-1") == ["rejected"]
    assert "order qty 2 exceeds the slot 0 max order size 1.5" in a.reasons()[0]
    assert a.status_of("0-2") == ["accepted", "filled"]
    assert b.status_of("1-1") == ["accepted", "filled"]  # slot 1's override allows 4
    assert b.status_of("1-2") == ["rejected"]
    assert "exceeds the global max order size 5" in b.reasons()[0]
    assert risk.refused == 2
    assert risk.position(0, "BTCUSDT").qty == 1 and risk.position(1, "BTCUSDT").qty == 4
    assert [o.status for o in risk.orders() if o.order_id in ("0-1", "1-2")] == ["rejected", "rejected"]


async def test_max_position_counts_open_orders_and_allows_reducing(autojump_clock: Any) -> None:
    s = Scripted(plan={
        "1": lambda ctx: ctx.market_buy(2),
        "2": lambda ctx: ctx.limit_buy(50, 1),      # rests: worst case 3
        "3": lambda ctx: ctx.limit_buy(50, 0.5),    # 3.5 > 3: refused
        "4": lambda ctx: ctx.market_sell(5),        # 2 - 5 = -3, allowed (abs <= 3)
        "5": lambda ctx: ctx.market_sell(1),        # -3 - 1 = -4: refused
    })
    limits = RiskLimits(per_slot=Limits(max_position=3))
    risk = await run_rounds([s], [[trade(str(i))] for i in range(1, 6)], limits)
    assert s.status_of("0-1") == ["accepted", "filled"]
    assert s.status_of("0-2") == ["accepted"]
    assert s.status_of("0-3") == ["rejected"]
    assert "could take the slot 0 position to 3.5" in s.reasons()[0]
    assert s.status_of("0-4") == ["accepted", "filled"]
    assert s.status_of("0-5") == ["rejected"]
    assert "to -4" in s.reasons()[1]
    assert risk.position(0, "BTCUSDT").qty == -3


async def test_global_position_sums_slots(autojump_clock: Any) -> None:
    a = Scripted(plan={"1": lambda ctx: ctx.market_buy(2)})
    b = Scripted(plan={"2": lambda ctx: ctx.market_buy(2)})
    risk = await run_rounds([a, b], [[trade("1")], [trade("2")]], RiskLimits(total=Limits(max_position=3)))
    assert a.status_of("0-1") == ["accepted", "filled"]
    assert b.status_of("1-1") == ["rejected"]
    assert "global position to 4" in b.reasons()[0]
    assert risk.status().refused == 1


async def test_order_rate_per_slot_and_global_on_the_trio_clock(autojump_clock: Any) -> None:
    burst = lambda ctx: [ctx.limit_buy(10, 1) for _ in range(3)]  # noqa: E731
    a = Scripted(plan={"1": burst, "2": burst})
    b = Scripted(plan={"1b": lambda ctx: ctx.limit_buy(10, 1)})
    limits = RiskLimits(per_slot=Limits(max_orders_per_second=2), total=Limits(max_orders_per_second=2))
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    risk = RiskExecutor(flox.PaperExecutor(latency=0.01), limits)
    async with flox.open_runner(feed, risk) as runner:
        runner.add_strategy(a)
        runner.add_strategy(b)
        await feed.push([trade("1")])
        await runner.wait_idle()
        # Slots handle one batch in no set order: slot 1's order comes in the next one.
        await feed.push([trade("1b")])
        await runner.wait_idle()
        await trio.sleep(0.5)
        await runner.wait_idle()
        # slot 0 used its 2 per second, its third was refused; slot 1 hit the global limit
        assert a.status_of("0-1") == ["accepted"] and a.status_of("0-2") == ["accepted"]
        assert a.status_of("0-3") == ["rejected"]
        assert "slot 0 order rate limit of 2 per second" in a.reasons()[0]
        assert b.status_of("1-1") == ["rejected"]
        assert "global order rate limit of 2 per second" in b.reasons()[0]
        await trio.sleep(0.6)  # the window has moved on
        await feed.push([trade("2")])
        await runner.wait_idle()
        await trio.sleep(0.05)
        await runner.wait_idle()
        assert [a.status_of(f"0-{i}") for i in (4, 5, 6)] == [["accepted"], ["accepted"], ["rejected"]]
        feed.close()


async def test_halt_cancels_open_orders_refuses_new_and_resume(autojump_clock: Any) -> None:
    s = Scripted(plan={
        "1": lambda ctx: ctx.limit_buy(50, 1),
        "2": lambda ctx: ctx.market_buy(1),
        "3": lambda ctx: ctx.market_buy(1),
    })

    def between(i: int, risk: RiskExecutor) -> None:
        if i == 0:
            assert risk.halt("operator says stop") == 1
        if i == 1:
            risk.resume()

    risk = await run_rounds([s], [[trade("1")], [trade("2")], [trade("3")]], RiskLimits(), between)
    assert s.status_of("0-1") == ["accepted", "canceled"]
    assert s.status_of("0-2") == ["rejected"]
    assert "trading halted (operator says stop)" in s.reasons()[0]
    assert s.status_of("0-3") == ["accepted", "filled"]
    assert not risk.halted and risk.open_orders(0) == []


async def test_cancel_of_a_refused_order_is_answered_not_raised(autojump_clock: Any) -> None:
    s = Scripted(plan={"1": lambda ctx: ctx.market_buy(5), "2": lambda ctx: ctx.cancel("0-1")})
    await run_rounds([s], [[trade("1")], [trade("2")]], RiskLimits(per_slot=Limits(max_order_qty=1)))
    assert s.status_of("0-1") == ["rejected", "rejected"]
    assert s.reasons()[1] == "cancel refused: order is rejected"


def test_risk_executor_needs_an_executor() -> None:
    with pytest.raises(flox.OrderError, match="wraps an Executor"):
        RiskExecutor(object())  # type: ignore[arg-type]


async def test_what_risk_keeps_is_bounded_in_a_live_run(autojump_clock: Any) -> None:
    """A refusal history and order-rate windows that grow with every order are a leak over a long run."""
    risk = RiskExecutor(flox.PaperExecutor(latency=0.001), RiskLimits(per_slot=Limits(max_order_qty=1)), history=50)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    plan = {str(i): (lambda ctx: [ctx.market_buy(2), ctx.market_buy(0.001)]) for i in range(300)}
    async with flox.open_runner(feed, risk) as runner:
        runner.add_strategy(Scripted(plan=plan))
        for i in range(300):
            await feed.push([trade(str(i))])
            await trio.sleep(0.5)
        feed.close()
    assert risk.refused == 300
    assert len(risk._refused) == 50
    assert len(risk._all_times) <= 3 and all(len(t) <= 3 for t in risk._slot_times.values())
