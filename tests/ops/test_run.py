"""`flox-trio run`: the engine built from a config, reload on save, the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import flox_trio as flox
from flox_trio.cli._control import render_status
from flox_trio.cli._run import Engine, SyntheticFeed, build_executor, open_venue_feed, run_engine
from flox_trio.config import load_config, parse_config
from flox_trio.control import ControlClient

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


async def start(tmp_path: Path, nursery: trio.Nursery, stop: trio.Event, feed: Any) -> Engine:
    path = tmp_path / "run.toml"
    path.write_text(config_text(tmp_path))
    config = load_config(path)
    engine: Engine = await nursery.start(lambda task_status: run_engine(
        config, feed=feed, stop=stop, task_status=task_status))
    return engine


async def test_engine_from_config_serves_control_and_reloads_on_save(tmp_path: Path) -> None:
    stop = trio.Event()
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            engine = await start(tmp_path, nursery, stop, feed)
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
            tables = render_status(status)
            assert [t.title for t in tables] == ["slots", "feed", "executor"]
            assert tables[0].row_count == 2
            stop.set()
    assert not (tmp_path / "run" / "control.sock").exists()


async def test_the_example_config_runs_on_the_simulated_market(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """examples/sim_ema.toml end to end for 60 virtual seconds: trades flow, EMAs trade within limits."""
    monkeypatch.chdir(tmp_path)  # the EMA snapshots are written relative to the shell
    config = attrs.evolve(load_config(ROOT / "examples" / "sim_ema.toml"), run_dir=str(tmp_path / "run"))
    stop = trio.Event()
    feed = SyntheticFeed(config.symbols, rate=20)
    async with trio.open_nursery() as nursery:
        engine: Engine = await nursery.start(lambda task_status: run_engine(
            config, stop=stop, feed=feed, task_status=task_status))
        # Start-up does file I/O in worker threads, during which the autojump
        # clock moves on: count from the moment the engine is running.
        at_start = feed.published
        await trio.sleep(60)
        stop.set()
    final = engine.runner.status()
    assert 1199 <= feed.published - at_start <= 1201  # 20 trades per virtual second
    trades_seen = [s.strategy.trades_seen for s in engine.runner.slots]
    assert trades_seen == [feed.published] * 2
    assert all(s["dispatched"] >= feed.published for s in final["slots"])
    orders = engine.runner.executor.orders()
    assert orders, "the EMA crossovers should have traded"
    assert all(o.qty <= config.risk.slot.max_order_qty for o in orders if o.status != "rejected")


async def test_venue_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sim without the simulator is the local random walk; venues get their configured URLs."""
    from flox_trio.cli import _run

    base = 'symbols = ["BTCUSDT"]\n[venue]\nname = "{}"\nws_url = "ws://127.0.0.1:9"\n'
    monkeypatch.setattr(_run, "_optional_module", lambda name: None)
    async with open_venue_feed(parse_config(base.format("sim"), tmp_path / "a.toml")) as feed:
        assert isinstance(feed, SyntheticFeed) and feed.symbols == ("BTCUSDT",)
    with pytest.raises(flox.ConfigError, match=r"needs flox_trio\.connectors\.Binance"):
        async with open_venue_feed(parse_config(base.format("binance"), tmp_path / "a.toml")):
            pass

    class FakeConnector(flox.feeds.PushFeed):
        def __init__(self, symbols: list[str], **urls: Any) -> None:
            super().__init__(symbols)
            self.urls = urls

    fake = type("connectors", (), {"Binance": FakeConnector, "Bybit": FakeConnector})
    monkeypatch.setattr(_run, "_optional_module", lambda name: fake if name.endswith("connectors") else None)
    async with open_venue_feed(parse_config(base.format("bybit"), tmp_path / "a.toml")) as feed:
        assert isinstance(feed, FakeConnector)
        assert feed.symbols == ("BTCUSDT",) and feed.urls == {"ws_url": "ws://127.0.0.1:9"}


def test_executor_from_config_has_risk_and_fees(tmp_path: Path) -> None:
    text = config_text(tmp_path) + '\n[executor]\nlatency = 0.1\ntaker_fee = "0.001"\n'
    ex = build_executor(parse_config(text, tmp_path / "x.toml"))
    assert ex.inner.latency == 0.1 and str(ex.inner.taker_fee) == "0.001"
    assert ex.limits.for_slot(0).max_order_qty == 1 and ex.limits.for_slot(1).max_order_qty == 2


async def test_a_config_whose_strategy_fails_to_import_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(config_text(tmp_path))
    (tmp_path / "strat.py").write_text("import flox_trio as flox\nraise ImportError('missing dep')\n")
    with pytest.raises(flox.ConfigError, match=r"slots\[0\].strategy = 'strat.py:Tagged': .*strat.py:2: "):
        await run_engine(load_config(path), feed=flox.feeds.PushFeed(["BTCUSDT"]))
