"""A backtest's files: ``results.json``, ``results.parquet`` (with pyarrow) and ``report.png``.

``report.png`` is a heatmap of the mean PnL over the tapes for a grid of two
parameters (one cell per point, its value written in it), else a bar chart
of the mean PnL per variant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._backtest import BacktestRow, StrategySource


def results_document(rows: Sequence[BacktestRow], *, strategy: StrategySource, grid: Mapping[str, Sequence[Any]],
                     base_params: Mapping[str, Any], sort: str) -> dict[str, Any]:
    """``{"kind": "backtest", "rows": [...]}`` with what the rows were run from, to run one again."""
    return {
        "kind": "backtest",
        "strategy": {"spec": strategy.spec, "language": strategy.language, "source_hash": strategy.source_hash},
        "grid": {k: list(v) for k, v in grid.items()},
        "base_params": dict(base_params),
        "tapes": sorted({r.tape for r in rows}),
        "sort": sort,
        "rows": [r.to_json() for r in rows],
    }


def mean_pnl(rows: Sequence[BacktestRow]) -> dict[int, Decimal]:
    """Variant index → mean PnL over the tapes it ran on without failing."""
    sums: dict[int, list[Decimal]] = {}
    for r in rows:
        if r.error is None:
            sums.setdefault(r.variant, []).append(r.pnl)
    return {v: sum(p, Decimal(0)) / len(p) for v, p in sums.items()}


def write_parquet(doc: Mapping[str, Any], path: Path) -> Path | None:
    """The rows as a Parquet table (nested values as JSON text), or None without pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    flat = [{k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for k, v in row.items()}
            for row in doc["rows"]]
    pq.write_table(pa.Table.from_pylist(flat), path)
    return path


def write_report_png(rows: Sequence[BacktestRow], grid: Mapping[str, Sequence[Any]], path: Path,
                     title: str) -> Path:
    """A heatmap for a two-parameter grid, else a bar chart: the mean PnL over the tapes per variant."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    import matplotlib.pyplot as plt

    means = mean_pnl(rows)
    currency = rows[0].currency if rows else "quote"
    tapes = len({r.tape for r in rows})
    keys = list(grid)
    over = f"mean PnL over {tapes} tape{'s' if tapes != 1 else ''} ({currency})"
    if len(keys) == 2:
        ys, xs = list(grid[keys[0]]), list(grid[keys[1]])
        cells = [[math.nan] * len(xs) for _ in ys]
        for r in rows:
            if r.variant in means:
                y, x = ys.index(r.point[keys[0]]), xs.index(r.point[keys[1]])
                cells[y][x] = float(means[r.variant])
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(xs) + 3), max(4.0, 0.8 * len(ys) + 2.5)))
        finite = [v for row in cells for v in row if not math.isnan(v)]
        bound = max((abs(v) for v in finite), default=1.0) or 1.0
        image = ax.imshow(cells, cmap="RdYlGn", vmin=-bound, vmax=bound, aspect="auto", origin="lower")
        ax.set_xticks(range(len(xs)), [_tick(v) for v in xs])
        ax.set_yticks(range(len(ys)), [_tick(v) for v in ys])
        ax.set_xlabel(keys[1])
        ax.set_ylabel(keys[0])
        for y, row in enumerate(cells):
            for x, value in enumerate(row):
                ax.text(x, y, "failed" if math.isnan(value) else f"{value:.4g}", ha="center", va="center",
                        fontsize=9, color="black")
        fig.colorbar(image, ax=ax, label=f"PnL ({currency})")
        ax.set_title(f"{title}\n{over}", fontsize=10)
    else:
        variants = sorted({(r.variant, r.label) for r in rows})
        fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(variants) + 3), 4.5))
        values = [float(means.get(i, Decimal(0))) for i, _ in variants]
        ax.bar(range(len(variants)), values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        ax.set_xticks(range(len(variants)), [label for _, label in variants], rotation=45, ha="right",
                      fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(" × ".join(keys) or "variant")
        ax.set_ylabel(f"PnL ({currency})")
        ax.set_title(f"{title}\n{over}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tick(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def write_results(rows: Sequence[BacktestRow], out_dir: Path, *, strategy: StrategySource,
                  grid: Mapping[str, Sequence[Any]], base_params: Mapping[str, Any] | None = None,
                  sort: str = "pnl") -> list[Path]:
    """Write ``results.json``, ``results.parquet`` (when pyarrow is installed) and ``report.png``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {out_dir}: {exc.strerror or exc}") from None
    doc = results_document(rows, strategy=strategy, grid=grid, base_params=base_params or {}, sort=sort)
    written = [out_dir / "results.json"]
    written[0].write_text(json.dumps(doc, indent=2, default=str))
    parquet = write_parquet(doc, out_dir / "results.parquet")
    if parquet is not None:
        written.append(parquet)
    name = strategy.spec.rsplit("/", 1)[-1]
    written.append(write_report_png(rows, grid, out_dir / "report.png", f"backtest of {name}"))
    return written
