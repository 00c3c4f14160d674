"""A/B on one session: the same events for both sides, separate accounts, an honest comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
import trio.testing

import flox_trio as flox
from flox_trio.connectors import Binance
from flox_trio.sim import open_simulator
from flox_trio.sweep import bootstrap_ci, run_ab

ROOT = Path(__file__).resolve().parents[2]


class Seer(flox.Strategy):
    """Buys ``qty`` every ``every`` trades and sells it all every ``every * 3``; keeps every trade id it saw."""

    def __init__(self, symbols: Any, every: int = 7, qty: float = 0.01) -> None:
        super().__init__(symbols, every=every, qty=qty)
        self.every, self.qty, self.n, self.ids = every, qty, 0, []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.ids.append(trade.trade_id)
        self.n += 1
        if self.n % (self.every * 3) == 0 and ctx.position > 0:
            ctx.market_sell(ctx.position)
        elif self.n % self.every == 0:
            ctx.market_buy(self.qty)


async def test_both_sides_see_the_same_events_and_the_difference_is_their_pnls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = Seer(["BTCUSDT"], every=5), Seer(["BTCUSDT"], every=9)
    async with open_simulator(seed=11, start_ms=1_700_000_000_000, rate=25, symbols=["BTCUSDT"]) as sim:
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("trade",))
        async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01, taker_fee="0.001")) as runner:
            result = await run_ab(runner, a, b, seconds=30.0)
    assert a.ids == b.ids and len(a.ids) > 500  # the identical sequence, in order
    assert result.a.events == result.b.events == len(a.ids)
    assert result.a.stats.fills > result.b.stats.fills > 0  # separate accounts: each its own orders
    assert result.pnl_diff == result.a.stats.pnl - result.b.stats.pnl
    final_t, eq_a, eq_b = result.curve[-1]
    assert final_t == 30.0 and abs((eq_a - eq_b) - result.pnl_diff) < Decimal("0.01")
    assert result.ci_low <= result.pnl_diff <= result.ci_high or result.ci_low == result.ci_high


def test_the_bootstrap_interval_covers_a_clear_edge_and_not_noise() -> None:
    edge = [Decimal("1")] * 50 + [Decimal("-0.5")] * 10
    low, high = bootstrap_ci(edge)
    assert 0 < low < Decimal(45) < high
    noise = [Decimal("1"), Decimal("-1")] * 30
    low, high = bootstrap_ci(noise)
    assert low < 0 < high
    assert bootstrap_ci(noise, seed=3) == bootstrap_ci(noise, seed=3)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env=env)


CONFIG = """
symbols = ["BTCUSDT"]
[venue]
name = "sim"
sim_rate = 40
[executor]
latency = 0.005
taker_fee = "0.0004"
[[slots]]
strategy = "{ema}:EmaStrategy"
params = {{ qty = 0.01, cooldown = 0.5, snapshot = "ema.json" }}
"""


def test_sweep_and_ab_from_the_command_line_write_their_results(tmp_path: Path) -> None:
    ema = ROOT / "py_strategies" / "ema.py"
    (tmp_path / "c.toml").write_text(CONFIG.format(ema=ema))
    sweep = _cli(tmp_path, "sweep", "c.toml", "--slot", "0", "--grid", "fast=5,8", "--grid", "slow=21",
                 "--each", "1.5", "--rounds", "2", "--out", "sw")
    assert sweep.returncode == 0, sweep.stderr
    assert "connection id throughout: " in sweep.stdout and "connection ids" not in sweep.stdout
    data = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert data["kind"] == "sweep" and len(data["rows"]) == 4
    keys = {"variant", "strategy", "source_hash", "window_start_ns", "window_end_ns", "events", "orders", "fills",
            "realized_pnl", "unrealized_pnl", "fees", "max_drawdown", "position"}
    for row in data["rows"]:
        assert keys <= set(row)
        assert row["variant"]["qty"] == 0.01 and row["variant"]["snapshot"] == "ema.json"  # the slot's params
        assert Decimal(row["realized_pnl"]).is_finite() and Decimal(row["max_drawdown"]) >= 0
    assert [r["variant"]["fast"] for r in data["rows"]] == [5, 8, 5, 8]
    assert (tmp_path / "sw" / "report.png").stat().st_size > 10_000

    ab = _cli(tmp_path, "ab", "c.toml", "--a", str(ema) + ":EmaStrategy", "--a-param", "fast=5", "--a-param",
              "slow=12", "--b", str(ROOT / "js_strategies" / "ema.js"), "--seconds", "4", "--out", "ab")
    assert ab.returncode == 0, ab.stderr
    data = json.loads((tmp_path / "ab" / "results.json").read_text())
    assert data["kind"] == "ab" and [r["side"] for r in data["rows"]] == ["A", "B"]
    assert data["rows"][0]["events"] == data["rows"][1]["events"] > 0
    cmp = data["comparison"]
    assert Decimal(cmp["pnl_diff"]) == Decimal(data["rows"][0]["pnl"]) - Decimal(data["rows"][1]["pnl"])
    assert Decimal(cmp["ci_low"]) <= Decimal(cmp["ci_high"])
    assert (tmp_path / "ab" / "report.png").stat().st_size > 10_000

    bad = _cli(tmp_path, "sweep", "c.toml", "--grid", "fast", "--each", "1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--grid" in bad.stderr
