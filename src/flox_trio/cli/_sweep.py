"""``flox-trio sweep CONFIG`` (variants live through one slot) and ``flox-trio ab CONFIG`` (two side by side)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

import trio

from .._core._events import quote_currency
from ..config import load_config
from ._control import console, parse_param


def _load(args: argparse.Namespace) -> Any:
    from ._run import configure_logging

    config = load_config(args.config)
    configure_logging(config, args.verbose)
    return config


async def _until_signal(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` to completion, or until Ctrl-C/SIGTERM (then KeyboardInterrupt: nothing is written)."""
    result: list[Any] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def body() -> None:
                result.append(await fn(*args, **kwargs))
                nursery.cancel_scope.cancel()

            nursery.start_soon(body)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    if not result:
        raise KeyboardInterrupt
    return result[0]


def _sweep_cmd(args: argparse.Namespace) -> int:
    from ..sweep import default_out_dir, parse_grid, results_table, sweep_config, write_sweep

    config = _load(args)
    grid = parse_grid(args.grid)
    run = trio.run(lambda: _until_signal(sweep_config, config, args.slot, grid, each=args.each, rounds=args.rounds,
                                         order=args.order, seed=args.seed, flat_between=args.flat_between))
    out = console()
    out.print(results_table(f"live sweep of slot {args.slot}: {len(run.rows)} windows of {args.each:g} s, "
                            f"{run.variants} variants", run.rows,
                            (("#", "iteration"), ("round", "round"), ("variant", "label")), run.currency))
    connections = sorted({r["connection_id"] for r in run.rows if r["connection_id"] is not None})
    if connections:
        out.print(f"connection id{'s' if len(connections) > 1 else ''} throughout: "
                  f"{', '.join(map(str, connections))}")
    json_path, png = write_sweep(run, Path(args.out) if args.out else default_out_dir("sweep"))
    out.print(f"results: {json_path}, {png}")
    return 0


def _ab_cmd(args: argparse.Namespace) -> int:
    from ..sweep import AbSpec, ab_config, ab_rows, default_out_dir, results_table, write_ab

    config = _load(args)
    a = AbSpec(args.a, dict(args.a_param), tuple(parse_param(f"a={v}")[1] for v in args.a_arg))
    b = AbSpec(args.b, dict(args.b_param), tuple(parse_param(f"a={v}")[1] for v in args.b_arg))
    result = trio.run(lambda: _until_signal(ab_config, config, a, b, seconds=args.seconds, interval=args.interval))
    currency = quote_currency(config.symbols)
    out = console()
    rows = ab_rows(result)
    out.print(results_table(f"A/B on one session, {args.seconds:g} s", rows,
                            (("side", "side"), ("strategy", "name")), currency))
    verdict = ("A did better" if result.ci_low > 0 else "B did better" if result.ci_high < 0
               else "no difference the interval can tell from luck")
    out.print(f"A - B: {result.pnl_diff:,.4f} {currency}, {result.confidence:.0%} bootstrap interval "
              f"[{result.ci_low:,.4f}, {result.ci_high:,.4f}]: {verdict}; both saw {result.a.events} and "
              f"{result.b.events} market events")
    json_path, png = write_ab(result, Path(args.out) if args.out else default_out_dir("ab"), currency)
    out.print(f"results: {json_path}, {png}")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def register(sub: Any) -> None:
    """Add ``sweep`` and ``ab`` to the CLI's subparsers."""
    out_help = "write results.json and report.png here (default: a new directory under runs/)"
    p = sub.add_parser("sweep", help="a live parameter sweep: every grid point through one slot, one session",
                       description="Run CONFIG's engine and cycle one slot through every point of the grid, "
                                   "--each seconds apiece, on one connection; print and write the results.")
    p.add_argument("config", type=Path, help="the run configuration (see examples/)")
    p.add_argument("--slot", type=int, default=0, help="the slot whose strategy is varied (default 0)")
    p.add_argument("--grid", action="append", required=True, metavar="K=V1,V2,...",
                   help="a parameter and its values (repeatable: every combination runs)")
    p.add_argument("--each", type=_seconds, required=True, metavar="SECONDS", help="how long each window runs")
    p.add_argument("--rounds", type=int, default=1, help="run the whole grid this many times, interleaved "
                   "(ABC ABC), so a drift of the market does not favour one variant (default 1)")
    p.add_argument("--order", choices=("grid", "random"), default="grid",
                   help="the order within a round (default: grid order)")
    p.add_argument("--seed", type=int, default=None, help="seed of --order random")
    p.add_argument("--flat-between", action="store_true",
                   help="close the slot's position before each window, so inventory does not carry over")
    p.add_argument("--out", default=None, metavar="DIR", help=out_help)
    p.set_defaults(func=_sweep_cmd)

    p = sub.add_parser("ab", help="an A/B test: two strategies side by side on one session",
                       description="Run CONFIG's venue and executor (not its slots) with strategies A and B "
                                   "side by side: the same events at the same moments, separate accounts.")
    p.add_argument("config", type=Path, help="the run configuration: venue, symbols, executor, risk")
    for side in ("a", "b"):
        p.add_argument(f"--{side}", required=True, metavar="PATH[:NAME]",
                       help=f"strategy {side.upper()}: file.py:ClassName or file.js[:factory]")
        p.add_argument(f"--{side}-param", type=parse_param, action="append", default=[], metavar="K=V",
                       help=f"a keyword argument of {side.upper()}'s Python class (repeatable)")
        p.add_argument(f"--{side}-arg", action="append", default=[], metavar="V",
                       help=f"an argument of {side.upper()}'s JavaScript factory (repeatable)")
    p.add_argument("--seconds", type=_seconds, default=300.0, help="how long both run (default 300)")
    p.add_argument("--interval", type=_seconds, default=1.0,
                   help="seconds between equity samples, the bootstrap's unit (default 1)")
    p.add_argument("--out", default=None, metavar="DIR", help=out_help)
    p.set_defaults(func=_ab_cmd)
