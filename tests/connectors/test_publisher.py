"""The publisher merges what waits into one batch: whole frames, in order, bounded, nothing lost or repeated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.connectors import _publisher
from flox_trio.connectors._publisher import Publisher
from flox_trio.connectors._report import Reporter


def _trade(i: int) -> flox.Trade:
    return flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), i, i, "binance")


class _Gate:
    """A hub's publish that takes batches only when let through, as a blocked slot does."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.open = trio.Event()

    async def publish(self, events: Sequence[Any]) -> None:
        await self.open.wait()
        self.batches.append(list(events))


async def _run(frames: list[int], limit: int) -> tuple[list[list[Any]], Publisher]:
    """Publish the first frame, hold the publish while the others are queued, then let all through."""
    gate = _Gate()
    pub = Publisher("binance", limit, Reporter("Binance", "binance"))
    pub.attach(gate.publish, lambda: 0)
    seq = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        for n in frames:
            pub.queue([_trade(i) for i in range(seq, seq + n)], 0)
            seq += n
            await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return gate.batches, pub


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.integers(1, 90), min_size=1, max_size=40))
def test_waiting_frames_are_merged_whole_in_order_and_bounded(frames: list[int]) -> None:
    batches, pub = trio.run(_run, frames, 100_000)
    ids = [int(e.trade_id) for b in batches for e in b]
    assert ids == list(range(sum(frames)))  # every event once, in order
    assert pub.published == sum(frames) and pub.pending == 0
    # The first frame went out alone; the ones that waited meanwhile were merged greedily, whole
    # frames up to the bound (a frame larger than the bound alone).
    expected = [frames[0]]
    merged: list[int] = []
    for n in frames[1:]:
        if merged and sum(merged) + n > _publisher._MERGE_MAX:
            expected.append(sum(merged))
            merged = []
        merged.append(n)
    if merged:
        expected.append(sum(merged))
    assert [len(b) for b in batches] == expected


def test_a_backlog_over_its_limit_drops_the_oldest_and_the_merged_batch_says_so() -> None:
    batches, pub = trio.run(_run, [1] + [10] * 30, 100)
    events = [e for b in batches for e in b]
    gaps = [e for e in events if type(e) is flox.Gap]
    trades = [e for e in events if type(e) is flox.Trade]
    assert gaps and gaps[0].reason == "dropped"
    assert pub.dropped["BTCUSDT"] == sum(g.missing for g in gaps)
    assert len(trades) + pub.dropped["BTCUSDT"] == 301
    # The gap comes before what follows the drop, which is the newest, in order.
    first_gap = events.index(gaps[0])
    after = [int(e.trade_id) for e in events[first_gap + 1:] if type(e) is flox.Trade]
    assert after == sorted(after) and after[-1] == 300
