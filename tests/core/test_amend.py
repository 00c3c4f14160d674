"""Amending a resting order (``ctx.amend``): the paper executor, the risk layer, and what a strategy sees."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.execution import Limits, RiskLimits

D = Decimal


class Amender(flox.Strategy):
    """Runs ``plan[trade_id](ctx)`` on that trade and keeps every order update and fill."""

    def __init__(self, plan: dict[str, Callable[[flox.Context], Any]]) -> None:
        super().__init__(["BTCUSDT"])
        self.plan = plan
        self.updates: list[tuple[str, str, Decimal, Decimal | None, str]] = []
        self.fills: list[tuple[str, Decimal, Decimal]] = []
        self.errors: list[str] = []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        action = self.plan.get(trade.trade_id)
        if action is not None:
            try:
                action(ctx)
            except flox.OrderError as exc:
                self.errors.append(str(exc))

    def on_order_update(self, ctx: flox.Context, u: flox.OrderUpdate) -> None:
        self.updates.append((u.order_id, u.status, u.qty, u.price, u.reason))

    def on_fill(self, ctx: flox.Context, f: flox.Fill) -> None:
        self.fills.append((f.order_id, f.price, f.qty))


def T(tid: str, price: float, qty: float = 1.0) -> flox.Trade:
    return flox.Trade("BTCUSDT", price, qty, "sell", tid)


async def run(plan: dict[str, Callable[[flox.Context], Any]], trades: list[flox.Trade],
              executor: flox.Executor | None = None) -> tuple[Amender, flox.Runner]:
    strategy = Amender(plan)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, executor or flox.PaperExecutor(latency=0.01)) as runner:
        runner.add_strategy(strategy)
        for t in trades:
            await feed.push([t])
            await runner.wait_idle()
            await trio.sleep(0.02)  # past the acknowledgement latency
            await runner.wait_idle()
        feed.close()
    return strategy, runner


async def test_an_amended_price_is_where_the_order_fills(autojump_clock: Any) -> None:
    s, runner = await run(
        {"a": lambda ctx: ctx.limit_buy(90, 2), "b": lambda ctx: ctx.amend("0-1", price=95)},
        [T("a", 100), T("b", 100), T("c", 93, 5)],
    )
    assert s.updates == [
        ("0-1", "accepted", D(2), D(90), ""),
        ("0-1", "accepted", D(2), D(95), "amended"),
        ("0-1", "filled", D(2), D(95), ""),
    ]
    assert s.fills == [("0-1", D(95), D(2))]  # a trade at 93 went through 95: filled at the limit
    order = runner.executor.orders()[0]
    assert (order.price, order.qty, order.status) == (D(95), D(2), "filled")


async def test_a_smaller_qty_counts_what_is_filled_and_finishes_the_order(autojump_clock: Any) -> None:
    s, _ = await run(
        {"a": lambda ctx: ctx.limit_buy(90, 3), "c": lambda ctx: ctx.amend("0-1", qty=2)},
        [T("a", 100), T("b", 90, 1), T("c", 100), T("d", 89, 5)],
    )
    assert [(u[1], u[2], u[4]) for u in s.updates] == [
        ("accepted", D(3), ""), ("partially_filled", D(3), ""), ("partially_filled", D(2), "amended"),
        ("filled", D(2), ""),
    ]
    assert s.fills == [("0-1", D(90), D(1)), ("0-1", D(90), D(1))]


async def test_an_amend_that_makes_the_order_marketable_fills_it_as_taker(autojump_clock: Any) -> None:
    def book(ctx: flox.Context) -> None:
        ctx.limit_sell(110, 1)

    strategy = Amender({"a": book, "b": lambda ctx: ctx.amend("0-1", price=99)})
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01)) as runner:
        runner.add_strategy(strategy)
        for batch in ([flox.Book("BTCUSDT", ((100.0, 5.0),), ((101.0, 5.0),)), T("a", 100)], [T("b", 100)], []):
            if batch:
                await feed.push(batch)
            await runner.wait_idle()
            await trio.sleep(0.02)
            await runner.wait_idle()
        feed.close()
    assert strategy.fills == [("0-1", D(100), D(1))]  # the best bid, not the new limit
    assert strategy.updates[-1][1] == "filled"


@pytest.mark.parametrize(("plan", "why"), [
    ({"a": lambda ctx: ctx.limit_buy(80, 1), "b": lambda ctx: ctx.cancel("0-1"),
      "c": lambda ctx: ctx.amend("0-1", price=81)}, "amend refused: order is canceled"),
    ({"a": lambda ctx: ctx.limit_buy(90, 3), "b": lambda ctx: None,
      "c": lambda ctx: ctx.amend("0-1", qty=1)}, "amend refused: new qty 1 is not above the 1"),
])
async def test_an_amend_that_cannot_be_made_is_answered_and_changes_nothing(
        autojump_clock: Any, plan: dict[str, Any], why: str) -> None:
    s, runner = await run(plan, [T("a", 100), T("b", 90, 1), T("c", 100)])
    refusal = s.updates[-1]
    assert refusal[4].startswith(why)
    order = runner.executor.orders()[0]
    assert refusal[1] == order.status and refusal[2] == order.qty and refusal[3] == order.price


async def test_a_market_order_cannot_be_amended(autojump_clock: Any) -> None:
    # Slow acknowledgement: the market order is still open when the amend is answered... and refused.
    s, _ = await run({"a": lambda ctx: (ctx.market_buy(1), ctx.amend("0-1", qty=2))}, [T("a", 100), T("b", 100)])
    reasons = [u[4] for u in s.updates]
    assert any(r.startswith("amend refused: order is") or r.startswith("amend refused: only a resting limit")
               for r in reasons), reasons


async def test_amend_checks_its_arguments_at_once(autojump_clock: Any) -> None:
    s, _ = await run(
        {"a": lambda ctx: ctx.limit_buy(90, 1),
         "b": lambda ctx: [f() for f in (lambda: ctx.amend("0-1"), lambda: ctx.amend("0-1", price=-1),
                                         lambda: ctx.amend("0-1", qty="nan"), lambda: ctx.amend("9-9", qty=1))]},
        [T("a", 100), T("b", 100)],
    )
    assert len(s.errors) == 1 and "needs a new price, a new qty or both" in s.errors[0]
    s, _ = await run({"a": lambda ctx: ctx.limit_buy(90, 1), "b": lambda ctx: ctx.amend("0-1", price=-1)},
                     [T("a", 100), T("b", 100)])
    assert "price must be > 0" in s.errors[0]
    s, _ = await run({"a": lambda ctx: ctx.limit_buy(90, 1), "b": lambda ctx: ctx.amend("9-9", qty=1)},
                     [T("a", 100), T("b", 100)])
    assert "has no order '9-9'" in s.errors[0]


async def test_risk_checks_what_an_amend_adds(autojump_clock: Any) -> None:
    limits = RiskLimits(per_slot=Limits(max_order_qty=D(3), max_position=D(4)))
    s, runner = await run(
        {"a": lambda ctx: ctx.limit_buy(90, 2), "b": lambda ctx: ctx.amend("0-1", qty=5),
         "c": lambda ctx: ctx.amend("0-1", qty=3), "d": lambda ctx: ctx.limit_buy(80, 1),
         "e": lambda ctx: ctx.amend("0-2", qty=2)},
        [T("a", 100), T("b", 100), T("c", 100), T("d", 100), T("e", 100)],
        flox.RiskExecutor(flox.PaperExecutor(latency=0.01), limits),
    )
    reasons = [(u[0], u[4]) for u in s.updates if u[4]]
    assert reasons[0] == ("0-1", "amend refused: risk: order qty 5 exceeds the slot 0 max order size 3")
    assert reasons[1] == ("0-1", "amended")
    assert reasons[2][0] == "0-2" and "beyond max position 4" in reasons[2][1]  # 3 + 2 open would be 5
    assert [(o.order_id, o.qty) for o in runner.executor.open_orders(0)] == [("0-1", D(3)), ("0-2", D(1))]
    assert runner.executor.status().refused == 2


async def test_a_halted_engine_refuses_amends(autojump_clock: Any) -> None:
    risk = flox.RiskExecutor(flox.PaperExecutor(latency=0.01))

    def halt_then_amend(ctx: flox.Context) -> None:
        risk.halt("test")
        ctx.amend("0-1", price=91)

    s, _ = await run({"a": lambda ctx: ctx.limit_buy(90, 1), "b": halt_then_amend}, [T("a", 100), T("b", 100)], risk)
    assert any(u[4].startswith("amend refused: risk: trading halted") for u in s.updates)


async def test_an_executor_that_cannot_amend_says_so(autojump_clock: Any) -> None:
    class NoAmend(flox.PaperExecutor):
        amend = flox.execution.Executor.amend

    s, _ = await run({"a": lambda ctx: ctx.limit_buy(90, 1), "b": lambda ctx: ctx.amend("0-1", price=91)},
                     [T("a", 100), T("b", 100)], NoAmend(latency=0.01))
    assert s.updates[-1][4] == "amend refused: NoAmend cannot amend orders; cancel the order and place a new one"
    assert s.updates[-1][3] == D(90)


class _Clock:
    def now(self) -> float:
        return 0.0

    def wall_ns(self) -> int:
        return 0


_PRICES = st.sampled_from([D(95), D(98), D(100), D(102), D(105)])
_QTYS = st.sampled_from([D(1), D(2), D(3), D("0.5")])
_OPS = st.lists(st.one_of(
    st.tuples(st.just("limit"), st.sampled_from(["buy", "sell"]), _PRICES, _QTYS),
    st.tuples(st.just("amend"), st.integers(0, 5), st.none() | _PRICES, st.none() | _QTYS),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("trade"), _PRICES, _QTYS),
), max_size=40)


@given(_OPS)
def test_every_amend_is_answered_once_and_orders_stay_consistent(ops: list[tuple[Any, ...]]) -> None:
    from flox_trio.execution import Order

    events: list[Any] = []
    ex = flox.PaperExecutor(latency=0.001, clock="events")
    last = [100.0]
    ex.bind(emit=lambda slot, ev: events.append(ev), quote=lambda slot, sym: (last[0], None, None),
            clock=_Clock())
    ids: list[str] = []
    asked = 0
    ts = 1_000_000_000
    for op in ops:
        if op[0] == "limit":
            ids.append(f"0-{len(ids)}")
            ex.submit(Order(ids[-1], 0, "BTCUSDT", op[1], "limit", op[3], op[2]))
        elif op[0] in ("amend", "cancel") and op[1] < len(ids):
            if op[0] == "amend":
                if op[2] is None and op[3] is None:
                    continue
                ex.amend(0, ids[op[1]], op[2], op[3])
                asked += 1
            else:
                ex.cancel(0, ids[op[1]])
        elif op[0] == "trade":
            last[0] = float(op[1])
        ts += 2_000_000  # past the latency: what was asked is answered at this batch
        ex.on_market([flox.Trade("BTCUSDT", last[0], float(op[2] if op[0] == "trade" else 0.001), "buy", str(ts),
                                 ts, ts)])
    updates = [e for e in events if isinstance(e, flox.OrderUpdate)]
    answers = [u for u in updates if u.reason == "amended" or u.reason.startswith("amend refused")]
    assert len(answers) == asked
    fills: dict[str, Decimal] = {}
    for e in events:
        if isinstance(e, flox.Fill):
            fills[e.order_id] = fills.get(e.order_id, D(0)) + e.qty
    for order in ex.orders():
        assert D(0) < order.qty and order.filled_qty <= order.qty
        assert fills.get(order.order_id, D(0)) == order.filled_qty
        mine = [u for u in updates if u.order_id == order.order_id]
        assert (mine[-1].qty, mine[-1].price) == (order.qty, order.price)  # the last word is the order as it is
        finals = [i for i, u in enumerate(mine) if u.status in ("filled", "canceled") and "refused" not in u.reason]
        assert len(finals) <= 1
        assert all("refused" in u.reason for u in mine[finals[0] + 1:]) if finals else True
    signed = sum((f.qty if f.side == "buy" else -f.qty for f in events if isinstance(f, flox.Fill)), D(0))
    assert ex.position(0, "BTCUSDT").qty == signed
