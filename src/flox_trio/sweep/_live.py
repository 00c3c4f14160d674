"""Live sweeps and A/B tests of a run config: the engine up, the variants through it, the results out.

``flox-trio sweep`` and ``flox-trio ab`` are these functions and a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._core._events import quote_currency
from .._errors import ConfigError
from .._loader import parse_spec
from ..app import Binding, open_engine
from ..config import Config
from ._ab import AbResult, run_ab
from ._grid import Order, Variant, expand, schedule
from ._plots import ab_png, sweep_png
from ._results import result_row, write_results


@attrs.frozen
class SweepRun:
    rows: list[dict[str, Any]]
    currency: str
    variants: int


async def sweep_config(config: Config, slot: int, grid: Mapping[str, Sequence[Any]], *, each: float,
                       rounds: int = 1, order: Order = "grid", seed: int | None = None,
                       flat_between: bool = False) -> SweepRun:
    """Run ``config``'s engine and cycle slot ``slot`` through every point of ``grid``, ``each`` seconds apiece.

    The variants start from the slot's configured parameters; the grid's values go on top.
    """
    async with open_engine(config) as engine:
        binding = engine.bindings.get(slot)
        if binding is None:
            raise ConfigError(f"--slot {slot}: the config has slots 0..{len(config.slots) - 1}")
        if binding.spec.language != "python":
            raise ConfigError(f"--slot {slot} runs JavaScript ({binding.spec}); a sweep varies the keyword "
                              "parameters of a Python strategy class")
        variants = expand(grid, binding.params)
        runs = schedule(variants, rounds, order, seed)

        def factory(v: Variant) -> Any:
            return lambda: engine.build(attrs.evolve(binding, params=v.params))

        results = await engine.runner.sweep(slot, [(v.label, factory(v)) for v in runs], each=each,
                                            flat_between=flat_between)
        engine.stop()
    rows = [result_row(variant=v.params, strategy=it.strategy, source_hash=it.source_hash,
                       window_start_ns=it.window_start_ns, window_end_ns=it.window_end_ns, events=it.events,
                       orders=it.orders, stats=it.stats, label=v.label, point=v.point, iteration=it.iteration,
                       round=it.iteration // len(variants), variant_index=v.index, connection_id=it.connection_id,
                       flattened={k: str(q) for k, q in it.flattened.items()})
            for v, it in zip(runs, results, strict=True)]
    return SweepRun(rows, quote_currency(binding.symbols), len(variants))


def write_sweep(run: SweepRun, out: Path) -> tuple[Path, Path]:
    json_path = write_results("sweep", run.rows, out, variants=run.variants)
    png = sweep_png(run.rows, out / "report.png", run.currency,
                    f"live sweep: {len(run.rows)} windows of {run.variants} variants")
    return json_path, png


@attrs.frozen
class AbSpec:
    """One side of an A/B test: ``path[:name]`` and its parameters (Python) or arguments (JavaScript)."""

    path: str
    params: dict[str, Any] = attrs.Factory(dict)
    args: tuple[Any, ...] = ()


async def ab_config(config: Config, a: AbSpec, b: AbSpec, *, seconds: float, interval: float = 1.0,
                    base_dir: Path | None = None) -> AbResult:
    """Run ``config``'s venue and executor with A and B side by side (its own slots left out)."""
    sides = []
    for name, side in (("a", a), ("b", b)):
        try:
            spec = parse_spec(side.path, base_dir or Path.cwd())
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"--{name} {side.path}: {exc}") from None
        sides.append(Binding(spec, config.symbols, dict(side.params), side.args))
    async with open_engine(attrs.evolve(config, slots=())) as engine:
        built = [engine.build(binding) for binding in sides]
        result = await run_ab(engine.runner, built[0], built[1], seconds=seconds, interval=interval)
        engine.stop()
    return result


def ab_rows(result: AbResult) -> list[dict[str, Any]]:
    return [result_row(variant=side.params, strategy=side.strategy, source_hash=side.source_hash,
                       window_start_ns=result.window_start_ns, window_end_ns=result.window_end_ns,
                       events=side.events, orders=side.orders, stats=side.stats, side=side.name.upper(),
                       slot=side.slot, name=_short(side.strategy))
            for side in (result.a, result.b)]


def write_ab(result: AbResult, out: Path, currency: str) -> tuple[Path, Path]:
    comparison = {"pnl_diff": str(result.pnl_diff), "ci_low": str(result.ci_low), "ci_high": str(result.ci_high),
                  "confidence": result.confidence,
                  "curve": [[t, str(x), str(y)] for t, x, y in result.curve]}
    json_path = write_results("ab", ab_rows(result), out, comparison=comparison)
    labels = (_short(result.a.strategy), _short(result.b.strategy))
    png = ab_png(result.curve, labels, result.pnl_diff, (result.ci_low, result.ci_high), result.confidence,
                 out / "report.png", currency, f"A/B on one session: {labels[0]} vs {labels[1]}")
    return json_path, png


def _short(spec: str) -> str:
    return Path(spec.split(":")[0]).name + (f":{spec.rsplit(':', 1)[1]}" if ":" in spec else "")
