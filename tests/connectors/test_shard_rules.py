"""The rules under sharding, as properties: where symbols go, and how fast connections may open."""

from __future__ import annotations

import itertools

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from flox_trio.connectors._budget import ConnectBudget
from flox_trio.connectors._shards import ShardMap

UNIVERSE = [f"S{i:03d}USDT" for i in range(60)]


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(1, 12),
    cost=st.integers(1, 3),
    steps=st.lists(st.sets(st.sampled_from(UNIVERSE)), min_size=1, max_size=12),
)
def test_every_symbol_is_on_exactly_one_shard_within_the_cap_and_never_moves(
        cap: int, cost: int, steps: list[set[str]]) -> None:
    if cost > cap:
        cost = cap
    shards = ShardMap(cap, lambda s: cost)
    before: dict[str, int] = {}
    for desired in steps:
        known = list(shards.shards)
        opened = shards.update(frozenset(desired))
        assert shards.shards == known + opened
        where: dict[str, int] = {}
        for shard in shards.shards:
            assert shard.streams == cost * len(shard.symbols) <= cap
            for s in shard.symbols:
                assert s not in where, f"{s} on shards {where[s]} and {shard.index}"
                where[s] = shard.index
        # Exactly the desired symbols, each once.
        assert set(where) == desired
        assert all(shards.shard_of(s) is shards.shards[i] for s, i in where.items())
        # A symbol that stays desired stays where it was.
        assert all(where[s] == i for s, i in before.items() if s in where)
        # A shard opens only when no shard there was had room for what went into it.
        for shard in opened:
            assert all(old.streams + cost > cap for old in known)
            assert shard.symbols
        assert [sh.index for sh in shards.shards] == list(range(len(shards.shards)))
        before = where


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(1, 40),
    window=st.sampled_from([10.0, 60.0, 300.0]),
    arrivals=st.lists(st.floats(0.0, 900.0, allow_nan=False), min_size=1, max_size=80),
)
def test_connection_attempts_stay_within_the_budget_in_every_window(
        limit: int, window: float, arrivals: list[float]) -> None:
    budget = ConnectBudget(limit, window)
    granted: list[tuple[float, float]] = []

    async def attempt(at: float) -> None:
        await trio.sleep_until(at)
        await budget.spend()
        granted.append((at, trio.current_time()))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for at in arrivals:
                nursery.start_soon(attempt, at)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(granted) == len(arrivals) and budget.waiting == 0
    times = sorted(t for _, t in granted)
    assert all(t >= at for at, t in granted)
    for i, t in enumerate(times):
        # The venue's limit, in any window, whatever the arrivals.
        assert sum(1 for u in times[i:] if u < t + window) <= limit
    # Paced as a token bucket: k attempts after any one take at least (k - burst) spacings.
    spacing = window / limit
    for i, j in itertools.combinations(range(len(times)), 2):
        assert times[j] - times[i] >= (j - i - budget.burst) * spacing - 1e-6


async def test_a_burst_goes_at_once_then_the_rest_is_paced(autojump_clock: trio.testing.MockClock) -> None:
    budget = ConnectBudget(300, 300.0)
    assert budget.burst == 30
    t0 = trio.current_time()
    times = []
    for _ in range(35):
        await budget.spend()
        times.append(trio.current_time() - t0)
    assert times[:30] == [0.0] * 30
    assert times[30:] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert budget.used() == 35
