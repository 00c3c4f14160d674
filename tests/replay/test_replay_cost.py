"""What a replay does to go fast, checked for what it must not change (the speed itself is bench/replay.py's).

A replay reads the tape twice (the plan, then the batches), not once per kind
of record; it runs the garbage collector's young collections rarely and puts
the thresholds back; the paper executor's copies of orders are ``Order.copy``'s.
"""

from __future__ import annotations

import gc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio._core._orders import Order
from flox_trio.execution import RiskLimits, RiskStatus, _paper
from flox_trio.replay import _replay, replay_tape
from flox_trio.tape import TapeReader

BASE_NS = 1_700_000_000_000_000_000


class Limits(flox.Strategy):
    """Rests a buy below and a sell above the market, and checks its open orders on every trade."""

    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.n = 0
        self.seen_open = 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
        self.seen_open += len(ctx.open_orders)
        if self.n % 7 == 1:
            ctx.limit_buy(trade.price - 2, 0.5)
            ctx.limit_sell(trade.price + 2, 0.25)


def _trades(n: int) -> list[flox.Trade]:
    return [flox.Trade("BTCUSDT", 100.0 + (i * 7) % 11, 0.3, "buy" if i % 3 else "sell", str(i),
                       BASE_NS + i * 10_000_000, BASE_NS + i * 10_000_000) for i in range(n)]


async def _record(tape: Path) -> None:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    executor = flox.RiskExecutor(flox.PaperExecutor(latency=0.01), RiskLimits())
    market = _trades(300)
    async with flox.open_runner(feed, executor, tape=str(tape)) as runner:
        runner.add_strategy(Limits(["BTCUSDT"]))
        for i in range(0, len(market), 4):
            if i == 200:
                runner.record_control("halt", "checking")  # on the tape only: the replay halts here
            await feed.push(market[i:i + 4])
            await runner.wait_idle()
        feed.close()


@pytest.fixture
def tape(tmp_path: Path) -> Path:
    path = tmp_path / "t.tape"
    trio.run(_record, path, clock=trio.testing.MockClock(autojump_threshold=0))
    return path


def test_a_replay_reads_the_tape_once_for_its_plan_and_once_for_its_batches(
    tape: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[bool] = []
    frames = TapeReader._frames

    def counting(self: TapeReader, *, records_only: bool = False) -> Any:
        passes.append(records_only)
        return frames(self, records_only=records_only)

    monkeypatch.setattr(TapeReader, "_frames", counting)
    result = replay_tape(tape)
    # The plan from the frames that hold records besides events (format 4 flags them), then every frame.
    assert passes == [True, False]
    # The recorded halt is done again where it was written: orders after it are refused.
    status = result.status.executor
    assert isinstance(status, RiskStatus) and status.halted and status.halt_reason == "checking"
    assert status.refused > 0 and status.inner.fills > 0


def test_a_replay_fills_resting_orders_the_same_every_time_and_gives_the_collector_back(tape: Path) -> None:
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    first = replay_tape(tape, progress=lambda n: during.append(gc.get_threshold()))
    assert gc.get_threshold() == before
    assert during and all(t[0] >= _replay._REPLAY_GC_THRESHOLD and t[1:] == before[1:] for t in during)
    assert any(f["liquidity"] == "maker" for f in first.outputs["fills"])
    assert replay_tape(tape).outputs == first.outputs


def test_the_collector_is_given_back_when_a_replay_fails(tmp_path: Path) -> None:
    before = gc.get_threshold()
    with pytest.raises(flox.TapeError):
        replay_tape(tmp_path / "no such tape")
    assert gc.get_threshold() == before


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=8)
orders = st.builds(
    Order, order_id=st.text(max_size=8), slot=st.integers(-1, 99), symbol=st.text(max_size=8),
    side=st.sampled_from(["buy", "sell"]), order_type=st.sampled_from(["market", "limit"]), qty=decimals,
    price=st.none() | decimals,
    status=st.sampled_from(["new", "accepted", "partially_filled", "filled", "canceled", "rejected"]),
    filled_qty=decimals, notional=decimals, reason=st.text(max_size=8), created_ts_ns=st.integers(0, 2**63),
    venue=st.text(max_size=8),
)


@settings(max_examples=60, deadline=None)
@given(order=orders)
def test_the_paper_executors_copy_of_an_order_is_order_copy(order: Order) -> None:
    copy = _paper._copy_order(order)
    reference = order.copy()
    assert copy is not order
    assert type(copy) is Order
    assert [getattr(copy, f) for f in Order.__slots__ if not f.startswith("__")] == [
        getattr(reference, f) for f in Order.__slots__ if not f.startswith("__")]
    copy.filled_qty += Decimal(1)
    assert order.filled_qty == reference.filled_qty


def test_replays_that_overlap_give_the_collector_back_once_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first, second = _replay._rare_young_collections(), _replay._rare_young_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the other replay (another thread's) still runs
    assert gc.get_threshold()[0] >= _replay._REPLAY_GC_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
