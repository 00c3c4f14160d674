"""``flox-trio run CONFIG.toml [--reload]``: the engine as a long-running process.

Builds the feed (``open_venue_feed``), the executor behind a ``RiskExecutor``,
the runner and its slots from the config; serves the control socket in the
run directory; with ``--reload`` swaps in strategy files as they are saved;
runs until Ctrl-C or SIGTERM and prints a summary.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import random
import signal
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from rich.console import Console

from .._core._events import Trade
from .._errors import ConfigError, FloxError, StrategyLoadError
from .._runner import Runner, open_runner
from ..config import Config, LimitsConfig, load_config
from ..control import serve_control, serve_metrics
from ..control._loader import StrategySpec, load_strategy, parse_spec
from ..execution import PaperExecutor
from ..execution._risk import Limits, RiskExecutor, RiskLimits
from ..feeds import Feed, FeedHub

log = logging.getLogger("flox_trio.run")


# --- venues --------------------------------------------------------------------------


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@asynccontextmanager
async def open_venue_feed(config: Config) -> AsyncIterator[Feed]:
    """The market-data feed for ``config.venue``: the one place venues are constructed.

    ``sim``: the embedded simulator (``flox_trio.sim.open_simulator``) when it
    is installed, reached through a Binance connector on loopback; without it,
    a local random-walk market (``SyntheticFeed``) so a config still runs.
    ``binance`` / ``bybit``: ``flox_trio.connectors`` with the configured URLs.
    """
    venue = config.venue
    symbols = list(config.symbols)
    urls: dict[str, Any] = {k: v for k, v in (("ws_url", venue.ws_url), ("rest_url", venue.rest_url))
                            if v is not None}
    if venue.channels is not None:
        urls["channels"] = venue.channels
    if venue.name == "sim":
        sim = _optional_module("flox_trio.sim")
        connectors = _optional_module("flox_trio.connectors")
        if sim is not None and hasattr(sim, "open_simulator") and connectors is not None:
            async with sim.open_simulator(symbols=symbols, rate=venue.sim_rate) as simulator:
                channels = {"channels": venue.channels} if venue.channels is not None else {}
                yield connectors.Binance(symbols, ws_url=simulator.binance_ws_url,
                                         rest_url=simulator.binance_rest_url, **channels)
            return
        log.warning("the exchange simulator (flox_trio.sim) is not installed: using a local random-walk market")
        yield SyntheticFeed(symbols)
        return
    connectors = _optional_module("flox_trio.connectors")
    cls_name = {"binance": "Binance", "bybit": "Bybit"}[venue.name]
    cls = getattr(connectors, cls_name, None) if connectors is not None else None
    if cls is None:
        raise ConfigError(f"venue.name = {venue.name!r} needs flox_trio.connectors.{cls_name}, which is not "
                          "installed in this build; use venue.name = \"sim\"")
    if venue.name == "bybit":
        urls.pop("rest_url", None)
    yield cls(symbols, **urls)


class SyntheticFeed(Feed):
    """An endless random walk of trades, paced on the Trio clock (a stand-in market for ``sim``)."""

    def __init__(self, symbols: Iterable[str], *, rate: float = 50.0, seed: int = 7) -> None:
        self.symbols = tuple(symbols)
        self.rate = rate
        self.rng = random.Random(seed)
        self.prices = dict.fromkeys(self.symbols, 43_000.0)
        self.published = 0

    async def run(self, hub: FeedHub) -> None:
        period = 1.0 / self.rate
        n = 0
        while True:
            await trio.sleep(period)
            now = time.time_ns()
            batch = []
            for sym in self.symbols:
                px = round(max(1.0, self.prices[sym] + self.rng.gauss(0, 4.0)), 2)
                self.prices[sym] = px
                n += 1
                batch.append(Trade(sym, px, round(self.rng.expovariate(20), 5) + 0.0001,
                                   "buy" if self.rng.random() < 0.5 else "sell", str(n), now, now, "sim"))
            await hub.publish(batch)
            self.published += len(batch)

    def status(self) -> dict[str, Any]:
        return {"feed": "SyntheticFeed", "symbols": list(self.symbols), "published": self.published}


# --- engine ----------------------------------------------------------------------------


def _limits(cfg: LimitsConfig) -> Limits:
    return Limits(cfg.max_order_qty, cfg.max_position, cfg.max_orders_per_second)


def build_executor(config: Config) -> RiskExecutor:
    """The paper executor behind risk controls (the kill switch is always there)."""
    ex = config.executor
    inner = PaperExecutor(latency=ex.latency, taker_fee=ex.taker_fee, maker_fee=ex.maker_fee)
    limits = RiskLimits(
        per_slot=_limits(config.risk.slot),
        total=_limits(config.risk.global_),
        slots={i: _limits(s.risk) for i, s in enumerate(config.slots) if s.risk is not None},
    )
    return RiskExecutor(inner, limits)


@attrs.define
class Binding:
    """What a slot was built from, so ``--reload`` can build it again."""

    spec: StrategySpec
    symbols: tuple[str, ...]
    params: dict[str, Any]
    args: tuple[Any, ...] = ()


@attrs.define
class Engine:
    """A running engine: the runner, how each slot was built, and where its files live."""

    runner: Runner
    config: Config
    bindings: dict[int, Binding] = attrs.Factory(dict)
    #: The port Prometheus metrics are served on, when enabled.
    metrics_port: int | None = None

    @property
    def state_dir(self) -> Path:
        return self.config.path(self.config.state_dir)

    def build(self, binding: Binding) -> Any:
        return load_strategy(binding.spec, binding.symbols, binding.params, binding.args,
                             state_dir=self.state_dir, runner=self.runner)

    def on_control_change(self, index: int, request: dict[str, Any] | None) -> None:
        """Keep bindings in step with control-socket swaps, adds and removes."""
        if request is None:
            self.bindings.pop(index, None)
            return
        try:
            spec = parse_spec(request["path"], self.config.base_dir)
        except (FloxError, KeyError):  # pragma: no cover - the server parsed it already
            return
        symbols = tuple(str(s) for s in self.runner.slots[index].symbols)
        self.bindings[index] = Binding(spec, symbols, dict(request.get("params") or {}),
                                       tuple(request.get("args") or ()))

    async def reload(self, changed: Iterable[Path]) -> list[tuple[int, str]]:
        """Rebuild and swap every slot built from a changed file.

        A file that fails to import, compile or build is logged with its file
        and line and leaves the running strategy in place. Returns
        ``(slot, outcome)`` pairs, outcome "swapped" or the error message.
        """
        paths = {Path(p).resolve() for p in changed}
        outcomes: list[tuple[int, str]] = []
        broken: dict[Path, str] = {}
        for index, binding in sorted(self.bindings.items()):
            if binding.spec.path not in paths or not self.runner.slots[index].active:
                continue
            if binding.spec.path in broken:
                outcomes.append((index, broken[binding.spec.path]))
                continue
            try:
                strategy = self.build(binding)
            except StrategyLoadError as exc:
                msg = str(exc)
                if "building" not in msg:
                    broken[binding.spec.path] = msg
                log.error("reload of slot %d skipped, the running strategy stays: %s", index, msg)
                outcomes.append((index, msg))
                continue
            try:
                report = await self.runner.replace_strategy(index, strategy)
            except FloxError as exc:
                log.error("reload of slot %d refused, the running strategy stays: %s", index, exc)
                outcomes.append((index, str(exc)))
                continue
            log.info("reloaded slot %d from %s (%s -> %s)", index, binding.spec.path,
                     report.old_hash[:8], report.new_hash[:8])
            outcomes.append((index, "swapped"))
        return outcomes

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload on save: watch the directories of every strategy file (``--reload``)."""
        import watchfiles

        dirs = sorted({str(b.spec.path.parent) for b in self.bindings.values()})
        if not dirs:
            task_status.started()
            return
        log.info("watching %s for strategy changes", ", ".join(dirs))
        task_status.started()
        async for changes in watchfiles.awatch(*dirs, debounce=200, step=50):
            changed = [Path(p) for kind, p in changes if kind != watchfiles.Change.deleted]
            if changed:
                await self.reload(changed)


async def run_engine(
    config: Config,
    *,
    reload: bool = False,
    feed: Feed | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED,
) -> dict[str, Any]:
    """Run the configured engine until ``stop`` is set (or the task is cancelled).

    ``feed`` overrides the venue (for tests and embedding). Returns the final
    ``runner.status()`` plus a few totals for the summary.
    """
    stop = stop if stop is not None else trio.Event()
    started = trio.current_time()
    specs = []
    for i, slot in enumerate(config.slots):
        try:
            spec = parse_spec(slot.strategy, config.base_dir)
        except StrategyLoadError as exc:
            raise ConfigError(f"slots[{i}].strategy: {exc}") from None
        specs.append(Binding(spec, config.slot_symbols(slot), dict(slot.params), slot.args))
    # Build every strategy before anything starts: a broken file fails the run at once and cleanly.
    # (JavaScript scripts built here get no `runner` global; swaps through the control socket do.)
    strategies = []
    state_dir = config.path(config.state_dir)
    for i, (binding, slot) in enumerate(zip(specs, config.slots, strict=True)):
        try:
            strategies.append(load_strategy(binding.spec, binding.symbols, binding.params, binding.args,
                                            state_dir=state_dir))
        except StrategyLoadError as exc:
            raise ConfigError(f"slots[{i}].strategy = {slot.strategy!r}: {exc}") from None
    tape = str(config.path(config.tape)) if config.tape else None
    executor = build_executor(config)
    async with _feed_or(config, feed) as the_feed, open_runner(
        the_feed, executor, tape=tape, max_errors=config.max_errors, drain=False
    ) as runner:
        engine = Engine(runner, config)
        for binding, slot, strategy in zip(specs, config.slots, strategies, strict=True):
            index = runner.add_strategy(strategy, max_errors=slot.max_errors)
            engine.bindings[index] = binding
        async with trio.open_nursery() as nursery:
            sock = await nursery.start(
                lambda task_status: serve_control(
                    runner, config.path(config.run_dir), base_dir=Path.cwd(), state_dir=engine.state_dir,
                    on_change=engine.on_control_change, task_status=task_status,
                )
            )
            log.info("engine running: %d slots, control socket %s", len(config.slots), sock)
            if config.metrics_port is not None:
                engine.metrics_port = await nursery.start(serve_metrics, runner, config.metrics_port)
            if reload:
                await nursery.start(engine.watch)
            task_status.started(engine)
            await stop.wait()
            nursery.cancel_scope.cancel(reason="engine stopping")
        final = runner.status()
    final["uptime_s"] = trio.current_time() - started
    final["orders"] = [{"order_id": o.order_id, "slot": o.slot, "status": o.status}
                       for o in executor.orders()]
    return final


@asynccontextmanager
async def _feed_or(config: Config, feed: Feed | None) -> AsyncIterator[Feed]:
    if feed is not None:
        yield feed
        return
    async with open_venue_feed(config) as venue_feed:
        yield venue_feed


# --- the command -----------------------------------------------------------------------


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


async def _show_live(engine: Engine, period: float = 1.0) -> None:
    """Redraw the status tables in the terminal while the engine runs."""
    from rich.console import Group
    from rich.live import Live

    from ._control import console, render_status

    with Live(console=console(), refresh_per_second=4, transient=False) as live:
        while True:
            live.update(Group(*render_status(engine.runner.status())))
            await trio.sleep(period)


async def _run_until_signal(config: Config, reload: bool, live: bool = False) -> dict[str, Any]:
    stop = trio.Event()
    final: dict[str, Any] = {}
    # The signal receiver outlives the nursery: Ctrl-C at any moment is a clean stop.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for sig in signals:
                    log.warning("%s received: stopping", signal.Signals(sig).name)
                    stop.set()
                    return

            async def engine_task(task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
                final.update(await run_engine(config, reload=reload, stop=stop, task_status=task_status))
                nursery.cancel_scope.cancel(reason="engine stopped")

            nursery.start_soon(on_signal)
            engine = await nursery.start(engine_task)
            if live:
                nursery.start_soon(_show_live, engine)
    return final


def run_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.log_format is not None:  # the command line wins over the config file
        config = attrs.evolve(config, log=attrs.evolve(config.log, format=args.log_format))
    configure_logging(config, getattr(args, "verbose", 0))
    final = trio.run(_run_until_signal, config, bool(args.reload), bool(args.live))
    from ._control import console

    print_summary(console(), final)
    if config.tape:
        from ._tape import write_report_for

        json_path, png_path = write_report_for(config.path(config.tape), config.path(config.run_dir))
        console().print(f"report: {json_path}, {png_path}")
    return 0


def print_summary(console: Console, final: dict[str, Any]) -> None:
    from ._control import slots_table

    console.print(f"[bold]flox-trio run[/bold]: {final.get('published', 0)} events published in "
                  f"{final.get('uptime_s', math.nan):.1f} s")
    console.print(slots_table(final.get("slots", [])))
    orders = final.get("orders", [])
    by_status: dict[str, int] = {}
    for o in orders:
        by_status[o["status"]] = by_status.get(o["status"], 0) + 1
    console.print(f"orders: {len(orders)} ({', '.join(f'{k} {v}' for k, v in sorted(by_status.items())) or 'none'})")
    risk = final.get("executor", {}).get("risk")
    if risk:
        console.print(f"risk: {risk['refused']} refused" + (", halted" if risk["halted"] else ""))


def register(sub: Any) -> None:
    """Add the ``run`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("run", help="run the engine from a TOML config until Ctrl-C")
    p.add_argument("config", type=Path, help="the run configuration (see examples/)")
    p.add_argument("--reload", action="store_true", help="swap in strategy files as they are saved")
    p.add_argument("--live", action="store_true", help="show the status tables live in the terminal")
    p.add_argument("--log-format", choices=("human", "json"), default=None,
                   help="log lines for people (default) or one JSON object per line")
    p.set_defaults(func=run_command)


__all__ = ["Engine", "SyntheticFeed", "build_executor", "open_venue_feed", "register", "run_engine"]
