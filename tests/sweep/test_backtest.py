"""Offline sweeps: every grid point over every tape, each row what that variant does on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import flox_trio as flox
from flox_trio._core._events import Fill
from flox_trio._loader import load_strategy, parse_spec
from flox_trio.replay import (
    RecordedStrategy,
    ReplayPlan,
    UntrustedBundleError,
    pack_bundle,
    plan_from_tape,
    replay_tape,
)
from flox_trio.sweep import BacktestRow, StrategySource, backtest, expand, measure, sort_rows
from flox_trio.sweep._backtest import recorded_strategy

GRID = {"fast": [3, 5], "slow": [8, 13]}

STRATEGY = '''
import flox_trio as flox


class Cross(flox.Strategy):
    """Long ``qty`` while the fast moving average is above the slow one."""

    def __init__(self, symbols, fast=3, slow=8, qty=0.5):
        super().__init__(symbols, fast=fast, slow=slow, qty=qty)
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, got {fast} and {slow}")
        self.fast, self.slow, self.qty = fast, slow, qty
        self.prices = []

    def on_trade(self, ctx, trade):
        self.prices.append(trade.price)
        if len(self.prices) < self.slow or ctx.open_orders:
            return
        fast = sum(self.prices[-self.fast:]) / self.fast
        slow = sum(self.prices[-self.slow:]) / self.slow
        if fast > slow and ctx.position <= 0:
            ctx.market_buy(self.qty)
        elif fast < slow and ctx.position > 0:
            ctx.market_sell(ctx.position)
'''


async def _record(path: Path, seed: int, n: int, strategy: Any = None) -> None:
    feed = flox.feeds.ListFeed(flox.feeds.random_walk(n, seed=seed, rate=50.0), batch_size=8, pace=True)
    executor = flox.PaperExecutor(latency=0.01, taker_fee=Decimal("0.0005"))
    async with flox.open_runner(feed, executor, tape=str(path)) as runner:
        if strategy is not None:
            runner.add_strategy(strategy)


def record(path: Path, seed: int, n: int = 2000, strategy: Any = None) -> Path:
    trio.run(_record, path, seed, n, strategy, clock=trio.testing.MockClock(autojump_threshold=0))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("backtest")
    strategy = root / "cross.py"
    strategy.write_text(STRATEGY)
    tapes = [record(root / "a.tape", 1), record(root / "b.tape", 2)]
    return {"root": root, "spec": f"{strategy}:Cross", "tapes": tapes}


@pytest.fixture(scope="module")
def local_rows(world: dict[str, Any]) -> list[BacktestRow]:
    return backtest(world["tapes"], world["spec"], GRID, base_params={"qty": 0.25}, workers=1)


def alone(tape: Path, source: StrategySource, params: dict[str, Any]) -> dict[str, Any]:
    """The variant run on its own: a replay of the tape with only this strategy in slot 0."""
    recorded = plan_from_tape(tape)
    plan = ReplayPlan([(0, RecordedStrategy("python", source.source, source.spec,
                                            {"symbols": ["BTCUSDT"], **params}))],
                      [], recorded.executor, recorded.bar_intervals)
    return replay_tape(tape, plan=plan).outputs


def test_an_offline_sweep_gives_each_variant_what_it_does_on_its_own(world: dict[str, Any],
                                                                    local_rows: list[BacktestRow]) -> None:
    source = StrategySource.from_spec(world["spec"])
    variants = expand(GRID, {"qty": 0.25})
    assert len(local_rows) == 2 * 4
    assert [(r.tape, r.variant) for r in local_rows] == [(str(t), v.index) for t in world["tapes"] for v in variants]
    assert len({(r.fills, r.realized_pnl) for r in local_rows}) > 1  # the variants do differ
    for row in local_rows:
        variant = variants[row.variant]
        assert row.point == variant.point and row.params == variant.params == {"qty": 0.25, **variant.point}
        assert row.source_hash == source.source_hash and row.strategy == source.spec
        assert row.error is None and row.errors == 0
        assert row.events == 2000 and row.currency == "USDT"
        assert 0 < row.window_start_ns < row.window_end_ns
        out = alone(Path(row.tape), source, variant.params)
        (pos,) = out["positions"]
        assert row.orders == len(out["orders"]) > 0
        assert row.fills == len(out["fills"]) > 0
        assert row.realized_pnl == Decimal(pos["realized_pnl"])
        assert row.unrealized_pnl == Decimal(pos["unrealized_pnl"])
        assert row.fees == Decimal(pos["fees"]) > 0  # the tape's recorded paper fees
        assert row.position == {"BTCUSDT": Decimal(pos["qty"])}
        fills = [Fill(f["order_id"], f["symbol"], f["side"], Decimal(f["price"]), Decimal(f["qty"]),
                      Decimal(f["fee"])) for f in out["fills"]]
        qty = Decimal(pos["qty"])
        mark = (Decimal(pos["unrealized_pnl"]) + Decimal(pos["cost_basis"])) / qty if qty else None
        stats = measure(fills, {"BTCUSDT": mark})
        assert row.max_drawdown == stats.max_drawdown > 0


def test_worker_processes_give_the_rows_one_process_gives(world: dict[str, Any],
                                                          local_rows: list[BacktestRow]) -> None:
    seen: list[BacktestRow] = []
    rows = backtest(world["tapes"], world["spec"], GRID, base_params={"qty": 0.25}, workers=2,
                    progress=seen.append)
    assert rows == local_rows
    assert sorted(seen, key=lambda r: (r.tape, r.variant)) == sorted(rows, key=lambda r: (r.tape, r.variant))


def test_a_variant_that_cannot_be_built_is_a_failed_row_not_a_failed_sweep(world: dict[str, Any]) -> None:
    rows = backtest(world["tapes"][:1], world["spec"], {"fast": [3, 20], "slow": [8]}, workers=1)
    ok, bad = rows
    assert ok.error is None and ok.fills > 0
    assert bad.error is not None and "need 0 < fast < slow" in bad.error and bad.fills == 0
    assert sort_rows(rows, "max_drawdown")[-1] is bad


def test_a_bundles_recorded_python_strategy_runs_only_when_trusted(world: dict[str, Any]) -> None:
    root: Path = world["root"]
    strategy = load_strategy(parse_spec(world["spec"]), ["BTCUSDT"], {"fast": 3, "slow": 8})
    tape = record(root / "with-strategy.tape", 3, 500, strategy)
    bundle = pack_bundle(tape, root / "b.tar")
    with pytest.raises(UntrustedBundleError, match="--trust"):
        recorded_strategy(bundle)
    source, params = recorded_strategy(bundle, trust=True)
    assert params == {"fast": 3, "slow": 8, "qty": 0.5}
    (row,) = backtest([bundle], source, {"slow": [13]}, base_params=params, workers=1)
    assert row.params == {"fast": 3, "slow": 13, "qty": 0.5} and row.fills > 0 and row.tape == str(bundle)


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", "backtest", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_writes_results_and_a_heatmap(world: dict[str, Any], local_rows: list[BacktestRow],
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli(*world["tapes"], "--strategy", world["spec"], "--grid", "fast=3,5", "--grid", "slow=8,13",
               "--param", "qty=0.25", "--workers", "2", "--sort", "fills", "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sorted by fills" in done.stdout and "fast=3 slow=8" in done.stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "backtest" and doc["grid"] == GRID
    fills = [r["fills"] for r in doc["rows"]]
    assert fills == sorted(fills, reverse=True)
    by_key = {(r.tape, r.variant): r.to_json() for r in local_rows}
    for row in doc["rows"]:
        want = by_key[(row["tape"], row["variant_index"])]
        assert {k: v for k, v in row.items() if k != "elapsed_s"} == {
            k: v for k, v in want.items() if k != "elapsed_s"}
        assert row["variant"] == {k: row["params"][k] for k in GRID}
        assert {"source_hash", "window_start_ns", "window_end_ns", "realized_pnl", "unrealized_pnl", "fees",
                "max_drawdown", "position", "events", "orders"} <= set(row)
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_bad_grid_is_one_line_and_exit_2(world: dict[str, Any], tmp_path: Path) -> None:
    done = cli(world["tapes"][0], "--strategy", world["spec"], "--grid", "fast", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--grid takes key=v1,v2" in done.stderr
    missing = cli(tmp_path / "nope.tape", "--strategy", world["spec"], "--grid", "fast=3", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "nope.tape" in missing.stderr


def test_the_ray_path_gives_the_local_rows(world: dict[str, Any], local_rows: list[BacktestRow]) -> None:
    ray = pytest.importorskip("ray", reason="the Ray path needs the ray extra: pip install 'flox-trio[ray]'")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        seen: list[BacktestRow] = []
        rows = backtest(world["tapes"], world["spec"], GRID, base_params={"qty": 0.25}, ray_address="local",
                        progress=seen.append)
    finally:
        ray.shutdown()
    assert rows == local_rows
    assert len(seen) == len(rows)


def test_a_javascript_factory_gets_the_grid_by_parameter_name(world: dict[str, Any]) -> None:
    repo = Path(__file__).resolve().parents[2]
    grid = {"fast": [5, 8], "slow": [21]}
    js = backtest(world["tapes"][:1], f"{repo / 'js_strategies/ema.js'}:makeStrategy", grid,
                  base_params={"label": "x", "snapshot": "s.json", "qty": 0.25}, workers=1)
    py = backtest(world["tapes"][:1], f"{repo / 'py_strategies/ema.py'}:EmaStrategy", grid,
                  base_params={"snapshot": "s.json", "qty": 0.25}, workers=1)
    assert all(r.error is None and r.fills > 0 and r.language == "javascript" for r in js)
    # The same crossover in both languages: the same orders, fills and PnL.
    assert [(r.orders, r.fills, r.realized_pnl, r.position) for r in js] == [
        (r.orders, r.fills, r.realized_pnl, r.position) for r in py]
    with pytest.raises(flox.FloxError, match="takes no speed"):
        StrategySource.from_spec(f"{repo / 'js_strategies/ema.js'}:makeStrategy").build(
            ["BTCUSDT"], {"speed": 1}, world["root"])
