"""Offline sweeps: every variant of a grid, over every tape, in "what would it have done" mode.

A backtest job is one variant on one tape: the tape's market events, batch by
recorded batch, through the new strategy alone, in one slot on the tape's
symbols (or the ones asked for), on a paper executor whose fills are
simulated. What the tape recorded the session's own strategies doing (their
orders, fills, swaps, the operator's halts) is not replayed. The run is a
replay's: lockstep dispatch, the clock the events' own time, a ``MockClock``
under Trio, in a fresh temporary working directory; so a job gives the same
row in this process, in a worker process or on a Ray worker.

Jobs run in this process (``workers=1``), in local worker processes (one per
core by default, started by ``forkserver`` or ``spawn``: Trio is never forked
mid-run) or on a Ray cluster (``ray_address``, see ``_ray``). Rows come back in
job order (tape by tape, variant by variant) whatever order they finish in.

    rows = flox.sweep.backtest(["runs/mon.tape"], "py_strategies/ema.py:EmaStrategy",
                               {"fast": [5, 8], "slow": [21, 26]}, base_params={"snapshot": "s.json"})
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from .._core._clock import EventClock
from .._core._events import Event, event_time_ns, parse_symbols, quote_currency
from .._errors import ConfigError, StrategyLoadError, TapeError, describe_exception
from .._loader import parse_spec, rebuild_strategy, split_spec, strategy_class
from .._runner import open_runner
from ..execution import PaperSettings, RiskSettings, build_executor
from ..replay import is_bundle, plan_from_tape, tape_of
from ..tape import TapeFeed, TapeReader, tape_info
from ._grid import Variant, expand
from ._metrics import measure

#: Metrics a backtest's rows sort by; ``True``: the larger the better (sorted descending).
SORT_KEYS: dict[str, bool] = {"pnl": True, "realized_pnl": True, "unrealized_pnl": True, "fills": True,
                              "orders": True, "events": True, "fees": False, "max_drawdown": False}


@attrs.frozen
class StrategySource:
    """The strategy a backtest runs, as text: every worker builds it from this, never from the file.

    ``spec`` is ``path:Class`` (Python) or ``path[:factory]`` (JavaScript);
    ``source`` the file's text when the backtest started, so every row ran the
    same code and ``source_hash`` names it.
    """

    language: str
    spec: str
    source: str

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    @classmethod
    def from_spec(cls, spec: str, base_dir: Path | None = None) -> StrategySource:
        """Read ``PATH[:NAME]``'s file. Raises ``StrategyLoadError`` (no file, no class, syntax error)."""
        parsed = parse_spec(spec, base_dir)
        try:
            text = parsed.path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise StrategyLoadError(f"cannot read strategy file {parsed.path}: {describe_exception(exc)}") from None
        if parsed.language == "python":
            assert parsed.name is not None
            strategy_class(parsed.path, parsed.name, text)  # fails here, once, rather than in every job
        return cls(parsed.language, str(parsed), text)

    def build(self, symbols: Sequence[str], params: Mapping[str, Any], state_dir: Path) -> Any:
        """The strategy for ``symbols`` with ``params``.

        Python: ``Class(symbols, **params)``. JavaScript: the script's
        registered strategy when there are no parameters, else
        ``factory(...)`` with the parameters matched by name to the
        factory's declared ones (``function makeStrategy(label, fast, slow)``:
        ``fast=8`` is its second argument; ones not given are ``null``).
        """
        if self.language == "python":
            recorded: dict[str, Any] = {"symbols": list(symbols), **params}
        else:
            factory = split_spec(self.spec)[1]
            args: list[Any] = []
            if params:
                if not factory:
                    raise StrategyLoadError(f"{self.spec}: a JavaScript strategy takes parameters through a "
                                            "factory; name it (file.js:makeStrategy)")
                args = js_arguments(self.source, factory, params, self.spec)
            recorded = {"symbols": list(symbols), "factory": factory, "args": args}
        return rebuild_strategy(self.language, self.spec, self.source, recorded, state_dir=state_dir)


def js_parameters(source: str, factory: str) -> list[str] | None:
    """The declared parameter names of ``function factory(a, b = 1, ...)`` in ``source``, if declared so."""
    m = re.search(rf"function\s+{re.escape(factory)}\s*\(([^)]*)\)", source)
    if m is None:
        return None
    return [p.strip().split("=")[0].strip().lstrip(".") for p in m.group(1).split(",") if p.strip()]


def js_arguments(source: str, factory: str, params: Mapping[str, Any], spec: str) -> list[Any]:
    """``params`` as the positional arguments of ``function factory(a, b, ...)`` in ``source``."""
    names = js_parameters(source, factory)
    if names is None:
        raise StrategyLoadError(f"{spec}: no 'function {factory}(...)' declaration to match the parameters "
                                f"{', '.join(params)} to")
    unknown = [k for k in params if k not in names]
    if unknown:
        raise StrategyLoadError(f"{spec}: {factory}({', '.join(names)}) takes no {', '.join(unknown)}")
    last = max(names.index(k) for k in params)
    return [params.get(n) for n in names[:last + 1]]


@attrs.frozen
class BacktestJob:
    """One variant on one tape: what a worker process or a Ray task gets."""

    #: The tape as the user named it (a tape directory or a bundle): the row's ``tape``.
    tape: str
    #: The tape directory to read (a bundle's, extracted; on Ray, the worker's own copy).
    tape_path: str
    variant: Variant
    strategy: StrategySource
    symbols: tuple[str, ...]
    executor: PaperSettings = attrs.field(factory=PaperSettings)
    bar_intervals: tuple[float, ...] = (60.0,)


@attrs.frozen
class BacktestRow:
    """What one variant did on one tape. Money is in ``currency`` (the symbols' quote)."""

    tape: str
    variant: int
    #: What the grid set (the label's parameters).
    point: dict[str, Any]
    #: Everything the strategy was built with: the base parameters with the point on top.
    params: dict[str, Any]
    strategy: str
    language: str
    source_hash: str
    symbols: tuple[str, ...]
    currency: str
    window_start_ns: int
    window_end_ns: int
    #: Market events of the slot's symbols the tape fed it (its own order events not counted).
    events: int
    orders: int
    fills: int
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    max_drawdown: Decimal
    position: dict[str, Decimal]
    #: Exceptions the strategy raised in callbacks (the runner counts them; enough quarantine it).
    errors: int = 0
    #: The job failed as a whole (the strategy could not be built with these parameters).
    error: str | None = None
    #: Wall seconds the job took (not compared: two runs of one job differ only here).
    elapsed_s: float = attrs.field(default=0.0, eq=False)

    @property
    def pnl(self) -> Decimal:
        return self.realized_pnl + self.unrealized_pnl

    @property
    def label(self) -> str:
        return Variant(self.variant, self.point, self.params).label

    def metric(self, name: str) -> Decimal:
        if name not in SORT_KEYS:
            raise ConfigError(f"cannot sort by {name!r}: choose one of {', '.join(SORT_KEYS)}")
        return Decimal(getattr(self, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "tape": self.tape, "variant": self.point, "variant_index": self.variant, "params": self.params,
            "label": self.label,
            "strategy": self.strategy, "language": self.language, "source_hash": self.source_hash,
            "symbols": list(self.symbols), "currency": self.currency,
            "window_start_ns": self.window_start_ns, "window_end_ns": self.window_end_ns,
            "events": self.events, "orders": self.orders, "fills": self.fills,
            "realized_pnl": str(self.realized_pnl), "unrealized_pnl": str(self.unrealized_pnl),
            "pnl": str(self.pnl), "fees": str(self.fees), "max_drawdown": str(self.max_drawdown),
            "position": {k: str(v) for k, v in self.position.items()},
            "errors": self.errors, "error": self.error, "elapsed_s": round(self.elapsed_s, 6),
        }


def sort_rows(rows: Sequence[BacktestRow], metric: str = "pnl") -> list[BacktestRow]:
    """Best first by ``metric`` (PnL and fills descending, fees and drawdown ascending); failed jobs last."""
    best_high = SORT_KEYS.get(metric)
    if best_high is None:
        raise ConfigError(f"cannot sort by {metric!r}: choose one of {', '.join(SORT_KEYS)}")
    ok = sorted((r for r in rows if r.error is None), key=lambda r: (r.metric(metric), -r.variant),
                reverse=best_high)
    return ok + [r for r in rows if r.error is not None]


# --- one job ------------------------------------------------------------------------------

def run_one(job: BacktestJob) -> BacktestRow:
    """Run one job here, now: what a worker process or a Ray task calls. Deterministic.

    Runs in a fresh temporary working directory (a strategy's relative files
    start empty in every job); a strategy that cannot be built with the
    variant's parameters gives a row with ``error`` set, not an exception.
    """
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flox-backtest-") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            row = trio.run(_run, job, Path(tmp) / "js-state", clock=trio.testing.MockClock(autojump_threshold=0))
        finally:
            os.chdir(cwd)
    return attrs.evolve(row, elapsed_s=time.perf_counter() - t0)


async def _run(job: BacktestJob, state_dir: Path) -> BacktestRow:
    currency = quote_currency(job.symbols)
    try:
        strategy = job.strategy.build(job.symbols, job.variant.params, state_dir)
    except StrategyLoadError as exc:
        return _failed(job, currency, " ".join(str(exc).split()))
    executor = build_executor(job.executor, ack_clock="events", history=None)
    clock = EventClock()
    window = [0, 0]
    watched = {ref.symbol for ref in parse_symbols(list(job.symbols))}
    seen = [0]

    def before_publish(batch: list[Event]) -> None:
        clock.observe(batch)
        seen[0] += sum(getattr(ev, "symbol", None) in watched for ev in batch)
        for ev in batch:
            if (ts := event_time_ns(ev)):
                window[0] = window[0] or ts
                break
        for ev in reversed(batch):
            if (ts := event_time_ns(ev)):
                window[1] = max(window[1], ts)
                break

    feed = TapeFeed(job.tape_path, on_batch=before_publish)
    async with open_runner(feed, executor, lockstep=True, bar_intervals=job.bar_intervals,
                           clock=clock) as runner:
        slot = runner.add_strategy(strategy)
    status = next(s for s in runner.status().slots if s.index == slot)
    fills = [f for f in executor.fill_history() if f.slot == slot]
    marks = {sym: executor.mark_price(slot, sym) for sym in {*job.symbols, *(f.symbol for f in fills)}}
    stats = measure(fills, marks)
    orders = sum(o.slot == slot for o in executor.orders())
    return BacktestRow(
        job.tape, job.variant.index, job.variant.point, job.variant.params, job.strategy.spec,
        job.strategy.language, job.strategy.source_hash, job.symbols, currency, window[0], window[1],
        seen[0], orders, stats.fills, stats.realized_pnl, stats.unrealized_pnl, stats.fees,
        stats.max_drawdown, {k: v for k, v in sorted(stats.position.items())}, status.errors)


def _failed(job: BacktestJob, currency: str, error: str) -> BacktestRow:
    zero = Decimal(0)
    return BacktestRow(job.tape, job.variant.index, job.variant.point, job.variant.params, job.strategy.spec,
                       job.strategy.language, job.strategy.source_hash, job.symbols, currency, 0, 0, 0, 0, 0,
                       zero, zero, zero, zero, {}, 0, error)


# --- the sweep ----------------------------------------------------------------------------

@attrs.frozen
class TapeSource:
    """A tape the backtest reads: the name the user gave, its directory, its symbols, its bar intervals."""

    name: str
    path: Path
    symbols: tuple[str, ...]
    events: int
    executor: PaperSettings
    bar_intervals: tuple[float, ...]


def paper_settings(meta: Mapping[str, Any]) -> PaperSettings:
    """The paper executor a backtest of a tape fills on: the recorded paper settings (fees, latency), if any.

    A risk layer the session ran with is left out (its limits were the
    session's); a tape recorded on a venue executor backtests on default paper.
    """
    from ..replay._replay import executor_settings

    try:
        settings = executor_settings(dict(meta), "tape")
    except TapeError:
        return PaperSettings()
    while isinstance(settings, RiskSettings):
        settings = settings.inner
    return settings if isinstance(settings, PaperSettings) else PaperSettings()


@contextmanager
def open_tapes(paths: Sequence[str | Path], symbols: Sequence[str] | None = None) -> Iterator[list[TapeSource]]:
    """The tapes of ``paths`` (tape directories, or bundles extracted for the duration). No strategy runs.

    Raises:
        TapeError: a path is not a readable tape or bundle, or it has no market events.
    """
    if not paths:
        raise ConfigError("backtest needs at least one TAPE or BUNDLE")
    with ExitStack() as stack:
        out = []
        for p in paths:
            path = Path(p)
            if not path.exists():
                raise TapeError(f"{path}: no such tape or bundle")
            tape = stack.enter_context(tape_of(path)).resolve()
            info = tape_info(tape)
            if not info.events:
                raise TapeError(f"{path}: the tape has no market events to backtest on")
            syms = tuple(symbols) if symbols else tuple(sorted(info.symbols))
            meta = TapeReader(tape).meta
            out.append(TapeSource(str(p), tape, syms, info.events, paper_settings(meta),
                                  tuple(meta.get("bar_intervals", (60.0,)))))
        yield out


def recorded_strategy(path: str | Path, slot: int = 0, *, trust: bool = False) -> tuple[StrategySource, dict[str, Any]]:
    """The strategy a tape or bundle recorded in ``slot`` (as first added), and its recorded parameters.

    Raises:
        UntrustedBundleError: ``path`` is a bundle, the strategy is Python (it
            would run unsandboxed) and ``trust`` is false.
    """
    from ..replay import UntrustedBundleError

    with tape_of(path) as tape:
        plan = plan_from_tape(tape)
    found = [s for i, s in plan.slots if i == slot]
    if not found:
        raise TapeError(f"{path}: no strategy was recorded in slot {slot} "
                        f"(slots: {', '.join(str(i) for i, _ in plan.slots) or 'none'})")
    rec = found[0]
    if rec.language == "python" and is_bundle(Path(path)) and not trust:
        raise UntrustedBundleError(
            f"bundle {path}: slot {slot}'s strategy is Python code from whoever made the bundle and would run "
            "unsandboxed with your permissions; read it, then pass --trust (trust=True), or give --strategy")
    params = {k: v for k, v in rec.params.items() if k != "symbols"}
    source = StrategySource(rec.language, rec.spec, rec.source)
    if rec.language == "javascript":
        args, factory = params.get("args") or [], params.get("factory")
        names = js_parameters(rec.source, factory) if isinstance(factory, str) else None
        if isinstance(factory, str) and factory != split_spec(rec.spec)[1]:
            source = StrategySource(rec.language, f"{split_spec(rec.spec)[0]}:{factory}", rec.source)
        params = {n: a for n, a in zip(names or [], args, strict=False) if a is not None}
    return source, params


def make_jobs(tapes: Sequence[TapeSource], strategy: StrategySource, variants: Sequence[Variant],
              executor: PaperSettings | None = None) -> list[BacktestJob]:
    """Every variant on every tape, tape by tape."""
    return [BacktestJob(t.name, str(t.path), v, strategy, t.symbols, executor or t.executor, t.bar_intervals)
            for t in tapes for v in variants]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def backtest(
    tapes: Sequence[str | Path],
    spec: str | StrategySource,
    grid: Mapping[str, Sequence[Any]],
    *,
    base_params: Mapping[str, Any] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: Callable[[BacktestRow], None] | None = None,
    symbols: Sequence[str] | None = None,
    executor: PaperSettings | None = None,
) -> list[BacktestRow]:
    """Run every variant of ``grid`` (over ``base_params``) on every tape; the rows in job order.

    ``workers``: 1 runs the jobs in this process; more (default: one per
    core) in that many local worker processes; with ``ray_address``
    (``"auto"``, ``"local"``, ``"ray://host:port"``) on a Ray cluster
    (``workers`` then caps a local instance's CPUs). ``progress`` is called
    with each row as it finishes. ``executor``: the paper settings to fill on
    (default: each tape's recorded paper settings, else the defaults).

    Call it from synchronous code: a job runs its own ``trio.run``.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    strategy = spec if isinstance(spec, StrategySource) else StrategySource.from_spec(spec)
    variants = expand(grid, base_params)
    with open_tapes(tapes, symbols) as sources:
        jobs = make_jobs(sources, strategy, variants, executor)
        if ray_address is not None:
            from ._ray import run_on_ray

            return run_on_ray(run_one, jobs, sources, ray_address, workers=workers or default_workers(),
                              on_row=progress)
        return run_local(jobs, workers=workers, on_row=progress)


def run_local(jobs: Sequence[BacktestJob], *, workers: int | None = None,
              on_row: Callable[[BacktestRow], None] | None = None) -> list[BacktestRow]:
    """Run ``jobs`` here (``workers=1``) or on local worker processes; the rows in job order."""
    n = min(workers or default_workers(), max(1, len(jobs)))
    rows: list[BacktestRow | None] = [None] * len(jobs)
    if n == 1:
        for i, job in enumerate(jobs):
            rows[i] = row = run_one(job)
            if on_row is not None:
                on_row(row)
        return [r for r in rows if r is not None]
    with ProcessPoolExecutor(max_workers=n, mp_context=_context()) as pool:
        pending: dict[Future[BacktestRow], int] = {pool.submit(run_one, job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    rows[pending.pop(fut)] = row = fut.result()
                    if on_row is not None:
                        on_row(row)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return [r for r in rows if r is not None]


def _context() -> multiprocessing.context.BaseContext:
    """Worker processes start clean: ``forkserver`` (its server forked before any Trio run) or ``spawn``."""
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")
