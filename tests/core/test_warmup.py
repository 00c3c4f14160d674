from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flox_trio as flox

from .conftest import Recorder, make_trades


class Eager(Recorder):
    """Buys on every trade: during warm-up those intents must go nowhere."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ids: list[str] = []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        super().on_trade(ctx, trade)
        self.ids.append(ctx.market_buy(1))


@pytest.mark.parametrize(("warmup", "expected"), [(50, 50), (0.0105, 11)])
async def test_warmup_replays_recent_events_with_intents_suppressed(
    tmp_path: Path, journal: list[Any], warmup: float, expected: int
) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    old = Recorder(["BTCUSDT"], journal, "old")
    new = Eager(["BTCUSDT"], journal, "new")
    async with flox.open_runner(feed, tape=tmp_path / "t.tape") as runner:
        runner.add_strategy(old)
        await feed.push(make_trades(100) + make_trades(5, "ETHUSDT", start=900))
        await runner.wait_idle()
        await runner.replace_strategy(0, new, warmup=warmup)
        assert new.trades == [str(i) for i in range(100 - expected, 100)]
        assert all(i.startswith("warmup-") for i in new.ids)
        assert runner.executor.orders() == []
        await feed.push(make_trades(1, start=100))
        await runner.wait_idle()
        feed.close()
    assert new.trades[-1] == "100" and new.ids[-1] == "0-1"
    assert old.trades == [str(i) for i in range(100)]
    # on_start ran before the warm-up events.
    kinds = [k for k, who, _ in journal if who == "new"]
    assert kinds[0] == "start"


async def test_warmup_needs_a_tape(journal: list[Any]) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(Recorder(["BTCUSDT"], journal, "a"))
        with pytest.raises(flox.RunnerError, match="tape"):
            runner.replace_strategy(0, Recorder(["BTCUSDT"], journal, "b"), warmup=10)
        feed.close()
