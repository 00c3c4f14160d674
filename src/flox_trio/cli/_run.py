"""``flox-trio run CONFIG.toml [--reload] [--live]``: the engine as a long-running process.

The engine itself is ``flox_trio.app.open_engine``; this module parses the
arguments, sets up logging, stops the engine on Ctrl-C or SIGTERM, and
prints what happened.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from collections import deque
from pathlib import Path
from typing import Any

import attrs
import trio
from rich.console import Console

from ..app import Engine, EngineSummary, open_engine
from ..config import Config, load_config
from ..control._registry import check_run_name

log = logging.getLogger("flox_trio.run")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ts, level, logger, message (and exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": record.created, "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(config: Config, verbose: int = 0) -> None:
    handler = logging.StreamHandler()
    if config.log.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = logging.DEBUG if verbose >= 2 else getattr(logging, config.log.level.upper())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # One line per REST request (every book resync) is the HTTP client's debugging, not ours.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))


class LogTail(logging.Handler):
    """The last few log lines, for the live view (refusals and quarantines must show somewhere)."""

    def __init__(self, lines: int = 6) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record).replace("\n", " | "))
        except Exception:  # a log line must never break the view
            self.handleError(record)


async def _show_live(engine: Engine, tail: LogTail, period: float = 1.0) -> None:
    """Redraw the status in the terminal while the engine runs, with the last log lines under it."""
    from rich.console import Group
    from rich.live import Live

    from ._control import console, live_view

    out = console()
    with Live(console=out, refresh_per_second=4, transient=False) as live:
        while True:
            live.update(Group(*live_view(engine.runner.status(), list(tail.lines), out.width)))
            await trio.sleep(period)


async def run_until_signal(config: Config, reload: bool, live: bool = False,
                           tail: LogTail | None = None) -> EngineSummary:
    """Run the engine until SIGINT or SIGTERM; return its summary."""
    # The signal receiver outlives the engine: Ctrl-C at any moment is a clean stop.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_engine(config, reload=reload) as engine, trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for sig in signals:
                    log.warning("%s received: stopping", signal.Signals(sig).name)
                    engine.stop()
                    return

            nursery.start_soon(on_signal)
            if live:
                nursery.start_soon(_show_live, engine, tail or LogTail())
            await engine.stopped()
            summary = engine.summary()
            nursery.cancel_scope.cancel(reason="engine stopping")
    return summary


def run_command(args: argparse.Namespace) -> int:
    args.json_output = args.log_format == "json"
    config = load_config(args.config)
    if args.log_format is not None:  # the command line wins over the config file
        config = attrs.evolve(config, log=attrs.evolve(config.log, format=args.log_format))
    args.json_output = config.log.format == "json"  # errors and the summary too, to the last line
    if args.name is not None:
        config = attrs.evolve(config, name=check_run_name(args.name))
    if args.run_dir is not None:
        config = attrs.evolve(config, run_dir=str(args.run_dir.expanduser().absolute()))
    if args.tape is not None:  # relative to this shell, like every path on the command line
        config = attrs.evolve(config, tape=str(Path(args.tape).expanduser().absolute()))
    configure_logging(config, getattr(args, "verbose", 0))
    tail = None
    if args.live:
        # The live view owns the terminal: log lines go under it, not across it.
        tail = LogTail()
        logging.getLogger().handlers[:] = [tail]
    summary = trio.run(run_until_signal, config, bool(args.reload), bool(args.live), tail)
    from ._control import console

    report: tuple[Path, Path] | None = None
    if summary.tape is not None:
        from ._tape import write_report_for

        report = write_report_for(summary.tape, summary.tape.with_name(summary.tape.name + ".report"))
    if args.json_output:
        print(json.dumps(summary_json(summary, report), default=str))
        return 0
    print_summary(console(), summary)
    if summary.tape is not None and report is not None:
        console().print(f"tape: {summary.tape} (replay: flox-trio replay {summary.tape})")
        console().print(f"report: {report[0]}, {report[1]}")
    return 0


def summary_json(summary: EngineSummary, report: tuple[Path, Path] | None) -> dict[str, Any]:
    """The end-of-run summary as one JSON object (``--log-format json``)."""
    from .._core._convert import to_jsonable

    by_status: dict[str, int] = {}
    for _, _, status in summary.orders:
        by_status[status] = by_status.get(status, 0) + 1
    return {"level": "info", "logger": "flox_trio.run", "message": "engine stopped", "uptime_s": summary.uptime_s,
            "published": summary.status.published, "orders": by_status,
            "slots": [{"index": s.index, "state": s.state.value, "strategy": s.strategy, "events": s.dispatched,
                       "position": s.position, "pnl": s.realized_pnl + s.unrealized_pnl, "errors": s.errors}
                      for s in summary.status.slots],
            "executor": to_jsonable(summary.status.executor),
            "tape": None if summary.tape is None else str(summary.tape),
            "report": None if report is None else [str(p) for p in report]}


def print_summary(console: Console, summary: EngineSummary) -> None:
    from ..execution import RiskStatus
    from ._control import slots_table

    st = summary.status
    console.print(f"[bold]flox-trio run[/bold]: {st.published} events published in {summary.uptime_s:.1f} s")
    console.print(slots_table(st.slots))
    by_status: dict[str, int] = {}
    for _, _, status in summary.orders:
        by_status[status] = by_status.get(status, 0) + 1
    console.print(f"orders: {len(summary.orders)} "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(by_status.items())) or 'none'})")
    if isinstance(st.executor, RiskStatus):
        console.print(f"risk: {st.executor.refused} refused" + (", halted" if st.executor.halted else ""))


def register(sub: Any) -> None:
    """Add the ``run`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("run", help="run the engine from a TOML config until Ctrl-C")
    p.add_argument("config", type=Path, help="the run configuration (see examples/)")
    p.add_argument("--reload", action="store_true", help="swap in strategy files as they are saved")
    p.add_argument("--live", action="store_true", help="show the status tables live in the terminal")
    p.add_argument("--log-format", choices=("human", "json"), default=None,
                   help="log lines for people (default) or one JSON object per line")
    p.add_argument("--name", default=None, help="the run's name, for `flox-trio status --run NAME` "
                   "(default: the config's name, else the config file's stem)")
    p.add_argument("--tape", default=None, metavar="PATH",
                   help="record the session to this tape (overrides the config's tape; {name}, {date} and "
                        "{time} are filled in; a path that holds a tape already gets a -2, -3... suffix)")
    p.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                   help="where the control socket goes (default: a per-user directory for the run's name)")
    p.set_defaults(func=run_command)
