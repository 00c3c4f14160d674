"""``flox-trio demo``: strategies on a market, a live swap, and what happened.

With the embedded simulator (the default) the demo connects a Binance
connector to it over loopback WebSockets; ``--offline`` plays a synthetic
random walk through a ListFeed on virtual time instead.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing
from rich.console import Console
from rich.table import Table

from .._core._events import Trade
from .._runner import Runner, open_runner
from ..execution import PaperExecutor
from ..feeds import ListFeed

ROOT = Path(__file__).resolve().parents[3]
SYMBOL = "BTCUSDT"


def load_py_strategy(path: Path, name: str) -> type:
    """Import a strategy class from a file (a fresh module each time, as live reload does)."""
    spec = importlib.util.spec_from_file_location(f"flox_user_{path.stem}_{id(path)}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so classes defined there can be inspected and pickled
    spec.loader.exec_module(module)
    cls: type = getattr(module, name)
    return cls


def synthetic_trades(n: int, seed: int, symbol: str = SYMBOL) -> list[Trade]:
    rng = random.Random(seed)
    price = 43_000.0
    t0 = 1_700_000_000_000_000_000
    out = []
    for i in range(n):
        price = round(max(1.0, price + rng.gauss(0, 4.0)), 2)
        ts = t0 + i * 5_000_000  # 200 trades/s
        out.append(Trade(symbol, price, round(rng.expovariate(20), 5) + 0.0001,
                         "buy" if rng.random() < 0.5 else "sell", str(i), ts, ts))
    return out


def _counts(runner: Runner) -> dict[int, int]:
    return {s.index: s.dispatched for s in runner.slots}


def _pnl(runner: Runner, slot: int) -> Decimal:
    ex = runner.executor
    pos = ex.position(slot, SYMBOL)
    return pos.realized_pnl + pos.unrealized_pnl(ex.mark_price(slot, SYMBOL))


async def _offline(seconds: float, seed: int, state: Path) -> dict[str, Any]:
    ema = load_py_strategy(ROOT / "py_strategies" / "ema.py", "EmaStrategy")
    trades = synthetic_trades(int(seconds * 200), seed)
    feed = ListFeed(trades, batch_size=64, pace=True)
    snap = state / "ema.json"
    async with open_runner(feed, PaperExecutor(latency=0.02), tape=state / "demo.tape") as runner:
        first = ema([SYMBOL], fast=12, slow=26, snapshot=snap, qty=0.01)
        slot = runner.add_strategy(first)
        await trio.sleep(seconds / 2)
        before = _counts(runner)
        open_before = [o.order_id for o in runner.executor.open_orders(slot)]
        second = ema([SYMBOL], fast=8, slow=21, snapshot=snap, qty=0.01)
        report = await runner.replace_strategy(slot, second)
    return {
        "venue": "offline synthetic feed (virtual time)",
        "connection": None,
        "slots": [(slot, "python", "EMA 12/26 → EMA 8/21", before[slot], runner.slots[slot].dispatched - before[slot],
                   first.trades_seen, second.trades_seen)],
        "report": [report],
        "orders_across": (open_before, {o.order_id: o.status for o in runner.executor.orders()
                                        if o.order_id in open_before}),
        "runner": runner,
        "pnl": {slot: _pnl(runner, slot)},
    }


def run_demo(*, seconds: float = 8.0, offline: bool = False, seed: int = 7, report: str | None = None) -> int:
    console = Console(width=max(Console().width, 110))
    with tempfile.TemporaryDirectory(prefix="flox-demo-") as tmp:
        state = Path(tmp)
        live_demo: Any = None
        if not offline:
            try:
                from ._demo_live import live_demo
            except ImportError as exc:
                console.print(f"[yellow]the simulator or connectors are missing ({exc}); "
                              "running the offline demo[/yellow]")
        if live_demo is None:
            result = trio.run(_offline, seconds, seed, state, clock=trio.testing.MockClock(autojump_threshold=0))
        else:
            result = trio.run(live_demo, seconds, seed, state)
        _print(console, result)
        if report is not None:
            from ..report import write_report

            json_path, png_path = write_report(state / "demo.tape", report)
            console.print(f"report: {json_path}, {png_path}")
    return 0


def _print(console: Console, result: dict[str, Any]) -> None:
    runner: Runner = result["runner"]
    console.print(f"[bold]flox-trio demo[/bold] — {result['venue']}")
    conn = result["connection"]
    if conn is not None:
        t = Table(title="exchange session across the swap")
        for col in ("", "connection id", "connect count", "subscriptions"):
            t.add_column(col)
        for label, row in (("before swap", conn["before"]), ("after swap", conn["after"])):
            t.add_row(label, str(row["connection_id"]), str(row["connect_count"]), ", ".join(row["subscriptions"]))
        console.print(t)
        b, a = conn["before"], conn["after"]
        same = b["connection_id"] == a["connection_id"] and b["connect_count"] == a["connect_count"]
        console.print(f"connection across the swap: id {b['connection_id']} → {a['connection_id']}, "
                      f"connects {b['connect_count']} → {a['connect_count']} "
                      f"({'the same session' if same else 'RECONNECTED'})")
    t = Table(title="slots")
    for col in ("slot", "language", "swap", "events before", "events after", "old strategy saw",
                "new strategy saw", "PnL"):
        t.add_column(col, justify="right")
    for slot, lang, what, before, after, old_n, new_n in result["slots"]:
        t.add_row(str(slot), lang, what, str(before), str(after), str(old_n), str(new_n),
                  f"{result['pnl'][slot]:.4f}")
    console.print(t)
    for report in result["report"]:
        console.print(
            f"slot {report.slot}: swapped {report.old_language} {report.old_hash[:8]} → "
            f"{report.new_language} {report.new_hash[:8]} at event {report.at_event}, "
            f"pause {report.pause_s * 1e3:.3f} ms"
        )
    open_at_swap, fate = result["orders_across"]
    if open_at_swap:
        console.print(f"orders open or in flight at the swap: {', '.join(open_at_swap)}; afterwards, under the "
                      f"new strategy: {', '.join(f'{k} {v}' for k, v in fate.items())}")
    else:
        console.print("no order was open at the swap moment")
    orders = runner.executor.orders()
    console.print(f"orders: {len(orders)} placed, {sum(o.status == 'filled' for o in orders)} filled; "
                  f"events published: {runner.status()['published']}")
