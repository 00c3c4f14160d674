"""An engine built from a run config: the feed, the executor stack, the slots, the tape, control, metrics, reload.

    async with flox.app.open_engine(flox.config.load_config("examples/sim_ema.toml")) as engine:
        ...                      # engine.runner, engine.control_socket, engine.metrics_port
        await engine.stopped()   # until engine.stop() (a signal, a test)

This is what ``flox-trio run`` does; the command line only parses arguments
and prints.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from .._core._clock import unix_time_ns
from .._core._ports import Executor, Feed
from .._core._runner import Runner
from .._core._status import RunnerStatus
from .._errors import (
    ConfigError,
    FloxError,
    StrategyBuildError,
    StrategyLoadError,
    describe_exception,
)
from .._loader import StrategySpec, load_strategy, parse_spec
from .._runner import open_runner
from ..config import Config, LimitsConfig, where
from ..connectors import Binance, Bybit
from ..control import announce_engine, named_run_dir, prepare_run_dir, serve_control, serve_metrics
from ..execution import (
    BinanceExecutor,
    BybitExecutor,
    Limits,
    PaperSettings,
    RiskExecutor,
    RiskLimits,
    RiskSettings,
    build_executor,
)
from ..execution._binance import TESTNET_REST_URL as BINANCE_TESTNET_REST_URL
from ..execution._binance import TESTNET_WS_API_URL as BINANCE_TESTNET_WS_API_URL
from ..execution._bybit import TESTNET_PRIVATE_URL as BYBIT_TESTNET_PRIVATE_URL
from ..execution._bybit import TESTNET_REST_URL as BYBIT_TESTNET_REST_URL
from ..execution._bybit import TESTNET_TRADE_URL as BYBIT_TESTNET_TRADE_URL
from ..sim import Simulator, open_simulator
from ..tape._format import list_segments

log = logging.getLogger("flox_trio.app")


# --- venues and executors --------------------------------------------------------------


@asynccontextmanager
async def open_venue_feed(config: Config) -> AsyncIterator[Feed]:
    """The market-data feed for ``config.venue`` (see ``open_venue``)."""
    async with open_venue(config) as (feed, _):
        yield feed


@asynccontextmanager
async def open_venue(config: Config) -> AsyncIterator[tuple[Feed, Simulator | None]]:
    """The market-data feed for ``config.venue``, and the simulator behind it if any: where venues are built.

    ``sim``: the embedded simulator on loopback, reached through a Binance
    connector; ``binance`` / ``bybit``: the connectors with the configured URLs.
    """
    venue = config.venue
    symbols = list(config.symbols)
    options: dict[str, Any] = {} if venue.channels is None else {"channels": venue.channels}
    if venue.max_streams_per_connection is not None:
        options["max_streams_per_connection"] = venue.max_streams_per_connection
    if venue.name == "sim":
        async with open_simulator(symbols=symbols, rate=venue.sim_rate) as simulator:
            yield (Binance(symbols, ws_url=simulator.binance_ws_url, rest_url=simulator.binance_rest_url, **options),
                   simulator)
        return
    if venue.ws_url is not None:
        options["ws_url"] = venue.ws_url
    if venue.name == "binance":
        if venue.rest_url is not None:
            options["rest_url"] = venue.rest_url
        yield Binance(symbols, **options), None
    else:
        yield Bybit(symbols, **options), None


#: What a run's simulator account starts with when a venue executor trades on it.
SIM_BALANCES = {"USDT": "100000", "BTC": "0", "ETH": "0"}


def build_engine_executor(config: Config, simulator: Simulator | None) -> Executor:
    """The executor stack ``config`` describes: paper or a venue's, always behind the risk layer."""
    settings = executor_settings(config)
    ex = config.executor
    if ex.kind == "paper":
        return build_executor(settings)
    if ex.kind == "bybit":
        return RiskExecutor(_bybit_executor(config, simulator), settings.limits)
    venue: Executor
    options: dict[str, Any] = {"symbols": tuple(config.symbols)}
    if simulator is not None:
        api_key, secret, named = _sim_account(config)
        simulator.binance_private.add_account(api_key, secret=secret, balances=SIM_BALANCES)
        venue = BinanceExecutor(api_key=api_key, secret=secret, ws_api_url=simulator.binance_ws_api_url,
                                rest_url=simulator.binance_rest_url, api_key_from=named[0], secret_from=named[1],
                                **options)
    else:
        if ex.ws_api_url is not None:
            options["ws_api_url"] = ex.ws_api_url
        elif ex.testnet:
            options["ws_api_url"] = BINANCE_TESTNET_WS_API_URL
        if ex.rest_url is not None:
            options["rest_url"] = ex.rest_url
        elif ex.testnet:
            options["rest_url"] = BINANCE_TESTNET_REST_URL
        assert ex.api_key_env is not None  # checked with the config
        venue = BinanceExecutor.from_env(api_key_env=ex.api_key_env, secret_env=ex.secret_env,
                                         private_key=None if ex.key_file is None else config.path(ex.key_file),
                                         **options)
    return RiskExecutor(venue, settings.limits)


def _sim_account(config: Config) -> tuple[str, str, tuple[str, str]]:
    """The key a venue executor uses on the simulator: the one the environment names, or one made for the run."""
    ex = config.executor
    if ex.api_key_env is not None and ex.secret_env is not None:
        api_key, secret = os.environ.get(ex.api_key_env), os.environ.get(ex.secret_env)
        if not api_key or not secret:
            raise ConfigError(f"{where(config, 'executor')}: the environment variables {ex.api_key_env} and "
                              f"{ex.secret_env} must hold the API key and its secret")
        return api_key, secret, (f"env:{ex.api_key_env}", f"env:{ex.secret_env}")
    # Known to this process and the simulator only.
    return secrets.token_hex(32), secrets.token_hex(32), ("simulator account", "simulator account")


def _bybit_executor(config: Config, simulator: Simulator | None) -> BybitExecutor:
    ex = config.executor
    options: dict[str, Any] = {"symbols": tuple(config.symbols), "category": ex.category}
    if simulator is not None:
        api_key, secret, named = _sim_account(config)
        simulator.bybit_private.add_account(api_key, secret=secret, balances=SIM_BALANCES)
        return BybitExecutor(api_key=api_key, secret=secret, trade_url=simulator.bybit_trade_url,
                             private_url=simulator.bybit_private_url, rest_url=simulator.bybit_rest_url,
                             api_key_from=named[0], secret_from=named[1], **options)
    for key, testnet in (("trade_url", BYBIT_TESTNET_TRADE_URL), ("private_url", BYBIT_TESTNET_PRIVATE_URL),
                         ("rest_url", BYBIT_TESTNET_REST_URL)):
        value = getattr(ex, key)
        if value is not None or ex.testnet:
            options[key] = value or testnet
    assert ex.api_key_env is not None and ex.secret_env is not None  # checked with the config
    return BybitExecutor.from_env(api_key_env=ex.api_key_env, secret_env=ex.secret_env, **options)


def _limits(cfg: LimitsConfig) -> Limits:
    return Limits(cfg.max_order_qty, cfg.max_position, cfg.max_orders_per_second)


def executor_settings(config: Config) -> RiskSettings:
    """The paper executor behind risk controls (the kill switch is always there), as the config says."""
    ex = config.executor
    limits = RiskLimits(
        per_slot=_limits(config.risk.slot),
        total=_limits(config.risk.global_),
        slots={i: _limits(s.risk) for i, s in enumerate(config.slots) if s.risk is not None},
    )
    return RiskSettings(limits, PaperSettings(ex.latency, ex.taker_fee, ex.maker_fee))


# --- the engine ----------------------------------------------------------------------------


@attrs.define
class Binding:
    """What a slot was built from, so ``--reload`` can build it again."""

    spec: StrategySpec
    symbols: tuple[str, ...]
    params: dict[str, Any]
    args: tuple[Any, ...] = ()


@attrs.define(eq=False)
class Engine:
    """A running engine: the runner, how each slot was built, and where its files live."""

    runner: Runner
    config: Config
    bindings: dict[int, Binding] = attrs.Factory(dict)
    #: The control socket the engine serves.
    control_socket: Path | None = None
    #: The port Prometheus metrics are served on, when enabled.
    metrics_port: int | None = None
    started_at: float = 0.0
    #: The tape this run records to (``tape`` in the config, its template filled in).
    tape: Path | None = None
    _stop: trio.Event = attrs.Factory(trio.Event)

    @property
    def state_dir(self) -> Path:
        return self.config.path(self.config.state_dir)

    def stop(self) -> None:
        """Ask the engine to stop: ``open_engine``'s body returns from ``stopped()``."""
        self._stop.set()

    async def stopped(self) -> None:
        await self._stop.wait()

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
                if not isinstance(exc, StrategyBuildError):  # the file itself is broken, for every slot
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

    def is_strategy_file(self, path: str | Path) -> bool:
        """Whether ``--reload`` reacts to a change of ``path``: only the slots' strategy files do.

        A tape, a snapshot or a state file written next to a strategy must not
        wake the watcher (nor make it log "changes detected" twice a second).
        """
        return Path(path).resolve() in {b.spec.path for b in self.bindings.values()}

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload on save: watch the directories of every strategy file (``--reload``)."""
        import watchfiles

        dirs = sorted({str(b.spec.path.parent) for b in self.bindings.values()})
        if not dirs:
            task_status.started()
            return
        log.info("watching %s for strategy changes", ", ".join(dirs))
        task_status.started()

        async for changes in watchfiles.awatch(*dirs, debounce=200, step=50,
                                               watch_filter=lambda _, path: self.is_strategy_file(path)):
            changed = [Path(p) for kind, p in changes if kind != watchfiles.Change.deleted]
            if changed:
                await self.reload(changed)

    def summary(self) -> EngineSummary:
        """The engine's status now, with its uptime and every order's fate (what ``run`` prints at the end)."""
        orders = tuple((o.order_id, o.slot, o.status) for o in self.runner.executor.orders())
        return EngineSummary(self.runner.status(), trio.current_time() - self.started_at, orders, self.tape)


@attrs.frozen
class EngineSummary:
    status: RunnerStatus
    uptime_s: float
    #: (order id, slot, status) of every order the executor still knows.
    orders: tuple[tuple[str, int, str], ...]
    #: The tape the run recorded, if any.
    tape: Path | None = None


def new_tape_path(config: Config, now_ns: int | None = None) -> Path | None:
    """Where this run records: ``tape`` with ``{name}``, ``{date}``, ``{time}`` filled in, made unused.

    A tape directory is written once, so a path that already holds a tape gets
    the first free suffix (``tapes/sim-ema-2``) instead of failing the run.
    """
    if not config.tape:
        return None
    now = time.gmtime((unix_time_ns() if now_ns is None else now_ns) // 1_000_000_000)
    try:
        text = config.tape.format(name=config.run_name, date=time.strftime("%Y%m%d", now),
                                  time=time.strftime("%Y%m%d-%H%M%S", now))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"tape = {config.tape!r}: a template may use {{name}}, {{date}} and {{time}} "
                          f"({describe_exception(exc)})") from None
    base = config.path(text)
    path, n = base, 1
    while _holds_tape(path):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _holds_tape(path: Path) -> bool:
    try:
        return path.exists() and (not path.is_dir() or bool(list_segments(path)))
    except OSError:
        return True


def run_dir_of(config: Config) -> Path:
    """The configured run directory, or the per-user one of the run's name."""
    return config.path(config.run_dir) if config.run_dir else named_run_dir(config.run_name)


def _bindings(config: Config) -> list[Binding]:
    out = []
    for i, slot in enumerate(config.slots):
        try:
            spec = parse_spec(slot.strategy, config.base_dir)
        except StrategyLoadError as exc:
            raise ConfigError(f"{where(config, 'slots', i, 'strategy')}: {exc}") from None
        out.append(Binding(spec, config.slot_symbols(slot), dict(slot.params), slot.args))
    return out


@asynccontextmanager
async def open_engine(config: Config, *, reload: bool = False, feed: Feed | None = None) -> AsyncIterator[Engine]:
    """Run the engine ``config`` describes for the duration of the ``async with`` body.

    ``feed`` overrides the configured venue (tests, embedding). Every strategy
    is built before anything starts, so a broken file fails the start at
    once and cleanly (``ConfigError`` naming the slot). The run directory
    is checked (created 0700 if missing) before anything starts: one that
    another user could write to is refused with ``RunDirError``.
    """
    run_dir = prepare_run_dir(run_dir_of(config))
    bindings = _bindings(config)
    state_dir = config.path(config.state_dir)
    strategies = []
    for i, (binding, slot) in enumerate(zip(bindings, config.slots, strict=True)):
        try:
            strategies.append(load_strategy(binding.spec, binding.symbols, binding.params, binding.args,
                                            state_dir=state_dir))
        except StrategyLoadError as exc:
            raise ConfigError(f"{where(config, 'slots', i, 'strategy')} = {slot.strategy!r}: {exc}") from None
    tape_path = new_tape_path(config)
    tape = str(tape_path) if tape_path else None
    if tape_path is not None:
        log.info("recording to tape %s", tape_path)
    with announce_engine(run_dir, name=config.run_name, config=str(config.file or config.base_dir),
                         started=unix_time_ns() / 1e9, tape=tape):
        async with _feed_or(config, feed) as (the_feed, simulator), open_runner(
            the_feed, build_engine_executor(config, simulator), tape=tape, max_errors=config.max_errors, drain=False
        ) as runner:
            engine = Engine(runner, config, started_at=trio.current_time(), tape=tape_path)
            for binding, slot, strategy in zip(bindings, config.slots, strategies, strict=True):
                index = runner.add_strategy(strategy, max_errors=slot.max_errors)
                engine.bindings[index] = binding
            async with trio.open_nursery() as nursery:
                engine.control_socket = await nursery.start(
                    lambda task_status: serve_control(
                        runner, run_dir, base_dir=Path.cwd(), state_dir=engine.state_dir,
                        on_change=engine.on_control_change, task_status=task_status,
                    )
                )
                log.info("engine running: %d slots, control socket %s", len(config.slots), engine.control_socket)
                if config.metrics_port is not None:
                    engine.metrics_port = await nursery.start(serve_metrics, runner, config.metrics_port)
                if reload:
                    await nursery.start(engine.watch)
                yield engine
                nursery.cancel_scope.cancel(reason="engine stopping")


async def record(config: Config, out: Path, duration: float) -> RunnerStatus:
    """Record ``config``'s venue (its symbols, no strategies) to the tape ``out`` for ``duration`` seconds."""
    executor = build_executor(executor_settings(config))
    async with open_venue_feed(config) as feed, open_runner(feed, executor, tape=str(out), drain=False) as runner:
        await trio.sleep(duration)
        return runner.status()


@asynccontextmanager
async def _feed_or(config: Config, feed: Feed | None) -> AsyncIterator[tuple[Feed, Simulator | None]]:
    if feed is not None:
        yield feed, None
        return
    async with open_venue(config) as venue:
        yield venue
