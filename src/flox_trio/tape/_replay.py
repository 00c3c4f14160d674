"""Deterministic replay of a tape: the recorded market data, strategies and swaps, run again.

A replay rebuilds every strategy from the source recorded with it, feeds the
tape's market batches through a runner in lockstep with a paper executor on
the events' own clock, and performs each recorded swap at the market event
it was recorded at. Two replays of one tape produce byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import types
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from .._errors import StrategyLoadError, TapeError
from .._runner import open_runner
from ..execution import PaperExecutor, run_outputs
from ..feeds import Feed, FeedHub
from ._feed import TapeFeed
from ._reader import TapeReader

log = logging.getLogger("flox_trio.tape")


@attrs.frozen
class StrategySpec:
    """How to build one strategy: its language, source text, spec and parameters."""

    language: str
    source: str
    spec: str
    params: dict[str, Any]

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


@attrs.frozen
class ReplayPlan:
    """The slots to add at the start and the swaps to perform, as recorded."""

    slots: list[tuple[int, StrategySpec]]
    swaps: list[tuple[int, int, StrategySpec]]  # (slot, at_market_event, new strategy)
    executor: dict[str, Any]
    bar_intervals: tuple[float, ...]


def plan_from_tape(path: str | Path) -> ReplayPlan:
    reader = TapeReader(path)
    slots: list[tuple[int, StrategySpec]] = []
    swaps: list[tuple[int, int, StrategySpec]] = []
    for rec in reader.slot_records():
        if rec.action != "add":
            continue
        if rec.source is None:
            raise TapeError(f"{path}: slot {rec.slot} was recorded without its strategy source; cannot replay it")
        slots.append((rec.slot, StrategySpec(rec.language, rec.source, rec.spec or "", dict(rec.params))))
    for sw in reader.swaps():
        if sw.new_source is None:
            raise TapeError(f"{path}: the swap in slot {sw.slot} at event {sw.seq} has no recorded source")
        new_params = dict(sw.params.get("new", {}))
        swaps.append((sw.slot, sw.seq, StrategySpec(sw.new_language, sw.new_source, sw.new_spec or "", new_params)))
    meta = reader.meta
    return ReplayPlan(slots, swaps, dict(meta.get("executor", {})),
                      tuple(meta.get("bar_intervals", (60.0,))))


def build_strategy(spec: StrategySpec, *, state_dir: str | Path = "state") -> Any:
    """Build a strategy object from recorded source (Python class or JavaScript factory)."""
    params = dict(spec.params)
    symbols = params.pop("symbols", None)
    if symbols is None:
        raise StrategyLoadError(f"{spec.spec}: the recorded parameters lack the strategy's symbols")
    if spec.language == "python":
        file, _, name = spec.spec.rpartition(":")
        module = types.ModuleType(f"flox_replay_{spec.source_hash[:16]}")
        module.__file__ = file or "<replay>"
        module.__dict__["__flox_source__"] = spec.source
        sys.modules[module.__name__] = module
        try:
            exec(compile(spec.source, file or "<replay>", "exec"), module.__dict__)  # the recorded strategy itself
        except Exception as exc:
            raise StrategyLoadError(f"{spec.spec}: the recorded source does not run: {exc!r}") from exc
        cls = getattr(module, name, None)
        if cls is None:
            raise StrategyLoadError(f"{spec.spec}: the recorded source has no class {name!r}")
        return cls(symbols, **params)
    if spec.language == "javascript":
        from .. import js

        rebuild: Callable[..., Any] = js.strategy_from_source  # type: ignore[attr-defined,unused-ignore]
        return rebuild(spec.source, spec.spec, symbols=symbols, params=params, state_dir=state_dir)
    raise StrategyLoadError(f"{spec.spec}: unknown strategy language {spec.language!r}")


class _Reporting(Feed):
    """A TapeFeed that reports how many events it published after every batch."""

    finite = True

    def __init__(self, inner: TapeFeed, progress: Callable[[int], None]) -> None:
        self.inner = inner
        self.progress = progress

    async def run(self, hub: FeedHub) -> None:
        outer = self

        class _Hub:
            def __getattr__(self, name: str) -> Any:
                return getattr(hub, name)

            async def publish(self, events: Any) -> None:
                await hub.publish(events)
                outer.progress(len(events))

        await self.inner.run(_Hub())

    def status(self) -> dict[str, Any]:
        return self.inner.status()


@attrs.frozen
class ReplayResult:
    outputs: dict[str, Any]
    status: dict[str, Any]
    events: int
    swaps: int


async def _replay(tape: Path, plan: ReplayPlan, state_dir: Path,
                  progress: Callable[[int], None] | None) -> ReplayResult:
    ex = plan.executor
    executor = PaperExecutor(latency=float(ex.get("latency_s", 0.005)),
                             taker_fee=Decimal(str(ex.get("taker_fee", "0"))),
                             maker_fee=Decimal(str(ex.get("maker_fee", "0"))), clock="events",
                             history=None)
    tape_feed = TapeFeed(tape)
    feed: Feed = tape_feed if progress is None else _Reporting(tape_feed, progress)
    handles = []
    async with open_runner(feed, executor, lockstep=True, bar_intervals=plan.bar_intervals) as runner:
        for expected_index, spec in plan.slots:
            index = runner.add_strategy(build_strategy(spec, state_dir=state_dir))
            if index != expected_index:
                raise TapeError(f"{tape}: slots were recorded out of order (slot {expected_index} became {index})")
        for slot, at, spec in plan.swaps:
            handles.append(runner.schedule_replace(slot, build_strategy(spec, state_dir=state_dir), at))
    for h in handles:
        if not h.done:
            raise TapeError(f"{tape}: a recorded swap was not reached by the replay")
        await h
    return ReplayResult(run_outputs(executor), runner.status(), tape_feed.published, len(handles))


def replay_tape(tape: str | Path, *, plan: ReplayPlan | None = None, state_dir: str | Path | None = None,
                progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Replay ``tape`` on virtual time (a MockClock) and return its outputs.

    The replay runs in a fresh temporary working directory (and JavaScript
    strategies get a fresh state directory), so files a strategy keeps under
    relative paths start empty every time: two replays see the same world.
    Strategies that write absolute paths make replays depend on those files.
    """
    tape = Path(tape).resolve()
    plan = plan or plan_from_tape(tape)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="flox-replay-") as tmp:
        sdir = Path(state_dir) if state_dir is not None else Path(tmp) / "js-state"
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            return trio.run(_replay, tape, plan, sdir, progress, clock=trio.testing.MockClock(autojump_threshold=0))
        finally:
            os.chdir(cwd)
