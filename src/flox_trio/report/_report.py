"""Build ``report.json`` and ``report.png`` from what a tape recorded.

The tape holds the market data, every fill the engine made and every swap,
so the equity curve is rebuilt by walking it once: trades mark the
positions, fills change them (exactly, with the executor's own Position
class), swaps are pinned to the market event they happened at.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from .._core._events import Bar, Book, Fill, Trade
from ..execution import Position


@attrs.frozen
class Report:
    """Time series per slot (seconds since the first event) and the swap moments."""

    t: list[float]
    equity: dict[int, list[float]]
    position: dict[int, list[float]]
    swaps: list[dict[str, Any]]
    totals: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "equity": {str(k): v for k, v in self.equity.items()},
                "position": {str(k): v for k, v in self.position.items()},
                "swaps": self.swaps, "totals": self.totals}


def build_report(tape: str | Path, *, points: int = 2000) -> Report:
    from ..tape import TapeReader, tape_info

    info = tape_info(tape)
    reader = TapeReader(tape)
    slots = sorted({r.slot for r in info.slots})
    positions: dict[tuple[int, str], Position] = {}
    marks: dict[str, Decimal] = {}
    swap_at: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rec in info.swaps:
        # The session's market-event count, not the slot's own: with several symbols
        # the slot sees only some of the events the report walks.
        swap_at[rec.at_market_event].append({"slot": rec.slot, "at_market_event": rec.at_market_event,
                                 "from": f"{rec.old_language} {rec.old_hash[:8]}",
                                 "to": f"{rec.new_language} {rec.new_hash[:8]}"})
    total_market = sum(v for k, v in info.event_types.items() if k in ("Trade", "Book", "Bar"))
    every = max(1, total_market // points)
    t: list[float] = []
    equity: dict[int, list[float]] = {s: [] for s in slots}
    position: dict[int, list[float]] = {s: [] for s in slots}
    swaps: list[dict[str, Any]] = []
    t0: int | None = None
    market = 0
    now = 0.0
    fills = 0

    def sample() -> None:
        t.append(now)
        for s in slots:
            eq = Decimal(0)
            qty = Decimal(0)
            for (slot, sym), p in positions.items():
                if slot == s:
                    eq += p.realized_pnl + p.unrealized_pnl(marks.get(sym))
                    qty += p.qty
            equity[s].append(float(eq))
            position[s].append(float(qty))

    for batch in reader.iter_batches():
        for ev in batch.events:
            if isinstance(ev, Fill):
                key = (ev.slot, ev.symbol)
                pos = positions.get(key) or positions.setdefault(key, Position(ev.symbol))
                pos.apply_fill(ev.side, ev.price, ev.qty, ev.fee)
                fills += 1
                continue
            if isinstance(ev, Trade | Book | Bar):
                ts = ev.end_ts_ns if isinstance(ev, Bar) else (ev.exchange_ts_ns or ev.recv_ts_ns)
                if ts:
                    t0 = ts if t0 is None else t0
                    now = (ts - t0) / 1e9
                if isinstance(ev, Trade):
                    marks[ev.symbol] = Decimal(repr(ev.price))
                elif isinstance(ev, Book) and ev.bids and ev.asks:
                    marks[ev.symbol] = Decimal(repr((ev.bids[0][0] + ev.asks[0][0]) / 2))
                for sw in swap_at.get(market, ()):
                    swaps.append({**sw, "t": now})
                market += 1
                if market % every == 0:
                    sample()
    sample()
    final = {str(s): equity[s][-1] if equity[s] else 0.0 for s in slots}
    return Report(t, equity, position, swaps,
                  {"market_events": market, "fills": fills, "final_equity": final,
                   "duration_s": now, "slots": slots})


def write_report(tape: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png`` into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    import matplotlib.pyplot as plt

    report = build_report(tape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "report.json", out / "report.png"
    json_path.write_text(json.dumps(report.to_json(), indent=1))

    fig, (ax_eq, ax_pos) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), height_ratios=(2, 1))
    for s in report.equity:
        ax_eq.plot(report.t, report.equity[s], label=f"slot {s}", linewidth=1.2)
        ax_pos.step(report.t, report.position[s], where="post", label=f"slot {s}", linewidth=1.0)
    for k, sw in enumerate(report.swaps):
        for ax in (ax_eq, ax_pos):
            ax.axvline(sw["t"], color="crimson", linestyle="--", linewidth=1,
                       label="swap" if (k == 0 and ax is ax_eq) else None)
        # Swaps at the same moment (several slots at once) stack instead of overprinting.
        ax_eq.annotate(f"swap slot {sw['slot']}: {sw['from']} → {sw['to']}", (sw["t"], 0),
                       xycoords=("data", "axes fraction"), xytext=(4, 6 + 12 * k), textcoords="offset points",
                       fontsize=8, color="crimson")
    ax_eq.set_ylabel("equity (realized + unrealized PnL)")
    ax_pos.set_ylabel("position")
    ax_pos.set_xlabel("seconds since the first event")
    ax_eq.set_title(f"flox-trio run: {report.totals['market_events']} market events, "
                    f"{report.totals['fills']} fills, {len(report.swaps)} swaps")
    ax_eq.legend(loc="upper left", fontsize=8)
    ax_eq.grid(alpha=0.3)
    ax_pos.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path
