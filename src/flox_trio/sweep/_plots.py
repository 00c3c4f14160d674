"""``report.png`` of a live sweep (PnL per window, grouped by variant) and of an A/B test (both curves, the gap)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    import matplotlib.pyplot as plt

    return plt


def sweep_png(rows: Sequence[Mapping[str, Any]], path: Path, currency: str, title: str) -> Path:
    """Bars: each window's PnL in run order, coloured by variant; beside them each variant's mean."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r["label"] for r in rows))
    colours = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    fig, (ax_runs, ax_mean) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": (2, 1)})
    pnl = [float(Decimal(r["pnl"])) for r in rows]
    ax_runs.bar(range(len(rows)), pnl, color=[colours[r["label"]] for r in rows])
    ax_runs.set_xticks(range(len(rows)), [f"{i}\n{r['label']}" for i, r in enumerate(rows)], fontsize=7,
                       rotation=0 if len(rows) <= 8 else 90)
    ax_runs.set_title("each window, in the order they ran")
    ax_runs.set_ylabel(f"PnL ({currency}), realized + unrealized")
    by: dict[str, list[float]] = defaultdict(list)
    for r, v in zip(rows, pnl, strict=True):
        by[r["label"]].append(v)
    means = [sum(by[lab]) / len(by[lab]) for lab in labels]
    ax_mean.barh(range(len(labels)), means, color=[colours[lab] for lab in labels])
    ax_mean.set_yticks(range(len(labels)), [f"{lab} ({len(by[lab])} windows)" for lab in labels], fontsize=8)
    ax_mean.invert_yaxis()
    ax_mean.set_title("mean per variant")
    ax_mean.set_xlabel(f"PnL ({currency})")
    for ax in (ax_runs, ax_mean):
        ax.axhline(0, color="black", linewidth=0.6) if ax is ax_runs else ax.axvline(0, color="black", linewidth=0.6)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ab_png(curve: Sequence[tuple[float, Decimal, Decimal]], labels: tuple[str, str], diff: Decimal,
           ci: tuple[Decimal, Decimal], confidence: float, path: Path, currency: str, title: str) -> Path:
    """Top: both equity curves. Bottom: A minus B over time, with the final interval marked."""
    plt = _pyplot()
    t = [c[0] for c in curve]
    a = [float(c[1]) for c in curve]
    b = [float(c[2]) for c in curve]
    fig, (ax_eq, ax_diff) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": (2, 1)})
    ax_eq.plot(t, a, label=f"A: {labels[0]}", linewidth=1.2)
    ax_eq.plot(t, b, label=f"B: {labels[1]}", linewidth=1.2)
    ax_eq.set_ylabel(f"PnL ({currency})")
    ax_eq.legend(loc="upper left", fontsize=8)
    d = [x - y for x, y in zip(a, b, strict=True)]
    ax_diff.plot(t, d, color="black", linewidth=1.0, label="A - B")
    ax_diff.fill_between(t, d, 0, alpha=0.15, color="black")
    if t:
        ax_diff.errorbar([t[-1]], [float(diff)], yerr=[[float(diff - ci[0])], [float(ci[1] - diff)]], fmt="o",
                         color="crimson", capsize=4,
                         label=f"A - B = {diff:,.4f} {currency}, {confidence:.0%} CI [{ci[0]:,.4f}, {ci[1]:,.4f}]")
    ax_diff.axhline(0, color="grey", linewidth=0.6)
    ax_diff.set_ylabel(f"A - B ({currency})")
    ax_diff.set_xlabel("seconds since the start")
    ax_diff.legend(loc="upper left", fontsize=8)
    for ax in (ax_eq, ax_diff):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
