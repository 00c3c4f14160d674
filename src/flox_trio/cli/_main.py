"""Argument parsing and dispatch to the subcommands. Only this package prints."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .._errors import FloxError, flox_error_in, leaves
from .._version import __version__


def _demo(args: argparse.Namespace) -> int:
    from ._demo import demo_command

    return demo_command(seconds=args.seconds, offline=args.offline, seed=args.seed, report=args.report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flox-trio",
        description="A live trading engine on Trio that hot-swaps Python and JavaScript strategies.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"flox-trio {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run strategies on the embedded simulator, swap one live, print a summary")
    demo.add_argument("--seconds", type=float, default=8.0, help="how long to run (default 8)")
    demo.add_argument("--offline", action="store_true", help="use a synthetic offline feed instead of the simulator")
    demo.add_argument("--seed", type=int, default=7, help="market generator seed")
    demo.add_argument("--report", metavar="DIR", help="also write report.json and report.png of the run into DIR")
    demo.set_defaults(func=_demo)

    from . import _backtest, _control, _run, _sweep, _tape

    # Listed for --help; main() hands `flox-trio sim ...` to the simulator's own parser.
    sub.add_parser("sim", help="run the exchange simulator standalone (Binance and Bybit wire formats)")

    _run.register(sub)
    _control.register(sub)
    _tape.register(sub)
    _backtest.register(sub)
    _sweep.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        from ..sim import main as sim_main

        return sim_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FloxError as exc:
        return _fail(args.command, exc, args)
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        # An error raised inside the engine's tasks (a connector refusing a
        # channel, a tape path that is taken) arrives wrapped by the nursery.
        if any(isinstance(e, KeyboardInterrupt) for e in leaves(group)):
            return 130
        error = flox_error_in(group)
        if error is None:
            raise
        return _fail(args.command, error, args)


def _fail(command: str, exc: FloxError, args: argparse.Namespace) -> int:
    """Report a user-facing failure on exactly one line of stderr; exit status 2.

    With JSON logs (``--log-format json``, or the config's ``[log] format``)
    the line is a JSON object like every other line the run printed.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    if getattr(args, "json_output", False):
        import json

        print(json.dumps({"level": "error", "logger": "flox_trio.cli", "command": command,
                          "error": type(exc).__name__, "message": text}), file=sys.stderr)
    else:
        print(f"flox-trio {command}: {text}", file=sys.stderr)
    return 2

