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

from .._core._events import Bar, Book, Fill, Gap, Trade, quote_currency
from .._core._orders import book_fill
from .._core._status import change_label
from ..execution import Position


@attrs.frozen
class Report:
    """Time series (seconds since the first event) per slot and symbol, and the swap moments."""

    t: list[float]
    equity: dict[int, list[float]]
    position: dict[int, list[float]]
    price: dict[str, list[float | None]]
    swaps: list[dict[str, Any]]
    #: The operator's halts and resumes: {"action", "reason", "at_market_event", "t"}.
    controls: list[dict[str, Any]]
    #: slot -> the strategy it started with ("EmaStrategy").
    names: dict[int, str]
    currency: str
    totals: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "equity": {str(k): v for k, v in self.equity.items()},
                "position": {str(k): v for k, v in self.position.items()}, "price": self.price,
                "swaps": self.swaps, "controls": self.controls, "names": {str(k): v for k, v in self.names.items()},
                "currency": self.currency, "totals": self.totals}


def _name(spec: str | None) -> str:
    return (spec or "?").rpartition(":")[2] or "?"


def build_report(tape: str | Path, *, points: int = 2000) -> Report:
    from ..tape import TapeReader, tape_info

    info = tape_info(tape)
    reader = TapeReader(tape)
    adds = [r for r in info.slots if r.action == "add"]
    slots = sorted({r.slot for r in adds})
    names = {r.slot: _name(r.spec) for r in adds}
    positions: dict[tuple[int, str], Position] = {}
    marks: dict[str, Decimal] = {}
    swap_at: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rec in info.swaps:
        old, new = rec.params.get("old", {}), rec.params.get("new", {})
        label = change_label(_name(rec.old_spec), old, _name(rec.new_spec), new, rec.old_hash, rec.new_hash)
        # The session's market-event count, not the slot's own: with several symbols
        # the slot sees only some of the events the report walks.
        swap_at[rec.at_market_event].append({"slot": rec.slot, "at_market_event": rec.at_market_event,
                                             "label": label, "from": f"{rec.old_language} {rec.old_hash[:8]}",
                                             "to": f"{rec.new_language} {rec.new_hash[:8]}"})
    control_at: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for rec_ctl in reader.control_records():
        control_at[rec_ctl.at_market_event].append({"action": rec_ctl.action, "reason": rec_ctl.reason,
                                                    "at_market_event": rec_ctl.at_market_event})
    controls: list[dict[str, Any]] = []
    total_market = sum(v for k, v in info.event_types.items() if k in ("Trade", "Book", "Bar", "Gap"))
    every = max(1, total_market // points)
    symbols = sorted(info.symbols)
    t: list[float] = []
    equity: dict[int, list[float]] = {s: [] for s in slots}
    position: dict[int, list[float]] = {s: [] for s in slots}
    price: dict[str, list[float | None]] = {s: [] for s in symbols}
    last: dict[str, float] = {}
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
        for sym in symbols:
            price[sym].append(last.get(sym))

    for batch in reader.iter_batches():
        for ev in batch.events:
            if isinstance(ev, Fill):
                key = (ev.slot, ev.symbol)
                pos = positions.get(key) or positions.setdefault(key, Position(ev.symbol))
                book_fill(pos, ev)
                fills += 1
                continue
            if isinstance(ev, Trade | Book | Bar | Gap):
                ts = ev.end_ts_ns if isinstance(ev, Bar) else (ev.exchange_ts_ns or ev.recv_ts_ns)
                if ts:
                    t0 = ts if t0 is None else t0
                    now = (ts - t0) / 1e9
                if isinstance(ev, Trade):
                    marks[ev.symbol] = Decimal(repr(ev.price))
                    last[ev.symbol] = ev.price
                elif isinstance(ev, Book) and ev.bids and ev.asks:
                    marks[ev.symbol] = Decimal(repr((ev.bids[0][0] + ev.asks[0][0]) / 2))
                for sw in swap_at.get(market, ()):
                    swaps.append({**sw, "t": now})
                for ctl in control_at.pop(market, ()):
                    controls.append({**ctl, "t": now})
                market += 1
                if market % every == 0:
                    sample()
    sample()
    # A halt after the last market event still shows, at the end.
    controls.extend({**ctl, "t": now} for at in sorted(control_at) for ctl in control_at[at])
    final = {str(s): equity[s][-1] if equity[s] else 0.0 for s in slots}
    return Report(t, equity, position, price, swaps, controls, names, quote_currency(symbols),
                  {"market_events": market, "fills": fills, "final_equity": final,
                   "duration_s": now, "slots": slots})


def write_report(tape: str | Path, out_dir: str | Path, *, source: str = "flox-trio run") -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png`` of ``tape`` into ``out_dir``.

    ``source`` says what produced the tape's orders and fills (the title and
    ``report.json`` carry it): a live run, or a replay in one of its modes.
    """
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    import matplotlib.pyplot as plt

    report = build_report(tape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "report.json", out / "report.png"
    json_path.write_text(json.dumps({"source": source, **report.to_json()}, indent=1))

    # Swaps are numbered on the plot and spelled out under it: legible at any count.
    listed = report.swaps[:40]
    rows = len(listed) + (1 if len(report.swaps) > len(listed) else 0)
    fig = plt.figure(figsize=(11, 8 + 0.17 * rows))
    grid = fig.add_gridspec(4 if rows else 3, 1, height_ratios=(1.2, 2, 1, 0.2 + 0.17 * rows)[:4 if rows else 3])
    ax_px = fig.add_subplot(grid[0])
    ax_eq = fig.add_subplot(grid[1], sharex=ax_px)
    ax_pos = fig.add_subplot(grid[2], sharex=ax_px)
    for sym, series in report.price.items():
        ax_px.plot(report.t, [float("nan") if p is None else p for p in series], linewidth=1.0, label=sym)
    for s in report.equity:
        label = f"slot {s}: {report.names.get(s, '?')}"
        ax_eq.plot(report.t, report.equity[s], label=label, linewidth=1.2)
        ax_pos.step(report.t, report.position[s], where="post", label=label, linewidth=1.0)
    for k, sw in enumerate(report.swaps, start=1):
        for ax in (ax_px, ax_eq, ax_pos):
            ax.axvline(sw["t"], color="crimson", linestyle="--", linewidth=0.8, alpha=0.7)
        if k <= len(listed):
            ax_px.annotate(str(k), (sw["t"], 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                           textcoords="offset points", ha="center", va="bottom", fontsize=7, color="crimson")
    # Halts: the span with trading halted is shaded, from the halt to the resume (or the end).
    halted_from: float | None = None
    spans: list[tuple[float, float, str]] = []
    for ctl in report.controls:
        if ctl["action"] == "halt" and halted_from is None:
            halted_from, why = ctl["t"], ctl["reason"]
        elif ctl["action"] == "resume" and halted_from is not None:
            spans.append((halted_from, ctl["t"], why))
            halted_from = None
    if halted_from is not None:
        spans.append((halted_from, report.totals["duration_s"], why))
    for n, (a, b, why) in enumerate(spans):
        for ax in (ax_px, ax_eq, ax_pos):
            ax.axvspan(a, max(b, a + 1e-9), color="black", alpha=0.12, linewidth=0,
                       label="trading halted" if n == 0 and ax is ax_eq else None)
        ax_px.annotate(f"HALT: {why}"[:60], (a, 0.02), xycoords=("data", "axes fraction"), xytext=(3, 0),
                       textcoords="offset points", fontsize=7, color="black")
    ax_px.set_ylabel(f"price ({report.currency})")
    ax_eq.set_ylabel(f"PnL ({report.currency})\nrealized + unrealized")
    ax_pos.set_ylabel("position")
    ax_pos.set_xlabel("seconds since the first event")
    ax_px.set_title(f"{source}: {report.totals['market_events']} market events, "
                    f"{report.totals['fills']} fills, {len(report.swaps)} swaps"
                    + (f", {len(spans)} halt{'s' if len(spans) > 1 else ''}" if spans else ""), pad=14)
    for ax in (ax_px, ax_eq, ax_pos):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    if rows:
        ax_list = fig.add_subplot(grid[3])
        ax_list.axis("off")
        lines = [f"{k:>2}. {sw['t']:8.1f} s  slot {sw['slot']}: {sw['label']}" for k, sw in enumerate(listed, 1)]
        if len(report.swaps) > len(listed):
            lines.append(f"    ... and {len(report.swaps) - len(listed)} more swaps (report.json lists them all)")
        ax_list.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7.5,
                     color="crimson", transform=ax_list.transAxes)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path
