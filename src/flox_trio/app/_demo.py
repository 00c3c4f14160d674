"""The demo: EMA strategies (Python and JavaScript) on a market, a live swap of each, and what stayed put.

On the embedded simulator (the default) a Binance connector reaches it over
loopback WebSockets, so the swap happens on a real session; ``offline`` plays
a seeded random walk through a ``ListFeed`` on virtual time instead. The
strategies ship inside the package (``flox_trio/app/strategies/``), so the
demo runs wherever flox-trio is installed.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from .._core._events import OrderStatus
from .._core._runner import Runner
from .._core._status import SwapReport
from .._loader import strategy_class
from .._runner import open_runner
from ..connectors import Binance
from ..execution import PaperExecutor
from ..feeds import ListFeed, random_walk
from ..js import load as load_js
from ..sim import open_simulator

SYMBOL = "BTCUSDT"
#: The demo's strategies, shipped as package data (py_strategies/ and js_strategies/ link here).
STRATEGIES = Path(__file__).resolve().with_name("strategies")


@attrs.frozen
class SessionView:
    connection_id: int | None
    connect_count: int
    subscriptions: tuple[str, ...]


@attrs.frozen
class DemoSlot:
    index: int
    language: str
    what: str
    events_before: int
    events_after: int
    #: Trades the old and the new strategy saw (the new one's count includes its predecessor's, via the snapshot).
    old_seen: Any
    new_seen: Any
    pnl: Decimal


@attrs.frozen
class DemoResult:
    venue: str
    #: The exchange session just before and just after the swaps (None offline).
    session: tuple[SessionView, SessionView] | None
    slots: tuple[DemoSlot, ...]
    reports: tuple[SwapReport, ...]
    #: Orders open or in flight at the swap moment, and their fate afterwards.
    open_at_swap: tuple[str, ...]
    fate: dict[str, OrderStatus]
    orders_placed: int
    orders_filled: int
    published: int


def run_demo(state: Path, *, seconds: float = 8.0, offline: bool = False, seed: int = 7) -> DemoResult:
    """Run the demo, recording to ``state/demo.tape``; ``state`` also holds the strategies' snapshots."""
    if offline:
        return trio.run(_offline, seconds, seed, state, clock=trio.testing.MockClock(autojump_threshold=0))
    return trio.run(_live, seconds, seed, state)


def _ema() -> Any:
    return strategy_class(STRATEGIES / "ema.py", "EmaStrategy")


def _pnl(runner: Runner, slot: int) -> Decimal:
    ex = runner.executor
    pos = ex.position(slot, SYMBOL)
    return pos.realized_pnl + pos.unrealized_pnl(ex.mark_price(slot, SYMBOL))


def _counts(runner: Runner) -> dict[int, int]:
    return {s.index: s.dispatched for s in runner.slots}


def _seen(strategy: Any) -> Any:
    """Trades a strategy saw: a Python attribute, or a property of the JS object."""
    if hasattr(strategy, "trades_seen"):
        return strategy.trades_seen
    return strategy.get("tradesSeen")


def _orders(runner: Runner) -> tuple[int, int]:
    orders = runner.executor.orders()
    return len(orders), sum(o.status == "filled" for o in orders)


async def _offline(seconds: float, seed: int, state: Path) -> DemoResult:
    ema = _ema()
    feed = ListFeed(random_walk(int(seconds * 200), seed=seed, symbol=SYMBOL), batch_size=64, pace=True)
    snap = state / "ema.json"
    async with open_runner(feed, PaperExecutor(latency=0.02), tape=state / "demo.tape") as runner:
        first = ema([SYMBOL], fast=12, slow=26, snapshot=snap, qty=0.01)
        slot = runner.add_strategy(first)
        await trio.sleep(seconds / 2)
        before = _counts(runner)
        open_before = tuple(o.order_id for o in runner.executor.open_orders(slot))
        second = ema([SYMBOL], fast=8, slow=21, snapshot=snap, qty=0.01)
        report = await runner.replace_strategy(slot, second)
    placed, filled = _orders(runner)
    return DemoResult(
        venue="offline synthetic feed (virtual time)",
        session=None,
        slots=(DemoSlot(slot, "python", "EMA 12/26 → EMA 8/21", before[slot],
                        runner.slots[slot].dispatched - before[slot], first.trades_seen, second.trades_seen,
                        _pnl(runner, slot)),),
        reports=(report,),
        open_at_swap=open_before,
        fate={o.order_id: o.status for o in runner.executor.orders() if o.order_id in open_before},
        orders_placed=placed, orders_filled=filled, published=runner.status().published,
    )


def _session(feed: Binance) -> SessionView:
    return SessionView(feed.connection_id, feed.connect_count, tuple(sorted(feed.subscribed)))


async def _live(seconds: float, seed: int, state: Path) -> DemoResult:
    ema = _ema()
    async with open_simulator(seed=seed, rate=50, symbols=[SYMBOL]) as sim:
        feed = Binance([SYMBOL], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade", "bookTicker", "depth"))
        # A slow venue (1 s to acknowledge) so that orders are in flight when the swap happens.
        async with open_runner(feed, PaperExecutor(latency=1.0), drain=False, tape=state / "demo.tape") as runner:
            py_old = ema([SYMBOL], fast=5, slow=12, qty=0.01, snapshot=state / "ema.json")
            py_slot = runner.add_strategy(py_old)
            script = load_js(STRATEGIES / "ema.js", state_dir=state / "js", runner=runner)
            js_old = script.call("makeStrategy", "v1", 5, 12, 0.01)
            js_slot = runner.add_strategy(js_old)
            with trio.fail_after(10):
                while feed.connection_id is None or not runner.slots[py_slot].dispatched:
                    await trio.sleep(0.05)
            await trio.sleep(seconds / 2)
            before = _counts(runner)
            session_before = _session(feed)
            open_before = tuple(o.order_id for s in runner.slots for o in runner.executor.open_orders(s.index))
            py_new = ema([SYMBOL], fast=8, slow=21, qty=0.01, snapshot=state / "ema.json")
            js_new = script.call("makeStrategy", "v2", 8, 21, 0.01)
            reports = (await runner.replace_strategy(py_slot, py_new), await runner.replace_strategy(js_slot, js_new))
            session_after = _session(feed)
            await trio.sleep(seconds / 2)
            after = _counts(runner)
            fate = {o.order_id: o.status for o in runner.executor.orders() if o.order_id in open_before}
            slots = tuple(
                DemoSlot(i, lang, what, before[i], after[i] - before[i], _seen(old), _seen(new), _pnl(runner, i))
                for i, lang, what, old, new in ((py_slot, "python", "EMA 5/12 → EMA 8/21", py_old, py_new),
                                                (js_slot, "javascript", "ema.js v1 → v2", js_old, js_new))
            )
            placed, filled = _orders(runner)
            published = runner.status().published
    return DemoResult(
        venue=f"embedded simulator, Binance wire format on {sim.binance_ws_url}",
        session=(session_before, session_after), slots=slots, reports=reports, open_at_swap=open_before,
        fate=fate, orders_placed=placed, orders_filled=filled, published=published,
    )
