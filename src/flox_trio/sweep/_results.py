"""``results.json`` of a sweep, an A/B test or a backtest, and the table that prints it.

One row format for the three (PRODUCT.md section 9): ``variant`` (the
parameters), ``strategy``, ``source_hash``, the window, ``events``, ``orders``,
``fills``, money as decimal strings, ``position`` at the end; extra fields per
kind (``tape``, ``round``, ``side``...).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from .._core._metrics import WindowStats

Kind = Literal["sweep", "ab", "backtest"]
#: The columns every results table shows, after the kind's own.
_MONEY = ("realized_pnl", "unrealized_pnl", "fees", "max_drawdown")


def result_row(*, variant: Mapping[str, Any], strategy: str, source_hash: str, window_start_ns: int,
               window_end_ns: int, events: int, orders: int, stats: WindowStats, **extra: Any) -> dict[str, Any]:
    """One row of ``results.json``."""
    return {
        "variant": dict(variant), "strategy": strategy, "source_hash": source_hash,
        "window_start_ns": window_start_ns, "window_end_ns": window_end_ns, "events": events, "orders": orders,
        "fills": stats.fills, "realized_pnl": str(stats.realized_pnl), "unrealized_pnl": str(stats.unrealized_pnl),
        "pnl": str(stats.pnl), "fees": str(stats.fees), "max_drawdown": str(stats.max_drawdown),
        "position": {k: str(v) for k, v in stats.position.items()}, **extra,
    }


def default_out_dir(kind: Kind, base: Path = Path("runs")) -> Path:
    """A new directory for this run's results: ``runs/sweep-20261202-010203`` (``-2``... if taken)."""
    stem = base / f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, n = stem, 1
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


def write_results(kind: Kind, rows: Sequence[Mapping[str, Any]], out_dir: Path,
                  **extra: Any) -> Path:
    """Write ``out_dir/results.json``: ``{"kind": ..., "rows": [...], **extra}``; its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps({"kind": kind, "rows": list(rows), **extra}, indent=1, default=str))
    return path


def results_table(title: str, rows: Sequence[Mapping[str, Any]], lead: Sequence[tuple[str, str]],
                  currency: str) -> Table:
    """Rows as a table: the ``lead`` columns (header, key), then events, orders, fills and the money."""
    t = Table(title=title)
    for header, _ in lead:
        t.add_column(header)
    for header in ("events", "orders", "fills", f"PnL {currency}", "realized", "unrealized", "fees", "max DD",
                   "position"):
        t.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        position = " ".join(f"{q} {s}" for s, q in r["position"].items() if Decimal(q)) or "0"
        t.add_row(*(str(r.get(key, "")) for _, key in lead), str(r["events"]), str(r["orders"]), str(r["fills"]),
                  _money(r["pnl"]), *(_money(r[k]) for k in _MONEY), position)
    return t


def _money(text: str) -> str:
    return f"{Decimal(text):,.4f}"
