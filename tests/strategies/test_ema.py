from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

import flox_trio as flox

ROOT = Path(__file__).resolve().parents[2]


def load_ema() -> ModuleType:
    spec = importlib.util.spec_from_file_location("py_strategies_ema", ROOT / "py_strategies" / "ema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def wave(n: int, start: int = 0) -> list[flox.Trade]:
    return [flox.Trade("BTCUSDT", 100 + 5 * math.sin(i / 15), 1.0, "buy", str(i), 1_700_000_000_000_000_000 + i * 10**8)
            for i in range(start, start + n)]


async def test_ema_swapped_for_a_reparameterised_copy_picks_up_its_prices(tmp_path: Path, autojump_clock: Any) -> None:
    ema = load_ema()
    snap = tmp_path / "ema.json"
    old = ema.EmaStrategy(["BTCUSDT"], fast=12, slow=26, snapshot=snap)
    new = ema.EmaStrategy(["BTCUSDT"], fast=8, slow=21, snapshot=snap)
    feed = flox.feeds.ListFeed(wave(600), batch_size=50, pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.001)) as runner:
        runner.add_strategy(old)
        while old.trades_seen < 300:
            await trio.sleep(0.05)  # virtual time: the paced feed publishes 10 trades/s
        before = list(old.prices)
        report = await runner.replace_strategy(0, new)
        assert list(new.prices)[: len(before)] == before
        await runner.wait_idle()
    assert old.trades_seen + new.trades_seen == 600
    # The slot's count includes the order updates and fills the old strategy received.
    assert report.at_event >= old.trades_seen >= 300
    orders = runner.executor.orders()
    assert len(orders) >= 4  # the sine wave crosses several times
    assert {o.status for o in orders} == {"filled"}
    assert snap.exists()
