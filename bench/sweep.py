"""Offline sweeps: one process vs local worker processes, and what the Ray path costs per variant.

    python bench/sweep.py [--events N] [--variants V] [--ray-events N] [--ray-variants V] [--no-ray] [--json PATH]

Rows:
- A V-variant grid (fast × slow of an EMA crossover) over one N-event tape
  (default 16 × 1 M; the tape generated once, by ``random_walk``, into a
  temporary directory): wall time with ``--workers 1`` (in this process) and
  ``--workers 2`` (local worker processes), and the speed-up (target >= 1.8x
  on a 2-core machine). The two must give identical rows.
- The Ray path's overhead per variant: many variants over a small tape, on a
  local Ray instance (``ray.init(num_cpus=2)``, its start-up timed apart) vs
  local worker processes; (Ray - local) / variants.

The strategy is ``bench/_ema_strategy.py:FastEma`` (O(1) per trade, so the
times are the engine's); ``--strategy py_strategies/ema.py:EmaStrategy
--param snapshot=s.json`` sweeps the seed's own, slower, one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing
from rich.table import Table

import flox_trio as flox
from flox_trio.sweep import backtest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # bench/ sibling

HERE = Path(__file__).resolve().parent
FAST = [3, 5, 8, 12, 16, 21, 26, 34]
SLOW = [40, 55, 89, 144, 233, 377, 610, 987]


def grid_of(variants: int) -> dict[str, list[int]]:
    """A fast × slow grid of about ``variants`` points (a rectangle: 16 is 4 × 4; at most 8 × 8)."""
    rows = min(len(FAST), max(1, int(math.sqrt(variants))))
    cols = min(len(SLOW), max(1, math.ceil(variants / rows)))
    return {"fast": FAST[:rows], "slow": SLOW[:cols]}


async def _record(path: Path, events: int, seed: int) -> None:
    trades = flox.feeds.random_walk(events, seed=seed)
    async with flox.open_runner(flox.feeds.ListFeed(trades, batch_size=32), tape=str(path)):
        pass


def make_tape(path: Path, events: int, seed: int = 11) -> float:
    t0 = time.perf_counter()
    trio.run(_record, path, events, seed, clock=trio.testing.MockClock(autojump_threshold=0))
    return time.perf_counter() - t0


def timed(tape: Path, spec: str, grid: dict[str, list[int]], params: dict[str, Any], **kw: Any) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = backtest([tape], spec, grid, base_params=params, **kw)
    return time.perf_counter() - t0, rows


def bench_local(tmp: Path, args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    tape = tmp / "big.tape"
    made = make_tape(tape, args.events)
    grid = grid_of(args.variants)
    n = len(grid["fast"]) * len(grid["slow"])
    one, rows1 = timed(tape, args.strategy, grid, params, workers=1)
    two, rows2 = timed(tape, args.strategy, grid, params, workers=2)
    assert rows1 == rows2, "worker processes gave other rows than one process"
    assert all(r.error is None for r in rows1), [r.error for r in rows1 if r.error]
    return {"events": args.events, "variants": n, "grid": grid, "tape_seconds": made,
            "single_s": one, "processes_s": two, "speedup": one / two,
            "per_variant_single_s": one / n, "fills": sum(r.fills for r in rows1),
            "events_per_s_single": args.events * n / one, "events_per_s_processes": args.events * n / two}


def bench_ray(tmp: Path, args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any] | None:
    try:
        import ray
    except ImportError:
        return None
    tape = tmp / "small.tape"
    make_tape(tape, args.ray_events, seed=12)
    grid = grid_of(args.ray_variants)
    n = len(grid["fast"]) * len(grid["slow"])
    local, rows_local = timed(tape, args.strategy, grid, params, workers=2)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    init = time.perf_counter() - t0
    try:
        timed(tape, args.strategy, grid_of(2), params, ray_address="auto")  # warm the worker processes
        on_ray, rows_ray = timed(tape, args.strategy, grid, params, ray_address="auto")
    finally:
        ray.shutdown()
    assert rows_ray == rows_local, "Ray gave other rows than local processes"
    return {"events": args.ray_events, "variants": n, "ray_init_s": init, "local_s": local, "ray_s": on_ray,
            "local_per_variant_ms": local / n * 1e3, "ray_per_variant_ms": on_ray / n * 1e3,
            "overhead_per_variant_ms": (on_ray - local) / n * 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events on the big tape (default 1 M)")
    ap.add_argument("--variants", type=int, default=16, help="grid points over the big tape (default 16)")
    ap.add_argument("--ray-events", type=int, default=2_000, help="events on the Ray row's small tape")
    ap.add_argument("--ray-variants", type=int, default=64, help="grid points of the Ray row (default 64)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    ap.add_argument("--strategy", default=f"{HERE / '_ema_strategy.py'}:FastEma", help="PATH:Class to sweep")
    ap.add_argument("--param", action="append", default=[], metavar="K=V", help="a base parameter (JSON value)")
    ap.add_argument("--json", default="bench/results/sweep.json", help="where to write the results")
    args = ap.parse_args(argv)
    params: dict[str, Any] = {}
    for p in args.param:
        k, _, v = p.partition("=")
        try:
            params[k] = json.loads(v)
        except ValueError:
            params[k] = v

    with tempfile.TemporaryDirectory(prefix="flox-bench-sweep-") as tmp:
        local = bench_local(Path(tmp), args, params)
        on_ray: dict[str, Any] | None = None
        ray_error = None
        if not args.no_ray:
            try:
                on_ray = bench_ray(Path(tmp), args, params)
            except Exception as exc:  # the local rows are still worth printing
                ray_error = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    results: dict[str, Any] = {"local": local, "ray": on_ray, "ray_error": ray_error,
                               "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count()}}

    table = Table(title="flox-trio offline sweeps (bench/sweep.py)")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    what = f"{local['variants']} variants × {local['events'] / 1e6:g} M events"
    table.add_row(f"{what}, --workers 1", f"{local['single_s']:.1f} s "
                  f"({local['events_per_s_single'] / 1e6:.2f} M ev/s)", "")
    table.add_row(f"{what}, --workers 2", f"{local['processes_s']:.1f} s "
                  f"({local['events_per_s_processes'] / 1e6:.2f} M ev/s)", "")
    table.add_row("speed-up, 2 processes over 1", f"{local['speedup']:.2f}x", ">= 1.8x")
    if on_ray is not None:
        table.add_row("Ray start-up (ray.init(num_cpus=2))", f"{on_ray['ray_init_s']:.1f} s", "")
        table.add_row(f"{on_ray['variants']} variants × {on_ray['events']} events: local / Ray",
                      f"{on_ray['local_per_variant_ms']:.0f} / {on_ray['ray_per_variant_ms']:.0f} ms per variant", "")
        table.add_row("Ray overhead per variant", f"{on_ray['overhead_per_variant_ms']:+.0f} ms", "")
    else:
        table.add_row("Ray", f"failed: {ray_error}" if ray_error else "skipped (--no-ray, or ray not installed)",
                      "")
    report(table, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
