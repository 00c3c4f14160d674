"""An engine restarted on the same account adopts the open orders of its previous run, and only those."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

import flox_trio as flox
from flox_trio.sim import Simulator

from .conftest import SYMBOL, make_executor, order, start, until
from .test_bybit_executor import bsim as bsim  # the Bybit simulator fixture, by name
from .test_bybit_executor import bybit


class Holder(flox.Strategy):
    """Places nothing; records the order events that reach its slot."""

    def __init__(self, journal: list[Any]) -> None:
        super().__init__([SYMBOL])
        self.journal = journal

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        self.journal.append(("update", update.order_id, update.status))

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        self.journal.append(("fill", fill.order_id, fill.qty))


async def test_binance_restart_adopts_the_previous_runs_open_orders_and_leaves_foreign_ones(
        sim: Simulator, autojump_clock: Any) -> None:
    await restart(lambda: make_executor(sim), sim.binance_private)


async def test_bybit_restart_adopts_the_previous_runs_open_orders_and_leaves_foreign_ones(
        bsim: Simulator, autojump_clock: Any) -> None:
    await restart(lambda: bybit(bsim), bsim.bybit_private)


async def restart(executor: Any, private: Any) -> None:
    # The previous run: slot 0 placed a resting buy, then the process went away (no cancel).
    async with trio.open_nursery() as nursery:
        before = executor()
        engine = await start(nursery, before)
        before.submit(order("0-1", "buy", "limit", "0.4", "99.00"))
        before.submit(order("3-1", "buy", "limit", "0.1", "98.00", slot=3))
        await until(lambda: engine.updates("0-1") == [("accepted", "0")] == engine.updates("3-1"))
        # Someone else's order on the same account (another tool, a person): not ours.
        other = executor()
        other.prefix = "manual_"
        other_engine = await start(nursery, other)
        other.submit(order("7", "sell", "limit", "0.1", "105.00"))
        await until(lambda: other_engine.updates("7") == [("accepted", "0")])
        nursery.cancel_scope.cancel()
    previous, gone = before.client_id("0-1"), before.client_id("3-1")
    assert len(private.open_orders_of(before._api_key)) == 3

    journal: list[Any] = []
    after = executor()
    assert after.run_id != before.run_id
    feed = flox.feeds.PushFeed([SYMBOL])
    async with flox.open_runner(feed, executor=after) as runner:
        runner.add_strategy(Holder(journal))
        await after.wait_ready()
        st = after.status()
        assert st.adopted_orders == tuple(sorted((previous, gone)))
        assert st.foreign_orders == ("manual_7",)
        [adopted] = after.open_orders(0)
        assert (adopted.order_id, adopted.side, adopted.qty, adopted.price) == (previous, "buy", Decimal("0.4"),
                                                                               Decimal("99"))
        # The venue fills it: the fill reaches the slot named in its client id, once.
        assert private.print_trade(SYMBOL, "99", "0.4") == 1
        await until(lambda: ("update", previous, "filled") in journal)
        # An adopted order of a slot this run does not have: its events are counted, not lost.
        assert private.print_trade(SYMBOL, "98", "0.1") == 1
        await until(lambda: runner.status().undelivered_order_events == {3: 2})
        assert after.position(3, SYMBOL).qty > 0
        await trio.sleep(1)
        await runner.wait_idle()
        feed.close()
    assert journal == [("fill", previous, Decimal("0.4")), ("update", previous, "filled")]
    # Foreign orders are left alone: still open at the venue.
    assert [o.client_id for o in private.open_orders_of(before._api_key)] == ["manual_7"]
