"""Deterministic replay of a tape: the recorded market data, strategies, executor stack and swaps, run again.

A replay rebuilds every strategy from the source recorded with it and the
executor stack from its recorded settings (risk limits included), feeds the
tape's market batches through a runner in lockstep, on a clock that is the
events' own time, and performs each recorded swap at the slot's recorded
market event. Two replays of one tape produce byte-identical outputs.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
import trio.testing

from .._core._clock import EventClock
from .._core._convert import converter
from .._core._events import Event
from .._core._ports import Executor
from .._core._status import ExecutorSettings, RunnerStatus
from .._errors import TapeError, flox_error_in
from .._loader import rebuild_strategy
from .._runner import open_runner
from ..execution import PaperSettings, RiskExecutor, RiskSettings, build_executor, run_outputs
from ..tape import ControlRecord, Record, SlotRecord, SwapRecord, TapeFeed, TapeReader
from ._recorded import RecordedExecutor

log = logging.getLogger("flox_trio.replay")


@attrs.frozen
class RecordedStrategy:
    """How to build one strategy again: its language, source text, spec and parameters."""

    language: str
    source: str
    spec: str
    params: dict[str, Any]

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def build(self, state_dir: Path) -> Any:
        return rebuild_strategy(self.language, self.spec, self.source, self.params, state_dir=state_dir)


@attrs.frozen
class ReplayPlan:
    """The slots to add at the start, the swaps to perform, and the executor stack, as recorded."""

    slots: list[tuple[int, RecordedStrategy]]
    #: (slot, the slot's market-event count at the swap, the new strategy)
    swaps: list[tuple[int, int, RecordedStrategy]]
    executor: ExecutorSettings
    bar_intervals: tuple[float, ...]


def executor_settings(meta: dict[str, Any], where: str) -> ExecutorSettings:
    raw = meta.get("executor")
    if raw is None:
        return PaperSettings()
    try:
        settings: ExecutorSettings = converter.structure(raw, ExecutorSettings)
    except Exception as exc:
        raise TapeError(f"{where}: the recorded executor settings are unreadable ({exc}); "
                        "the tape was written by another flox-trio") from None
    return settings


def plan_from_tape(path: str | Path) -> ReplayPlan:
    reader = TapeReader(path)
    slots: list[tuple[int, RecordedStrategy]] = []
    swaps: list[tuple[int, int, RecordedStrategy]] = []
    # One pass over the tape for both (events are skipped, not decoded).
    for rec in reader.engine_records():
        if isinstance(rec, SlotRecord):
            if rec.action != "add":
                continue
            if rec.source is None:
                raise TapeError(f"{path}: slot {rec.slot} was recorded without its strategy source; "
                                "cannot replay it")
            slots.append((rec.slot, RecordedStrategy(rec.language, rec.source, rec.spec or "", dict(rec.params))))
        elif isinstance(rec, SwapRecord):
            if rec.new_source is None:
                raise TapeError(f"{path}: the swap in slot {rec.slot} at event {rec.seq} has no recorded source")
            new_params = dict(rec.params.get("new", {}))
            swaps.append((rec.slot, rec.slot_market_event,
                          RecordedStrategy(rec.new_language, rec.new_source, rec.new_spec or "", new_params)))
    meta = reader.meta
    return ReplayPlan(slots, swaps, executor_settings(meta, str(path)),
                      tuple(meta.get("bar_intervals", (60.0,))))


#: ``reproduce``: the live executor's recorded answers, at their place (what the session did);
#: ``simulate``: the recorded executor stack rebuilt on paper (what the strategies would do now).
ReplayMode = Literal["reproduce", "simulate"]


@attrs.frozen
class ReplayResult:
    outputs: dict[str, Any]
    status: RunnerStatus
    events: int
    swaps: int
    mode: ReplayMode = "simulate"
    #: reproduce: the orders the replay's strategies made that the live session did not.
    divergences: tuple[str, ...] = ()


async def _replay(tape: Path, plan: ReplayPlan, state_dir: Path, progress: Callable[[int], None] | None,
                  mode: ReplayMode = "simulate", record: Path | None = None) -> ReplayResult:
    recorded = RecordedExecutor(tape) if mode == "reproduce" else None
    executor = recorded or build_executor(on_paper(plan.executor), ack_clock="events", history=None)
    clock = EventClock()
    # The operator's halts and resumes, done again after the market event they came after
    # (a reproduction has their effect on the tape already). The feed hands them over where
    # they were written, after the batches they count, so the tape is read once.
    controls: deque[ControlRecord] = deque()
    seen = 0

    def on_record(record: Record) -> None:
        if recorded is None and isinstance(record, ControlRecord):
            controls.append(record)

    def before_publish(batch: list[Event]) -> None:
        nonlocal seen
        clock.observe(batch)
        while controls and controls[0].at_market_event <= seen:
            apply_control(executor, controls.popleft())
        if recorded is not None:
            recorded.before_batch(len(batch))
        seen += len(batch)
        if progress is not None:
            progress(len(batch))

    feed = TapeFeed(tape, on_batch=before_publish, on_end=None if recorded is None else recorded.finish,
                    on_record=on_record)
    handles = []
    async with open_runner(feed, executor, lockstep=True, bar_intervals=plan.bar_intervals,
                           clock=clock, tape=None if record is None else str(record)) as runner:
        for expected_index, spec in plan.slots:
            index = runner.add_strategy(spec.build(state_dir))
            if index != expected_index:
                raise TapeError(f"{tape}: slots were recorded out of order (slot {expected_index} became {index})")
        for slot, at, spec in plan.swaps:
            handles.append(runner.schedule_replace(slot, spec.build(state_dir), at))
    for h in handles:
        if not h.done:
            raise TapeError(f"{tape}: a recorded swap was not reached by the replay")
        await h
    return ReplayResult(run_outputs(executor), runner.status(), feed.published, len(handles), mode,
                        tuple(recorded.divergences) if recorded is not None else ())


def on_paper(settings: ExecutorSettings) -> ExecutorSettings:
    """The stack a simulation runs: the recorded one, with a venue executor replaced by paper.

    A replay never sends an order anywhere: a session traded on Binance is
    simulated against the paper matching engine, behind the same risk limits.
    """
    if isinstance(settings, RiskSettings):
        return attrs.evolve(settings, inner=on_paper(settings.inner))
    if isinstance(settings, PaperSettings):
        return settings
    log.info("simulating on paper what %s executed live", type(settings).__name__.removesuffix("Settings"))
    return PaperSettings()


def apply_control(executor: Executor, record: ControlRecord) -> None:
    """Do again what the operator did live: halt or resume the kill switch."""
    if not isinstance(executor, RiskExecutor):
        log.warning("the tape records a %s but its executor has no kill switch; ignored", record.action)
    elif record.action == "halt":
        executor.halt(record.reason)
    elif record.action == "resume":
        executor.resume()
    else:
        log.warning("unknown control record %r on the tape; ignored", record.action)


def replay_tape(tape: str | Path, *, plan: ReplayPlan | None = None, state_dir: str | Path | None = None,
                progress: Callable[[int], None] | None = None, mode: ReplayMode = "simulate",
                record: str | Path | None = None) -> ReplayResult:
    """Replay ``tape`` on the events' own time and return its outputs.

    ``mode="reproduce"`` (``flox-trio replay``'s default) hands the strategies what the live
    executor answered, where it answered: the replay's orders and fills are
    the live session's, order for order, and an order the strategies make
    differently is a divergence (``ReplayResult.divergences``).
    ``mode="simulate"`` (the default here, and what bundles and backtests
    use) rebuilds the recorded executor stack (paper, risk
    limits) and lets it answer anew: what these strategies would have done.
    ``record``: write the replay's own tape there (its report is its own).

    The replay runs in a fresh temporary working directory (and JavaScript
    strategies get a fresh state directory), so files a strategy keeps under
    relative paths start empty every time: two replays see the same world.
    Strategies that write absolute paths make replays depend on those files.
    """
    tape = Path(tape).resolve()
    plan = plan or plan_from_tape(tape)
    own = None if record is None else Path(record).absolute()
    with tempfile.TemporaryDirectory(prefix="flox-replay-") as tmp, _rare_young_collections():
        sdir = Path(state_dir) if state_dir is not None else Path(tmp) / "js-state"
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            return trio.run(_replay, tape, plan, sdir, progress, mode, own, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseExceptionGroup as group:
            # A tape found corrupt (or altered) part-way is read in the feed's task: say it as itself.
            error = flox_error_in(group)
            if error is None:
                raise
            raise error from None
        finally:
            os.chdir(cwd)


#: The collector's first threshold while a replay runs (CPython's default is 700).
_REPLAY_GC_THRESHOLD = 50_000
# Replays running at once (in threads) share the setting: the first one in sets it, the last one out
# puts back what was there before the first.
_gc_lock = threading.Lock()
_gc_replays = 0
_gc_before: tuple[int, ...] = ()


@contextlib.contextmanager
def _rare_young_collections() -> Iterator[None]:
    """Run the cyclic garbage collector's young collections less often, for the duration of a replay.

    A replay decodes a frame's events (thousands of tracked objects) at once and
    holds them until they are dispatched. At the default threshold a young
    collection runs every 700 allocations, finds the batch alive, and promotes it,
    so the full collections that follow walk the whole heap: about a sixth of a
    counting replay's time (bench/replay.py). The events die by reference count,
    not by collection; the collector stays on for what does form cycles, and the
    old thresholds are back when the replay returns, as its working directory is.
    """
    global _gc_replays, _gc_before
    with _gc_lock:
        if not _gc_replays:
            _gc_before = gc.get_threshold()
            gc.set_threshold(max(_gc_before[0], _REPLAY_GC_THRESHOLD), *_gc_before[1:])
        _gc_replays += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_replays -= 1
            if not _gc_replays:
                gc.set_threshold(*_gc_before)
