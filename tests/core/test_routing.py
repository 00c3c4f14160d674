"""The bus: each slot gets its symbols' events once and in order, inline or through its queue."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio._core import _slot

from .conftest import BASE_NS, AsyncRecorder, Recorder

SYMBOLS = [f"S{i}USDT" for i in range(6)]


def interleaved(symbols: list[str], n: int, start: int = 0) -> list[flox.Trade]:
    return [
        flox.Trade(symbols[i % len(symbols)], 100.0 + i % 9, 0.5, "buy", str(i), BASE_NS + i, BASE_NS + i)
        for i in range(start, start + n)
    ]


class SelfSwapping(Recorder):
    """Asks for its own replacement from inside ``on_trade`` (a request made in the publisher's task)."""

    def __init__(self, symbols: Any, journal: list[Any], label: str, runner: Any, after: int,
                 successor: Any) -> None:
        super().__init__(symbols, journal, label)
        self.runner, self.after, self.successor = runner, after, successor
        self.index = -1
        self.requested = False

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        super().on_trade(ctx, trade)
        if len(self.trades) == self.after:
            self.requested = True
            self.runner.request_replace(self.index, self.successor())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    slots=st.lists(
        st.tuples(st.sampled_from(["sync", "async", "self_swap"]), st.sets(st.sampled_from(SYMBOLS), min_size=1,
                                                                           max_size=2)),
        min_size=1, max_size=8,
    ),
    plan=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["push", "nowait"]), st.lists(st.sampled_from(SYMBOLS), min_size=1,
                                                                    max_size=60)),
            st.tuples(st.just("swap"), st.tuples(st.integers(0, 7), st.booleans())),
            st.tuples(st.just("yield"), st.integers(0, 3)),
        ),
        min_size=1, max_size=25,
    ),
)
def test_every_slot_gets_its_symbols_once_and_in_order(slots: list[tuple[str, set[str]]],
                                                       plan: list[tuple[str, Any]]) -> None:
    """Many slots (sync ones served inline, async ones through their queue, several on one symbol,
    some on two), batches that interleave the symbols, published by the feed's task or, as a
    connector's reader does, by ``publish_nowait`` when nothing waits before them, swaps requested
    from outside and from inside a callback: what each slot's strategies saw, one after another,
    is its symbols' events in order."""

    async def main() -> None:
        journal: list[Any] = []
        lineage: dict[int, list[Recorder]] = {}

        def fresh(index: int, is_async: bool) -> Recorder:
            label = f"{index}.{len(lineage.setdefault(index, []))}"
            s = (AsyncRecorder if is_async else Recorder)(sorted(slots[index][1]), journal, label)
            lineage[index].append(s)
            return s

        feed = flox.feeds.PushFeed(SYMBOLS, buffer=1000)
        pushed: list[flox.Trade] = []
        async with flox.open_runner(feed, capacity=4) as runner:
            for index, (kind, _) in enumerate(slots):
                if kind == "self_swap":
                    label = f"{index}.0"
                    s = SelfSwapping(sorted(slots[index][1]), journal, label, runner, 3,
                                     lambda index=index: fresh(index, False))
                    lineage[index] = [s]
                    s.index = runner.add_strategy(s)
                else:
                    assert runner.add_strategy(fresh(index, kind == "async")) == index
            for op, arg in plan:
                if op in ("push", "nowait"):
                    batch = [interleaved([sym], 1, start=len(pushed) + k)[0] for k, sym in enumerate(arg)]
                    pushed.extend(batch)
                    # Taken here only behind everything pushed before it, as a connector's publisher does.
                    if op == "push" or feed.pending or not runner.publish_nowait(batch):
                        feed.push_nowait(batch)
                elif op == "swap":
                    index, is_async = arg
                    if index < len(slots):
                        runner.request_replace(index, fresh(index, is_async))
                else:
                    for _ in range(arg):
                        await trio.lowlevel.checkpoint()
            feed.close()
            await runner.wait_idle()
            dispatched = {s.index: s.market_dispatched for s in runner.slots}
        for index, (_, symbols) in enumerate(slots):
            want = [e.trade_id for e in pushed if e.symbol in symbols]
            got = [tid for s in lineage[index] for tid in s.trades]
            assert got == want, f"slot {index}"
            assert dispatched[index] == len(want)
            order = [who for kind, who, _ in journal if kind in ("start", "stop") and who.startswith(f"{index}.")]
            assert order == [x for s in lineage[index] for x in (s.label, s.label)]
            first = lineage[index][0]
            if isinstance(first, SelfSwapping) and first.requested:
                # Its request, made inside on_trade, landed right after that event (unless a
                # swap asked for from outside came first).
                assert len(first.trades) <= first.after, f"slot {index}"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_an_idle_sync_slot_is_served_in_the_publishing_task() -> None:
    """A whole market in one feed: the events reach idle synchronous slots without a task switch."""
    tasks: dict[str, set[Any]] = {}

    class Where(flox.Strategy):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            tasks.setdefault(trade.symbol, set()).add(trio.lowlevel.current_task())

    symbols = [f"X{i}USDT" for i in range(50)]
    async with flox.open_runner(flox.feeds.ListFeed(interleaved(symbols, 5000), batch_size=500)) as runner:
        for sym in symbols:
            runner.add_strategy(Where([sym]))
    slots = runner.slots
    assert all(s.dispatched == 100 for s in slots)
    # Each slot's events ran in one task (the feed's), not the slot's own dispatch task.
    assert all(len(t) == 1 for t in tasks.values())
    assert len(set().union(*tasks.values())) == 1
    assert sum(s.queue.inlined for s in slots) == 5000
    assert all(s.queue.enqueued == 0 for s in slots)


async def test_a_whole_markets_trades_reach_on_trade_as_the_hosts_loop_gives_them() -> None:
    """The bus's per-event path hands a trade to ``on_trade`` itself: ``ctx.last_price`` is the trade's
    price when it runs, an exception counts against its slot alone (then quarantines it), and a gap
    between a slot's trades reaches it in its place."""
    seen: dict[str, list[tuple[str, Any, float | None]]] = {}

    class Sees(flox.Strategy):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            seen.setdefault(trade.symbol, []).append(("trade", trade.trade_id, ctx.last_price))
            assert ctx.last_price == trade.price
            if trade.symbol == "X3USDT":
                raise ValueError(f"bad trade {trade.trade_id}")

        def on_gap(self, ctx: flox.Context, gap: flox.Gap) -> None:
            seen.setdefault(gap.symbol, []).append(("gap", gap.missing, ctx.last_price))

    symbols = [f"X{i}USDT" for i in range(20)]
    events: list[Any] = interleaved(symbols, 2000)
    events.insert(46, flox.Gap("X5USDT", "trade_ids", 7))  # right after X5's third trade (ids 5, 25, 45)
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=200)) as runner:
        for sym in symbols:
            runner.add_strategy(Sees([sym]), max_errors=3)
    slots = runner.slots
    assert [t for kind, t, _ in seen["X3USDT"]] == ["3", "23", "43"]
    assert slots[3].errors == 3 and (slots[3].quarantine_reason or "").startswith("3 errors")
    assert runner.strategy_errors == 3
    x5 = seen["X5USDT"]
    # In its place, after trade 45 (price 100 + 45 % 9), whose price the gap's ctx still holds.
    assert x5[2:4] == [("trade", "45", 100.0), ("gap", 7, 100.0)]
    assert [t for kind, t, _ in x5 if kind == "trade"] == [e.trade_id for e in events
                                                            if isinstance(e, flox.Trade) and e.symbol == "X5USDT"]
    for sym in symbols:
        if sym != "X3USDT":
            assert [t for kind, t, _ in seen[sym] if kind == "trade"] == [
                e.trade_id for e in events if isinstance(e, flox.Trade) and e.symbol == sym], sym
    assert sum(s.queue.inlined for s in slots) > len(events) // 2
    assert all(s.queue.enqueued == 0 for s in slots if s.index != 3)


async def test_a_request_from_a_callback_lands_at_the_next_event_inline_too() -> None:
    """Strategies that swap themselves out after five trades, on a whole-market feed that never
    yields between batches: each saw exactly five trades, and nothing was lost or repeated."""
    journal: list[Any] = []
    symbols = [f"X{i}USDT" for i in range(40)]
    events = interleaved(symbols, 8000)
    lineage: list[Recorder] = []
    holder: dict[str, Any] = {}

    def successor() -> Recorder:
        s = SelfSwapping(["X7USDT"], journal, f"s{len(lineage)}", holder["runner"], 5, successor)
        s.index = 7
        lineage.append(s)
        return s

    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=400)) as runner:
        holder["runner"] = runner
        for sym in symbols:
            if sym == "X7USDT":
                assert runner.add_strategy(successor()) == 7
            else:
                runner.add_strategy(Recorder([sym], journal, sym))
    want = [e.trade_id for e in events if e.symbol == "X7USDT"]
    assert [t for s in lineage for t in s.trades] == want
    assert len(lineage) > 10
    assert all(len(s.trades) == 5 for s in lineage[:-1])
    assert sum(s.queue.inlined for s in runner.slots) > len(events) // 2


async def test_a_slow_sync_slot_under_a_drop_policy_goes_back_to_its_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline, a slow strategy would hold every slot; past the budget its batches go to its queue,
    where its overflow policy decides, and the other slots keep getting theirs."""
    ticks = iter(range(0, 10**12, 5_000_000))  # every reading of the cost clock is 5 ms later
    monkeypatch.setattr(_slot, "real_ns", lambda: next(ticks))
    journal: list[Any] = []
    feed = flox.feeds.PushFeed(["A", "B"])
    async with flox.open_runner(feed, capacity=2) as runner:
        slow = runner.add_strategy(Recorder(["A"], journal, "slow"), overflow="drop_newest")
        fast = runner.add_strategy(Recorder(["B"], journal, "fast"))
        await feed.push(interleaved(["A"], 1))
        await trio.testing.wait_all_tasks_blocked()
        assert runner.slots[slow].queue.enqueued == 0  # the first batch ran inline...
        for k in range(1, 4):
            await feed.push(interleaved(["A", "B"], 2, start=2 * k))
            await trio.testing.wait_all_tasks_blocked()
        # ...and was too slow: the next ones went through its queue.
        assert runner.slots[slow].queue.enqueued == 3
        assert runner.slots[fast].queue.enqueued == 0
        feed.close()
    assert runner.slots[slow].dispatched == 4 and runner.slots[fast].dispatched == 3


class Trader(Recorder):
    """Buys on every third trade and rests a limit sell; asks for its own replacement from ``on_fill`` once."""

    def __init__(self, symbols: Any, journal: list[Any], label: str, runner: Any = None, index: int = 0) -> None:
        super().__init__(symbols, journal, label)
        self.runner, self.index = runner, index
        self.fills = 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        super().on_trade(ctx, trade)
        if len(self.trades) % 3 == 1:
            ctx.market_buy(0.1)
            ctx.limit_sell(trade.price + 2, 0.05)

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        super().on_fill(ctx, fill)
        self.fills += 1
        if self.runner is not None and self.fills == 5:
            self.runner.request_replace(self.index, Trader(self.symbols, self.journal, self.label + "'"))


@pytest.mark.parametrize("inline_orders", [True, False])
async def test_an_idle_slot_takes_its_order_events_in_the_flushing_task_as_its_queue_would_give_them(
        inline_orders: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    journals: dict[bool, list[Any]] = {}
    enqueued: dict[bool, int] = {}
    deliver = _slot.Slot.deliver_nowait

    def queued(self: Any, batch: list[Any], *, orders: bool = False) -> list[Any] | None:
        return batch if orders else deliver(self, batch)

    for inline in (inline_orders, not inline_orders):
        if not inline:
            monkeypatch.setattr(_slot.Slot, "deliver_nowait", queued)
        journal: list[Any] = []
        trades = [flox.Trade("BTCUSDT", 100.0 + (i * 7) % 5, 0.5, "buy" if i % 2 else "sell", str(i),
                             BASE_NS + i * 10**6, BASE_NS + i * 10**6) for i in range(300)]
        feed = flox.feeds.ListFeed(trades, batch_size=7)
        async with flox.open_runner(feed, flox.PaperExecutor(latency=0.0), lockstep=True) as runner:
            runner.add_strategy(Trader(["BTCUSDT"], journal, "a", runner, 0))
        journals[inline], enqueued[inline] = journal, runner.slots[0].queue.enqueued
        monkeypatch.undo()
    # The same callbacks in the same order; order events went through the queue only around the swap.
    assert journals[True] == journals[False]
    assert enqueued[True] < enqueued[False] / 10
    labels = [label for _, label, _ in journals[True]]
    assert "a'" in labels  # the swap asked for from on_fill happened, at the same point both ways
    assert sum(1 for kind, _, _ in journals[True] if kind == "fill") > 5
