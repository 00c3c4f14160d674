"""The seed page's Python example, as written there (with ``import flox_trio as flox_py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

import flox_trio as flox_py

sym = "BTCUSDT"

# ---- the seed's code, unchanged -------------------------------------------------------
SNAPSHOT = Path("/tmp/strategy_state.json")


class EmaStrategy(flox_py.Strategy):
    def on_stop(self):  # type: ignore[no-untyped-def]
        SNAPSHOT.write_text(json.dumps({"prices": list(self.prices)}))

    def on_start(self):  # type: ignore[no-untyped-def]
        if SNAPSHOT.exists():
            self.prices = list(json.loads(SNAPSHOT.read_text())["prices"])
# ----------------------------------------------------------------------------------------


class Collecting(EmaStrategy):
    def on_trade(self, ctx: Any, t: Any) -> None:
        self.prices.append(t.price)


async def test_seed_python_example_runs_unchanged() -> None:
    SNAPSHOT.unlink(missing_ok=True)
    feed = flox_py.feeds.PushFeed([sym])
    try:
        async with flox_py.open_runner(feed) as runner:
            old = Collecting([sym])
            old.prices = []
            runner.add_strategy(old)
            await feed.push([flox_py.Trade(sym, p, 1.0, "buy") for p in (1.0, 2.0, 3.0)])
            await runner.wait_idle()
            # ---- the seed's swap line, unchanged (not even awaited) ----
            runner.replace_strategy(0, EmaStrategy([sym], fast=12, slow=26))
            await runner.wait_idle()
            new = runner.slots[0].strategy
            assert isinstance(new, EmaStrategy) and new is not old
            assert new.prices == [1.0, 2.0, 3.0]
            assert new.params == {"fast": 12, "slow": 26}
            feed.close()
        await trio.lowlevel.checkpoint()
    finally:
        SNAPSHOT.unlink(missing_ok=True)
