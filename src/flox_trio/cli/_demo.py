"""``flox-trio demo``: prints what ``flox_trio.app.run_demo`` did."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..app import DemoResult, run_demo


def demo_command(*, seconds: float = 8.0, offline: bool = False, seed: int = 7, report: str | None = None) -> int:
    console = Console(width=max(Console().width, 110))
    with tempfile.TemporaryDirectory(prefix="flox-demo-") as tmp:
        state = Path(tmp)
        result = run_demo(state, seconds=seconds, offline=offline, seed=seed)
        print_demo(console, result)
        if report is not None:
            from ..report import write_report

            json_path, png_path = write_report(state / "demo.tape", report)
            console.print(f"report: {json_path}, {png_path}")
    return 0


def print_demo(console: Console, result: DemoResult) -> None:
    console.print(f"[bold]flox-trio demo[/bold] — {result.venue}")
    if result.session is not None:
        b, a = result.session
        t = Table(title="exchange session across the swap")
        for col in ("", "connection id", "connect count", "subscriptions"):
            t.add_column(col)
        for label, row in (("before swap", b), ("after swap", a)):
            t.add_row(label, str(row.connection_id), str(row.connect_count), ", ".join(row.subscriptions))
        console.print(t)
        same = b.connection_id == a.connection_id and b.connect_count == a.connect_count
        console.print(f"connection across the swap: id {b.connection_id} → {a.connection_id}, "
                      f"connects {b.connect_count} → {a.connect_count} "
                      f"({'the same session' if same else 'RECONNECTED'})")
    t = Table(title="slots")
    for col in ("slot", "language", "swap", "events before", "events after", "old strategy saw",
                "new strategy saw", "PnL"):
        t.add_column(col, justify="right")
    for s in result.slots:
        t.add_row(str(s.index), s.language, s.what, str(s.events_before), str(s.events_after), str(s.old_seen),
                  str(s.new_seen), f"{s.pnl:.4f}")
    console.print(t)
    for report in result.reports:
        console.print(f"slot {report.slot}: swapped {report.label} ({report.new_language}) at event "
                      f"{report.at_event}, pause {report.pause_s * 1e3:.3f} ms")
    if result.open_at_swap:
        console.print(f"orders open or in flight at the swap: {', '.join(result.open_at_swap)}; afterwards, under "
                      f"the new strategy: {', '.join(f'{k} {v}' for k, v in result.fate.items())}")
    else:
        console.print("no order was open at the swap moment")
    console.print(f"orders: {result.orders_placed} placed, {result.orders_filled} filled; "
                  f"events published: {result.published}")
