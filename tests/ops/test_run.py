"""`flox-trio run`: the engine built from a config, reload on save, the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from rich.table import Table

import flox_trio as flox
from flox_trio.app import executor_settings, open_engine, open_venue_feed
from flox_trio.cli._control import read_status, render_status
from flox_trio.config import Config, load_config, parse_config
from flox_trio.control import ControlClient
from flox_trio.execution import build_executor

from .conftest import TAGGED_SOURCE, trade

ROOT = Path(__file__).resolve().parents[2]

STRATEGY = TAGGED_SOURCE.format(name="Tagged")


def config_text(tmp_path: Path) -> str:
    (tmp_path / "strat.py").write_text(STRATEGY)
    return """
symbols = ["BTCUSDT"]
run_dir = "run"

[venue]
name = "sim"

[risk.slot]
max_order_qty = "1"

[[slots]]
strategy = "strat.py:Tagged"
params = { tag = "a" }

[[slots]]
strategy = "strat.py:Tagged"
params = { tag = "b" }
risk = { max_order_qty = "2" }
"""


def write_config(tmp_path: Path) -> Config:
    path = tmp_path / "run.toml"
    path.write_text(config_text(tmp_path))
    return load_config(path)


async def test_engine_from_config_serves_control_and_reloads_on_save(tmp_path: Path) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    with trio.fail_after(20):
        async with open_engine(write_config(tmp_path), feed=feed) as engine:
            runner = engine.runner
            assert [s.strategy.tag for s in runner.slots] == ["a", "b"]
            assert runner.executor.limits.for_slot(1).max_order_qty == 2
            await feed.push([trade("1")])
            await runner.wait_idle()

            # a save with a new version: both slots swap, each keeps its params
            (tmp_path / "strat.py").write_text(STRATEGY.replace("self.seen = []", "self.seen = ['fresh']"))
            outcomes = await engine.reload([tmp_path / "strat.py"])
            assert outcomes == [(0, "swapped"), (1, "swapped")]
            assert [s.strategy.seen for s in runner.slots] == [["fresh"], ["fresh"]]
            assert [s.strategy.tag for s in runner.slots] == ["a", "b"]

            # a broken save: logged with file and line, the running strategies stay
            (tmp_path / "strat.py").write_text(STRATEGY.replace("def on_trade(self, ctx, trade):",
                                                                "def on_trade(self, ctx, trade)"))
            running = [s.strategy for s in runner.slots]
            outcomes = await engine.reload([tmp_path / "strat.py"])
            assert [i for i, _ in outcomes] == [0, 1]
            assert all(f"strat.py:{STRATEGY.splitlines().index('    def on_trade(self, ctx, trade):') + 1}: "
                       "syntax error" in msg for _, msg in outcomes)
            assert [s.strategy for s in runner.slots] == running

            # a save that changes the symbols is refused by the runner, nothing moves
            (tmp_path / "strat.py").write_text(STRATEGY.replace("super().__init__(symbols,",
                                                                "super().__init__(['ETHUSDT'],"))
            outcomes = await engine.reload([tmp_path / "strat.py"])
            assert all("watches" in msg for _, msg in outcomes)
            assert [s.strategy for s in runner.slots] == running

            # an unrelated file: nothing happens
            assert await engine.reload([tmp_path / "other.py"]) == []

            # the control socket is up in the configured run dir, and a swap there updates the binding
            (tmp_path / "strat.py").write_text(STRATEGY)
            async with ControlClient(tmp_path / "run") as client:
                await client.call("swap", slot=1, path=f"{tmp_path / 'strat.py'}:Tagged", params={"tag": "c"})
                status = (await client.call("status"))["status"]
            assert engine.bindings[1].params == {"tag": "c"}
            assert (await engine.reload([tmp_path / "strat.py"]))[1] == (1, "swapped")
            assert runner.slots[1].strategy.tag == "c"
            tables = render_status(read_status(status))
            titled = [t for t in tables if isinstance(t, Table)]
            assert [t.title for t in titled] == ["slots", "feed", "executor"]
            assert titled[0].row_count == 2
            assert engine.control_socket == tmp_path / "run" / "control.sock"
    assert not (tmp_path / "run" / "control.sock").exists()


async def test_the_example_config_runs_on_the_simulated_market(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """examples/sim_ema.toml end to end for 60 virtual seconds: trades flow, EMAs trade within limits."""
    monkeypatch.chdir(tmp_path)  # the EMA snapshots are written relative to the shell
    config = attrs.evolve(load_config(ROOT / "examples" / "sim_ema.toml"), run_dir=str(tmp_path / "run"))
    feed = flox.feeds.ListFeed(flox.feeds.random_walk(1200, rate=20), pace=True)
    async with open_engine(config, feed=feed) as engine:
        await trio.sleep(61)
        final = engine.runner.status()
    assert feed.published == 1200  # 20 trades per virtual second
    trades_seen = [s.strategy.trades_seen for s in engine.runner.slots]
    assert trades_seen == [feed.published] * 2
    assert all(s.dispatched >= feed.published for s in final.slots)
    orders = engine.runner.executor.orders()
    assert orders, "the EMA crossovers should have traded"
    assert all(o.qty <= config.risk.slot.max_order_qty for o in orders if o.status != "rejected")


async def test_venue_construction(tmp_path: Path) -> None:
    """sim is a Binance connector on the embedded simulator; venues get their configured URLs."""
    base = 'symbols = ["BTCUSDT"]\n[venue]\nname = "{}"\nws_url = "ws://127.0.0.1:9"\n'
    async with open_venue_feed(parse_config(base.format("sim"), tmp_path / "a.toml")) as feed:
        assert isinstance(feed, flox.connectors.Binance) and feed.symbols == ("BTCUSDT",)
        assert feed.ws_url.startswith("ws://127.0.0.1:") and feed.ws_url != "ws://127.0.0.1:9"
    async with open_venue_feed(parse_config(base.format("binance"), tmp_path / "a.toml")) as feed:
        assert isinstance(feed, flox.connectors.Binance) and feed.ws_url == "ws://127.0.0.1:9"
        assert feed.rest_url == "https://api.binance.com"
    async with open_venue_feed(parse_config(base.format("bybit"), tmp_path / "a.toml")) as feed:
        assert isinstance(feed, flox.connectors.Bybit)
        assert feed.symbols == ("BTCUSDT",) and feed.ws_url == "ws://127.0.0.1:9"


def test_executor_from_config_has_risk_and_fees(tmp_path: Path) -> None:
    text = config_text(tmp_path) + '\n[executor]\nlatency = 0.1\ntaker_fee = "0.001"\n'
    ex = build_executor(executor_settings(parse_config(text, tmp_path / "x.toml")))
    assert isinstance(ex, flox.RiskExecutor) and isinstance(ex.inner, flox.PaperExecutor)
    assert ex.inner.latency == 0.1 and str(ex.inner.taker_fee) == "0.001"
    assert ex.limits.for_slot(0).max_order_qty == 1 and ex.limits.for_slot(1).max_order_qty == 2


async def test_a_config_whose_strategy_fails_to_import_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(config_text(tmp_path))
    (tmp_path / "strat.py").write_text("import flox_trio as flox\nraise ImportError('missing dep')\n")
    with pytest.raises(flox.ConfigError, match=r"slots\[0\].strategy = 'strat.py:Tagged': .*strat.py:2: "):
        async with open_engine(load_config(path), feed=flox.feeds.PushFeed(["BTCUSDT"])):
            pass
