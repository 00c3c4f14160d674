"""``flox-trio record | replay | bundle pack|validate | tape info``."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._core._events import quote_currency
from .._errors import ConfigError
from ._control import console as make_console

if TYPE_CHECKING:
    from ..replay import ReplayResult

# --- record ------------------------------------------------------------------------------

def _record_cmd(args: argparse.Namespace) -> int:
    from ..app import record
    from ..config import Config, converter, load_config

    if args.config:
        config = load_config(args.config)
    else:
        if not args.symbols:
            raise ConfigError("record needs --symbols (e.g. --symbols BTCUSDT ETHUSDT) or a CONFIG.toml")
        config = converter.structure({"symbols": args.symbols, "venue": {"name": args.venue}}, Config)
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} already exists: record to a new tape path")
    status = trio.run(record, config, out, args.duration)
    make_console().print(f"recorded {status.published} events from {config.venue.name} to {out}")
    return 0


# --- replay ------------------------------------------------------------------------------

def _replay_cmd(args: argparse.Namespace) -> int:
    from ..replay import is_bundle, replay_tape, validate_bundle
    from ..tape import tape_info

    path = Path(args.path)
    console = make_console()
    bundle = is_bundle(path)
    total = None if bundle else tape_info(path).events
    # The session's strategies run again, and the risk layer refuses again what it refused
    # live: the summary counts those; one warning per refusal is for the live run.
    if args.verbose == 0:
        logging.getLogger("flox_trio.risk").setLevel(logging.ERROR)
    with Progress(TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(path.name, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        own = Path(tempfile.mkdtemp(prefix="flox-replay-tape-")) / "replay.tape"
        if bundle:
            validation = validate_bundle(path, trust=args.trust, progress=advance)
            result = validation.result
        else:
            result = replay_tape(path, progress=advance, mode=args.mode,
                                 record=own if args.report and args.mode == "simulate" else None)
    _summary(console, result)
    if result.divergences:
        console.print(f"[red]the replay diverged from the live session[/red] ({len(result.divergences)} orders): "
                      f"{result.divergences[0]}")
    if args.report:
        # A simulation's orders and fills are its own: its report is of the tape it wrote.
        shown = own if own.exists() else path
        source = f"replay ({result.mode})" if not bundle else "bundle validation (simulate)"
        json_path, png_path = write_report_for(shown, Path(args.report), source=source)
        shutil.rmtree(own.parent, ignore_errors=True)
        console.print(f"report ({source}): {json_path}, {png_path}")
    if bundle:
        for w in validation.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
        console.print("outputs identical to the bundle's expected outputs" if validation.ok
                      else f"[red]outputs differ:[/red] {validation.divergence}")
        return 0 if validation.ok else 1
    return 0


def _summary(console: Console, result: ReplayResult) -> None:
    outputs = result.outputs
    t = Table(title=f"replay: {result.events} market events, {result.swaps} swaps")
    for col in ("slot", "strategy", "language", "dispatched", "swaps", "errors", "position", "realized PnL"):
        t.add_column(col, justify="right")
    currency = quote_currency(sym for s in result.status.slots for sym in s.symbols)
    for s in result.status.slots:
        t.add_row(str(s.index), s.strategy, s.language, str(s.dispatched), str(s.swaps),
                  str(s.errors), ", ".join(f"{k} {v}" for k, v in s.position.items()),
                  f"{s.realized_pnl} {currency}")
    console.print(t)
    filled = sum(o["status"] == "filled" for o in outputs["orders"])
    rejected = sum(o["status"] == "rejected" for o in outputs["orders"])
    console.print(f"orders: {len(outputs['orders'])} ({filled} filled, {rejected} rejected), "
                  f"fills: {len(outputs['fills'])}")


# --- bundle ------------------------------------------------------------------------------

def _bundle_pack(args: argparse.Namespace) -> int:
    from ..replay import pack_bundle

    out = pack_bundle(args.tape, args.out, config=args.config)
    make_console().print(f"packed {args.tape} into {out}")
    return 0


def _bundle_validate(args: argparse.Namespace) -> int:
    from ..replay import validate_bundle

    console = make_console()
    validation = validate_bundle(args.bundle, trust=args.trust)
    for w in validation.warnings:
        console.print(f"warning: {w}")
    r = validation.result
    if validation.ok:
        console.print(f"identical: {len(r.outputs['orders'])} orders, {len(r.outputs['fills'])} fills, "
                      f"{r.swaps} swaps over {r.events} market events")
        return 0
    console.print(f"DIFFERENT: {validation.divergence}")
    return 1


# --- report ------------------------------------------------------------------------------

def write_report_for(path: Path, out_dir: Path, source: str = "flox-trio run") -> tuple[Path, Path]:
    from ..replay import tape_of
    from ..report import write_report

    with tape_of(path) as tape:
        return write_report(tape, out_dir, source=source)


def _report_cmd(args: argparse.Namespace) -> int:
    json_path, png_path = write_report_for(Path(args.path), Path(args.out))
    make_console().print(f"wrote {json_path} and {png_path}")
    return 0


# --- tape info ----------------------------------------------------------------------------

def _tape_info(args: argparse.Namespace) -> int:
    from ..tape import tape_info

    info = tape_info(args.tape)
    console = make_console()
    t = Table(title=f"{info.path} ({info.segments} segments, {info.bytes} bytes)")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k, v in sorted(info.event_types.items()):
        t.add_row(f"events: {k}", str(v))
    for k, v in sorted(info.symbols.items()):
        t.add_row(f"symbol: {k}", str(v))
    for k, v in sorted(info.records.items()):
        t.add_row(f"records: {k}", str(v))
    for k, v in sorted(info.connector_events.items()):
        t.add_row(f"connector: {k}", str(v))
    t.add_row("strategy errors", str(info.errors))
    console.print(t)
    console.print(f"time span: {info.duration_s:.3f} s; sequence {info.first_seq}..{info.last_seq}")
    for sw in info.swaps:
        console.print(f"swap: slot {sw.slot} at market event {sw.at_market_event}: {sw.old_language} {sw.old_hash[:8]} → "
                      f"{sw.new_language} {sw.new_hash[:8]}")
    if info.torn_tail is not None:
        console.print(f"[yellow]torn tail:[/yellow] {info.torn_tail.reason} at {info.torn_tail.segment}:"
                      f"{info.torn_tail.offset} ({info.torn_tail.dropped_bytes} bytes dropped)")
    return 0


_TRUST_HELP = ("run the bundle's Python strategies: they are code from whoever made the bundle and run "
               "unsandboxed with your permissions (JavaScript is sandboxed; a plain tape needs no --trust)")


def register(sub: Any) -> None:
    rec = sub.add_parser("record", help="record a venue (or the simulator) to a tape for a duration")
    rec.add_argument("config", nargs="?", help="a run config (its venue and symbols are used)")
    rec.add_argument("--venue", default="sim", choices=("sim", "binance", "bybit"),
                     help="the venue to record when no config is given (default: the embedded simulator)")
    rec.add_argument("--symbols", nargs="*", default=[], metavar="SYMBOL",
                     help="symbols to record when no config is given")
    rec.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    rec.add_argument("-o", "--out", required=True, help="the tape directory to create")
    rec.set_defaults(func=_record_cmd)

    rep = sub.add_parser("replay", help="replay a tape or a bundle deterministically and summarise")
    rep.add_argument("path", help="a tape directory, or a bundle (.tar or directory)")
    rep.add_argument("--report", metavar="DIR", help="also write report.json and report.png into DIR")
    rep.add_argument("--trust", action="store_true", help=_TRUST_HELP)
    rep.add_argument("--mode", choices=("reproduce", "simulate"), default="reproduce",
                     help="reproduce (default): the live executor's recorded answers, so orders and fills are "
                          "the session's; simulate: the recorded executor stack on paper, answering anew "
                          "(what the strategies would do). A bundle is always simulated")
    rep.set_defaults(func=_replay_cmd)

    report = sub.add_parser("report", help="report.json and report.png (equity, position, swaps) of a tape or bundle")
    report.add_argument("path", help="a tape directory, or a bundle (.tar or directory)")
    report.add_argument("-o", "--out", default=".", help="directory to write into (default: here)")
    report.set_defaults(func=_report_cmd)

    bundle = sub.add_parser("bundle", help="reproducibility bundles: pack, validate")
    bsub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    pack = bsub.add_parser("pack", help="pack a tape, its strategies and expected outputs")
    pack.add_argument("tape", help="the tape directory to pack")
    pack.add_argument("-o", "--out", required=True, help="bundle path: NAME.tar or a new directory")
    pack.add_argument("--config", help="the run config to include")
    pack.set_defaults(func=_bundle_pack)
    val = bsub.add_parser("validate", help="replay a bundle: exit 0 when identical, 1 with the first divergence")
    val.add_argument("bundle", help="a bundle: NAME.tar or a directory `bundle pack` wrote")
    val.add_argument("--trust", action="store_true", help=_TRUST_HELP)
    val.set_defaults(func=_bundle_validate)

    tape = sub.add_parser("tape", help="inspect tapes")
    tsub = tape.add_subparsers(dest="tape_command", required=True, metavar="ACTION")
    info = tsub.add_parser("info", help="counts per type and symbol, time range, swaps")
    info.add_argument("tape", help="a tape directory")
    info.set_defaults(func=_tape_info)
