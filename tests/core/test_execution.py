from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.execution import Position

from .conftest import Recorder


class Trader(Recorder):
    """Runs a script of intents on given trade ids."""

    def __init__(self, journal: list[Any], plan: dict[str, Any]) -> None:
        super().__init__(["BTCUSDT"], journal, "t")
        self.plan = plan
        self.ids: list[str] = []
        self.ctx: flox.Context | None = None

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        super().on_trade(ctx, trade)
        self.ctx = ctx
        action = self.plan.get(trade.trade_id)
        if action is not None:
            self.ids.append(action(ctx))


def T(tid: str, price: float, qty: float = 1.0) -> flox.Trade:
    return flox.Trade("BTCUSDT", price, qty, "buy", tid)


async def run_plan(plan: dict[str, Any], rounds: list[list[flox.Trade]], **kw: Any) -> tuple[Trader, list[Any], flox.Runner]:
    journal: list[Any] = []
    trader = Trader(journal, plan)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01, **kw)) as runner:
        runner.add_strategy(trader)
        for batch in rounds:
            await feed.push(batch)
            await runner.wait_idle()
            await trio.sleep(0.02)  # past the acknowledgement latency
            await runner.wait_idle()
        feed.close()
    return trader, journal, runner


def updates(journal: list[Any]) -> list[tuple[str, str]]:
    return [p for k, _, p in journal if k == "update"]


async def test_market_order_lifecycle_and_position(autojump_clock: Any) -> None:
    trader, journal, runner = await run_plan(
        {"a": lambda ctx: ctx.market_buy(2)},
        [[T("a", 100.0)], [T("b", 101.0)]],
    )
    assert trader.ids == ["0-1"]
    assert updates(journal) == [("0-1", "accepted"), ("0-1", "filled")]
    pos = runner.executor.position(0, "BTCUSDT")
    assert pos.qty == 2 and pos.avg_entry_price == Decimal("100.0")
    order = runner.executor.orders()[0]
    assert order.status == "filled" and order.avg_fill_price == Decimal("100.0")


async def test_limit_order_rests_then_fills_partially_then_fully(autojump_clock: Any) -> None:
    trader, journal, runner = await run_plan(
        {"a": lambda ctx: ctx.limit_buy(99.5, 1.5)},
        [[T("a", 100.0)], [T("b", 99.6, 5)], [T("c", 99.5, 1.0)], [T("d", 99.0, 3.0)]],
    )
    assert updates(journal) == [("0-1", "accepted"), ("0-1", "partially_filled"), ("0-1", "filled")]
    fills = [p for k, _, p in journal if k == "fill"]
    assert fills == [("0-1", Decimal("1.0")), ("0-1", Decimal("0.5"))]
    assert runner.executor.position(0, "BTCUSDT").qty == Decimal("1.5")


async def test_cancel_and_cancel_refusal(autojump_clock: Any) -> None:
    trader, journal, runner = await run_plan(
        {"a": lambda ctx: ctx.limit_sell(120, 1), "b": lambda ctx: ctx.cancel("0-1"),
         "c": lambda ctx: ctx.cancel("0-1")},
        [[T("a", 100.0)], [T("b", 100.0)], [T("c", 100.0)]],
    )
    assert updates(journal) == [("0-1", "accepted"), ("0-1", "canceled"), ("0-1", "rejected")]
    assert runner.executor.open_orders(0) == []


async def test_market_order_without_a_price_is_rejected(autojump_clock: Any) -> None:
    journal: list[Any] = []

    class Eager(Recorder):
        def on_start(self) -> None:
            pass

        def on_book(self, ctx: flox.Context, book: flox.Book) -> None:
            ctx.market_buy(1)

    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(Eager(["BTCUSDT"], journal, "e"))
        await feed.push([flox.Book("BTCUSDT", (), ())])
        await runner.wait_idle()
        await trio.sleep(0.1)
        await runner.wait_idle()
        feed.close()
    order = runner.executor.orders()[0]
    assert order.status == "rejected" and "no market price" in order.reason


async def test_bad_intents_raise_order_errors(autojump_clock: Any) -> None:
    errors: list[str] = []

    def bad(ctx: flox.Context) -> str:
        for call in (lambda: ctx.market_buy(0), lambda: ctx.market_buy("abc"),
                     lambda: ctx.limit_buy(-1, 1), lambda: ctx.market_buy(float("nan")),
                     lambda: ctx.cancel("nope")):
            try:
                call()
            except flox.OrderError as exc:
                errors.append(str(exc))
        return ""

    await run_plan({"a": bad}, [[T("a", 100.0)]])
    assert len(errors) == 5
    assert "qty must be > 0" in errors[0] and "not a number" in errors[1]


def test_position_arithmetic_is_exact_over_many_fills() -> None:
    pos = Position("BTCUSDT")
    for _ in range(20_000):
        pos.apply_fill("buy", Decimal("0.1"), Decimal("0.1"))
    assert pos.qty == Decimal("2000.0")
    assert pos.avg_entry_price == Decimal("0.1")
    for _ in range(20_000):
        pos.apply_fill("sell", Decimal("0.3"), Decimal("0.1"))
    assert pos.qty == 0 and pos.avg_entry_price is None
    assert pos.realized_pnl == Decimal("400.00")


@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]),
                          st.decimals("0.01", "1000", places=2), st.decimals("0.001", "10", places=3)),
                max_size=60))
def test_position_pnl_matches_cash_accounting(fills: list[tuple[str, Decimal, Decimal]]) -> None:
    pos = Position("X")
    cash = Decimal(0)
    for side, price, qty in fills:
        pos.apply_fill(side, price, qty)
        cash += -price * qty if side == "buy" else price * qty
    mark = Decimal("123.45")
    # Realized + unrealized equals cash + inventory at the mark, to the last digit.
    assert pos.realized_pnl + pos.unrealized_pnl(mark) == cash + pos.qty * mark


def test_executor_rejects_bad_latency() -> None:
    with pytest.raises(flox.OrderError, match="latency"):
        flox.PaperExecutor(latency=-1)


async def test_a_live_executor_keeps_a_bounded_history(autojump_clock: Any) -> None:
    plan = {str(i): (lambda ctx: ctx.market_buy(1)) for i in range(10)}
    journal: list[Any] = []
    trader = Trader(journal, plan)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    executor = flox.PaperExecutor(latency=0.01, history=3)
    async with flox.open_runner(feed, executor) as runner:
        runner.add_strategy(trader)
        for i in range(10):
            await feed.push([T(str(i), 100.0)])
            await runner.wait_idle()
            await trio.sleep(0.02)
            await runner.wait_idle()
        feed.close()
    assert [o.order_id for o in executor.orders()] == ["0-8", "0-9", "0-10"]
    assert len(executor.fill_log) == 3
    assert executor.position(0, "BTCUSDT").qty == 10  # positions are never trimmed


async def test_open_orders_follow_every_change_of_an_order(autojump_clock: Any) -> None:
    # The paper executor keeps its answer to ctx.open_orders until an order changes: each
    # trade must still see the orders as they are then.
    seen: list[list[tuple[str, str, Decimal]]] = []
    handed: list[flox.Order] = []

    def look(ctx: flox.Context) -> None:
        orders = ctx.open_orders
        seen.append([(o.order_id, o.status, o.filled_qty) for o in orders])
        handed.extend(orders)

    plan = {"a": lambda ctx: ctx.limit_buy(99.5, 1.5), "a2": look, "b": look, "b2": look, "c": look,
            "c2": lambda ctx: ctx.limit_buy(90, 1), "d": look, "d2": lambda ctx: ctx.cancel("0-2"), "e": look}
    rounds = [[T("a", 100.0), T("a2", 100.0)], [T("b", 99.6, 1.0), T("b2", 99.9)], [T("c", 99.5, 1.0),
              T("c2", 99.9)], [T("d", 99.9), T("d2", 99.9)], [T("e", 99.9)]]
    _, _, runner = await run_plan(plan, rounds)
    assert seen == [
        [("0-1", "new", Decimal(0))],                   # in flight
        [("0-1", "accepted", Decimal(0))],              # resting: 99.6 is above its price
        [("0-1", "accepted", Decimal(0))],
        [("0-1", "partially_filled", Decimal("1.0"))],  # the trade of 1.0 at 99.5
        [("0-1", "partially_filled", Decimal("1.0")), ("0-2", "accepted", Decimal(0))],
        [("0-1", "partially_filled", Decimal("1.0"))],  # 0-2 canceled
    ]
    # What a strategy is handed are copies: changing one changes nothing in the executor.
    handed[-1].status = "filled"
    handed[-1].filled_qty = Decimal(99)
    (order,) = runner.executor.open_orders(0)
    assert (order.status, order.filled_qty) == ("partially_filled", Decimal("1.0"))
    assert [(o.order_id, o.status) for o in runner.executor.orders()] == [("0-1", "partially_filled"),
                                                                          ("0-2", "canceled")]
