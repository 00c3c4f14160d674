"""The control subcommands: ``flox-trio ps|swap|status|slots|add|remove|halt|resume``.

Each one finds a running engine (``--run-dir DIR``, ``--run NAME``, or the
one engine running: see ``flox_trio.control._registry``), sends one request
over its control socket and prints the reply.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._core._convert import converter, to_jsonable
from .._core._events import quote_currency
from .._core._status import RunnerStatus, SlotStatus
from .._loader import split_spec
from ..control import call, find_run_dir, running_engines, runtime_root
from ..execution import RiskStatus


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v``: v is read as JSON (``8``, ``0.5``, ``true``, ``"x"``, ``[1,2]``), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--param takes key=value, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_warmup(text: str) -> int | float:
    """``500`` (events), ``2.5s``, ``90s``, ``2m``, ``1h`` (seconds of recent events, as a float)."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:]) if raw else None
    number = raw[:-1] if unit is not None else raw
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--warmup takes a number of events (500) or a duration (2.5s, 2m, 1h), got {text!r}") from None
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"--warmup must be >= 0, got {text!r}")
    if unit is not None:
        return value * unit
    if not value.is_integer():
        raise argparse.ArgumentTypeError(
            f"--warmup {text}: a number of events is whole; for seconds write {text}s")
    return int(value)


def absolute_spec(text: str) -> str:
    """Resolve the file part of ``PATH[:NAME]`` against this shell's directory (the engine's may differ)."""
    path, name = split_spec(text)
    resolved = str(Path(path).expanduser().resolve())
    return f"{resolved}:{name}" if name else resolved


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


#: Columns of the slots table, narrowest first: a narrow terminal gets fewer columns, never cut ones.
_COLUMNS: tuple[tuple[str, int], ...] = (
    ("slot", 0), ("state", 0), ("strategy", 0), ("events", 0), ("position", 0), ("PnL", 0), ("err", 0),
    ("open", 90), ("lang", 100), ("swaps", 100), ("queue", 110), ("dropped", 120), ("missed", 120),
    ("latency", 130), ("source", 140),
)
_RIGHT = {"slot", "events", "PnL", "err", "open", "swaps", "queue", "dropped", "missed", "latency"}


def _cells(s: SlotStatus, currency: str) -> dict[str, str]:
    return {
        "slot": str(s.index), "state": s.state.value, "strategy": s.strategy, "events": str(s.dispatched),
        "position": " ".join(f"{q} {sym}" for sym, q in s.position.items() if q) or "0",
        "PnL": f"{s.realized_pnl + s.unrealized_pnl:,.4f} {currency}", "err": str(s.errors),
        "open": str(s.open_orders), "lang": {"python": "py", "javascript": "js"}.get(s.language, s.language),
        "swaps": str(s.swaps), "queue": str(s.queue_depth), "dropped": str(s.dropped),
        "missed": str(sum(s.missed.values())), "source": s.source_hash[:8],
        "latency": "-" if s.latency_us is None else f"{s.latency_us:,.0f} us",
    }


def slots_table(slots: Sequence[SlotStatus], width: int = 200) -> Table:
    """One row per slot: what runs there and how it is doing; the columns that fit in ``width``."""
    currency = quote_currency(sym for s in slots for sym in s.symbols) if slots else "quote"
    columns = [name for name, needs in _COLUMNS if width >= needs]
    t = Table(title="slots", expand=False, pad_edge=False)
    for col in columns:
        t.add_column(col, no_wrap=True, justify="right" if col in _RIGHT else "left")
    for s in slots:
        cells = _cells(s, currency)
        t.add_row(*(cells[c] for c in columns), style="red" if s.quarantined else None)
    return t


def slot_notes(slots: Sequence[SlotStatus]) -> list[str]:
    """Why a slot is not trading, one line each: quarantine reasons and venue refusals."""
    notes = []
    for s in slots:
        if s.quarantined:
            notes.append(f"slot {s.index} quarantined: {s.quarantine_reason or s.last_error}")
        if s.note:
            notes.append(f"slot {s.index} {s.note}")
    return notes


def console() -> Console:
    """A console that does not squeeze the status tables when output is piped."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def kv_table(title: str, data: dict[str, Any]) -> Table:
    t = Table(title=title)
    t.add_column("key")
    t.add_column("value")
    for k, v in data.items():
        t.add_row(str(k), json.dumps(v, default=str) if isinstance(v, dict | list) else str(v))
    return t


def render_status(status: RunnerStatus, width: int = 200) -> list[Table | Text]:
    """What ``flox-trio status`` prints: the slots, why any is not trading, the feed, the executor."""
    feed = to_jsonable(status.feed)
    feed["engine published"] = status.published
    if status.connector_events:
        feed["connector events"] = status.connector_events
    notes = [Text(line, style="red") for line in slot_notes(status.slots)]
    params = [Text(f"slot {s.index} params: " + " ".join(f"{k}={json.dumps(v, default=str)}"
                                                          for k, v in s.params.items() if k != "symbols"))
              for s in status.slots if s.state.value != "removed"]
    # A whole-market session has a connection per shard: a row each, not one JSON cell.
    connections = feed.pop("connections", None) or []
    shards = [connections_table(connections)] if connections else []
    return [halt_banner(status), slots_table(status.slots, width), *notes, *params, kv_table("feed", feed),
            *shards, kv_table("executor", to_jsonable(status.executor))]


_CONNECTION_COLUMNS = (("shard", "shard"), ("state", "state"), ("connection", "connection_id"),
                       ("connects", "connect_count"), ("symbols", "symbols"), ("streams", "streams"),
                       ("subscribed", "subscribed"), ("messages", "messages"), ("last message", "last_message_age"))


def connections_table(connections: Sequence[dict[str, Any]]) -> Table:
    """A row per connection of the feed's session (``status().connections``, as JSON)."""
    t = Table(title="connections", expand=False, pad_edge=False)
    for title, _ in _CONNECTION_COLUMNS:
        t.add_column(title, no_wrap=True, justify="left" if title == "state" else "right")
    for c in connections:
        cells = []
        for _, key in _CONNECTION_COLUMNS:
            value = c.get(key)
            if key == "last_message_age":
                cells.append("-" if value is None else f"{value:.1f} s ago")
            else:
                cells.append("-" if value is None else str(value))
        t.add_row(*cells, style=None if c.get("state") == "connected" else "yellow")
    return t


def feed_line(status: RunnerStatus) -> Text:
    """The feed in one line (a connector's session, or a list's progress)."""
    feed = status.feed
    parts = [feed.feed]
    state = getattr(feed, "state", None)
    if state is not None:
        parts.append(f"{state}, connection {getattr(feed, 'connection_id', None)} "
                     f"({getattr(feed, 'connect_count', 0)} connects)")
    shards = getattr(feed, "connections", ())
    if len(shards) > 1:
        up = sum(1 for c in shards if c.state == "connected")
        parts.append(f"{up} of {len(shards)} connections up")
    for name in ("messages", "gaps", "resyncs", "errors"):
        value = getattr(feed, name, None)
        if isinstance(value, int):
            parts.append(f"{value} {name}")
    parts.append(f"{feed.published} published")
    return Text("feed: " + ", ".join(parts))


def live_view(status: RunnerStatus, logs: Sequence[str], width: int) -> list[Table | Text]:
    """``flox-trio run --live``: what fits a terminal, 80 columns included."""
    notes = [Text(line, style="red", overflow="ellipsis", no_wrap=True) for line in slot_notes(status.slots)]
    tail = [Text(line, overflow="ellipsis", no_wrap=True, style="dim") for line in logs]
    return [halt_banner(status), slots_table(status.slots, width), *notes, feed_line(status), *tail]


def halt_banner(status: RunnerStatus) -> Text:
    ex = status.executor
    if isinstance(ex, RiskStatus) and ex.halted:
        return Text(f"TRADING HALTED: {ex.halt_reason}; `flox-trio resume` to trade again", style="bold white on red")
    return Text(f"{status.published} events, {status.market_events} market events; trading on "
                f"{status.executor.executor}")


def read_status(data: Any) -> RunnerStatus:
    """A status that came over the control socket, as the snapshot the engine took."""
    # The snapshot classes of every feed and executor, so their `kind` tags resolve.
    from .. import connectors, execution, feeds  # noqa: F401

    status: RunnerStatus = converter.structure(data, RunnerStatus)
    return status


# --- subcommands -----------------------------------------------------------------------


def _swap(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"slot": args.slot, "path": absolute_spec(args.path), "params": dict(args.param)}
    if args.arg:
        fields["args"] = [v for _, v in (parse_param(f"a={a}") for a in args.arg)]
    if args.warmup is not None:
        fields["warmup"] = args.warmup
    if args.fresh:
        fields["fresh"] = True
    reply = call(_run_dir(args), "swap", **fields)
    r = reply["report"]
    out = console()
    out.print(f"slot {r['slot']}: swapped {r.get('label') or reply['spec']} at event {r['at_event']}, "
              f"pause {r['pause_s'] * 1e3:.3f} ms" + (f"; old on_stop failed: {r['stop_error']}"
                                                     if r.get("stop_error") else ""))
    if reply.get("params"):
        out.print(f"slot {r['slot']} runs with " + " ".join(f"{k}={v!r}" for k, v in reply["params"].items()))
    for change in reply.get("unnamed_changes") or ():
        out.print(f"[yellow]warning: this swap changed {change}, which you did not name[/]")
    return 0


def _add(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"path": absolute_spec(args.path), "params": dict(args.param)}
    if args.symbols:
        fields["symbols"] = args.symbols
    if args.arg:
        fields["args"] = [v for _, v in (parse_param(f"a={a}") for a in args.arg)]
    reply = call(_run_dir(args), "add", **fields)
    console().print(f"slot {reply['slot']}: added {reply['spec']} on {', '.join(reply.get('symbols') or [])}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    reply = call(_run_dir(args), "remove", slot=args.slot)
    console().print(f"slot {reply['slot']} removed")
    return 0


def _run_dir(args: argparse.Namespace) -> Path:
    return find_run_dir(args.run_dir, args.run)


def _ps(args: argparse.Namespace) -> int:
    import time

    engines = running_engines()
    if args.json:
        console().print_json(data=[{"name": e.name, "run_dir": str(e.run_dir), "pid": e.pid, "config": e.config,
                                    "started": e.started, "tape": e.tape} for e in engines])
        return 0
    if not engines:
        console().print(f"no engine is running under {runtime_root()}")
        return 0
    t = Table(title=f"engines under {runtime_root()}")
    for col in ("name", "pid", "up", "config", "tape"):
        t.add_column(col, no_wrap=col in ("name", "pid", "up"))
    for e in engines:
        t.add_row(e.name, str(e.pid), f"{time.time() - e.started:,.0f} s", e.config, e.tape or "-")
    console().print(t)
    return 0


def _status(args: argparse.Namespace) -> int:
    reply = call(_run_dir(args), "status")
    out = console()
    if args.json:
        out.print_json(data=reply["status"], default=str)
        return 0
    for part in render_status(read_status(reply["status"]), out.width):
        out.print(part)
    return 0


def _slots(args: argparse.Namespace) -> int:
    reply = call(_run_dir(args), "slots")
    t = Table(title="slots")
    for col in ("slot", "state", "language", "strategy", "params", "spec", "symbols", "dispatched"):
        t.add_column(col)
    for s in reply["slots"]:
        params = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in s["params"].items() if k != "symbols")
        t.add_row(str(s["index"]), s["state"], s["language"], s["strategy"], params or "-", s["spec"],
                  ", ".join(s["symbols"]), str(s["dispatched"]))
    console().print(t)
    return 0


def _halt(args: argparse.Namespace) -> int:
    reply = call(_run_dir(args), "halt", reason=args.reason)
    console().print(f"[red]trading halted[/red]: {reply['canceled']} open orders being canceled; "
                    "new orders are refused until `flox-trio resume`")
    return 0


def _resume(args: argparse.Namespace) -> int:
    call(_run_dir(args), "resume")
    console().print("trading resumed")
    return 0


def register(sub: Any) -> None:
    """Add the control subcommands to the CLI's subparsers."""

    def parser(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        which = p.add_mutually_exclusive_group()
        which.add_argument("--run", metavar="NAME", default=None,
                           help="the engine whose run is called NAME (its config's name, by default the "
                                "config file's stem); default: the one engine running (see `flox-trio ps`)")
        which.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                           help="the engine's run directory, for an engine whose config sets run_dir")
        p.set_defaults(func=func)
        return p

    def strategy_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", metavar="PATH[:NAME]",
                       help="file.py:ClassName, or file.js with an optional :factory")
        p.add_argument("--param", type=parse_param, action="append", default=[], metavar="K=V",
                       help="a keyword argument of the Python class (value read as JSON, else a string); "
                            "repeatable")
        p.add_argument("--arg", action="append", default=[], metavar="V",
                       help="an argument of the JavaScript factory (repeatable)")

    p = sub.add_parser("ps", help="list the engines running for this user", description="list the engines "
                       "running for this user: their names (for --run), pids, configs and tapes")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_ps)
    p = parser("swap", "swap the strategy in a slot of a running engine; it keeps the slot's parameters "
                       "and applies --param on top", _swap)
    p.add_argument("slot", type=int, metavar="SLOT", help="the slot's index (see `flox-trio status`)")
    strategy_args(p)
    p.add_argument("--warmup", type=parse_warmup, default=None, metavar="N|DURATION",
                   help="first replay recent events through the new strategy: a count (500) or a duration "
                        "(2.5s, 2m)")
    p.add_argument("--fresh", action="store_true",
                   help="build the new strategy from its defaults and --param only, not the slot's parameters")
    p = parser("add", "add a strategy in a new slot", _add)
    strategy_args(p)
    p.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL",
                   help="symbols the new slot watches (default: those the strategy declares, else the "
                        "engine's)")
    p = parser("remove", "remove a slot (its strategy's on_stop runs)", _remove)
    p.add_argument("slot", type=int, metavar="SLOT", help="the slot's index")
    p = parser("status", "show slots, feed and executor of a running engine", _status)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    parser("slots", "list the slots of a running engine, with their parameters", _slots)
    p = parser("halt", "kill switch: cancel all open orders and refuse new ones", _halt)
    p.add_argument("--reason", default="halted by operator", help="recorded with every refusal")
    parser("resume", "accept orders again after a halt", _resume)
