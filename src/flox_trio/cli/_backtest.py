"""``flox-trio backtest TAPE|BUNDLE... --strategy PATH[:FACTORY] --grid k=v1,v2 ...``: an offline sweep."""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .._errors import ConfigError
from ._control import console as make_console
from ._control import parse_param

if TYPE_CHECKING:
    from ..sweep import BacktestRow

_SORTS = ("pnl", "realized_pnl", "unrealized_pnl", "fills", "orders", "events", "fees", "max_drawdown")


def _out_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = Path("runs") / time.strftime("backtest-%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _backtest_cmd(args: argparse.Namespace) -> int:
    from ..execution import PaperSettings
    from ..sweep import StrategySource, backtest, parse_grid, sort_rows
    from ..sweep._backtest import recorded_strategy
    from ..sweep._backtest_report import write_results

    grid = parse_grid(args.grid)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    params: dict[str, Any] = {}
    if args.strategy:
        strategy = StrategySource.from_spec(args.strategy)
    else:
        strategy, params = recorded_strategy(args.paths[0], args.slot, trust=args.trust)
    params.update(dict(args.param))
    executor = None
    if args.taker_fee is not None or args.maker_fee is not None or args.latency is not None:
        executor = PaperSettings(latency=0.005 if args.latency is None else args.latency,
                                 taker_fee=args.taker_fee or Decimal(0), maker_fee=args.maker_fee or Decimal(0))
    n_variants = 1
    for values in grid.values():
        n_variants *= len(values)
    console = make_console()
    with Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("", total=n_variants * len(args.paths))

        def advance(row: BacktestRow) -> None:
            progress.update(task, advance=1, description=f"{row.label} on {Path(row.tape).name}")

        rows = backtest(args.paths, strategy, grid, base_params=params, workers=args.workers,
                        ray_address=args.ray, progress=advance, symbols=args.symbols or None, executor=executor)
    ranked = sort_rows(rows, args.sort)
    console.print(_table(ranked, args, strategy.spec))
    failed = [r for r in rows if r.error is not None]
    for r in failed[:5]:
        console.print(f"[red]failed:[/red] {r.label} on {r.tape}: {r.error}")
    if len(failed) > 5:
        console.print(f"[red]... and {len(failed) - 5} more failed jobs[/red] (see results.json)")
    out = _out_dir(args.out)
    written = write_results(ranked, out, strategy=strategy, grid=grid, base_params=params, sort=args.sort)
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 1 if failed and len(failed) == len(rows) else 0


def _table(rows: list[BacktestRow], args: argparse.Namespace, spec: str) -> Table:
    tapes = len({r.tape for r in rows})
    currency = rows[0].currency if rows else "quote"
    shown = rows[:args.top] if args.top else rows
    more = f"; the best {len(shown)} of {len(rows)} shown" if len(shown) < len(rows) else ""
    t = Table(title=f"backtest of {spec.rsplit('/', 1)[-1]}: {len(rows)} runs over {tapes} "
                    f"tape{'s' if tapes != 1 else ''}, sorted by {args.sort}{more} (money in {currency})")
    cols = ["#", *(["tape"] if tapes > 1 else []), "variant", "events", "orders", "fills", "realized",
            "unrealized", "PnL", "fees", "max DD", "position"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("tape", "variant", "position") else "right")
    for rank, r in enumerate(shown, 1):
        lead = [str(rank), *([Path(r.tape).name] if tapes > 1 else []), r.label]
        if r.error is not None:
            t.add_row(*lead, *[""] * (len(cols) - len(lead) - 1), "[red]failed[/red]")
            continue
        t.add_row(*lead, str(r.events), str(r.orders), str(r.fills), _money(r.realized_pnl),
                  _money(r.unrealized_pnl), _money(r.pnl), _money(r.fees), _money(r.max_drawdown),
                  ", ".join(f"{k} {v.normalize()}" for k, v in r.position.items() if v) or "flat")
    return t


def _money(value: Decimal) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def _fee(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"a fee rate is a number like 0.001, got {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"a fee rate is a number >= 0, got {text!r}")
    return value


def register(sub: Any) -> None:
    bt = sub.add_parser(
        "backtest",
        help="offline sweep: every grid point of a strategy over tapes, on local processes or a Ray cluster",
        description="Run a strategy over recorded tapes in 'what would it have done' mode, once per grid point "
                    "and tape: the tapes' market events through the strategy alone, on a paper executor. "
                    "Prints a table and writes results.json, results.parquet (with pyarrow) and report.png.")
    bt.add_argument("paths", nargs="+", metavar="TAPE|BUNDLE",
                    help="tape directories or bundles (only their market data is used: their strategies "
                         "and swaps are not replayed)")
    bt.add_argument("--strategy", metavar="PATH[:FACTORY]",
                    help="the strategy to sweep: file.py:ClassName or file.js[:factory]; your own file, so "
                         "it needs no --trust (default: the strategy the first tape recorded in --slot)")
    bt.add_argument("--slot", type=int, default=0,
                    help="without --strategy, sweep the strategy the first tape recorded in this slot (default 0)")
    bt.add_argument("--grid", action="append", default=[], metavar="K=V1,V2,...",
                    help="a parameter and its values (JSON, else text); repeat for more: every combination runs")
    bt.add_argument("--param", action="append", default=[], type=parse_param, metavar="K=V",
                    help="a parameter every variant gets (the grid's values go on top); repeatable")
    bt.add_argument("--symbols", nargs="+", metavar="SYMBOL",
                    help="the symbols the strategy trades (default: every symbol on the tape)")
    bt.add_argument("--workers", type=int, metavar="N",
                    help="local worker processes (default: one per core; 1 runs in this process); "
                         "with --ray, the CPUs of a --ray local instance")
    bt.add_argument("--ray", metavar="ADDRESS",
                    help="run the jobs on Ray: auto (the running cluster), local (start one here) or "
                         "ray://host:port; needs pip install 'flox-trio[ray]'")
    bt.add_argument("--sort", default="pnl", choices=_SORTS,
                    help="the metric the table and results are sorted by, best first (default pnl; "
                         "fees and max_drawdown ascending)")
    bt.add_argument("--top", type=int, default=30, metavar="N",
                    help="rows the table shows (default 30; 0 for all); results.json has every row")
    bt.add_argument("-o", "--out", metavar="DIR",
                    help="directory for results.json, results.parquet, report.png "
                         "(default: a new runs/backtest-DATE-TIME)")
    bt.add_argument("--taker-fee", type=_fee, metavar="RATE",
                    help="the paper executor's taker fee rate; any of --taker-fee, --maker-fee, --latency fills every "
                         "tape on those (the others 0, 0, 0.005); default: each tape's recorded paper settings")
    bt.add_argument("--maker-fee", type=_fee, metavar="RATE",
                    help="the paper executor's maker fee rate (see --taker-fee)")
    bt.add_argument("--latency", type=float, metavar="SECONDS",
                    help="the paper executor's acknowledgement latency in seconds of the tape's time (see --taker-fee)")
    bt.add_argument("--trust", action="store_true",
                    help="without --strategy, run a bundle's recorded Python strategy: code from whoever made "
                         "the bundle, unsandboxed with your permissions (a tape of yours and JavaScript "
                         "need no --trust)")
    bt.set_defaults(func=_backtest_cmd)

