"""An A/B test on one session: two strategies side by side, the same events at the same moments.

Both slots watch the same symbols on the same feed (one connector session),
so the bus hands each batch to both; each has its own account (the executors
keep positions per slot). Their equity is sampled every ``interval`` seconds;
the comparison is A's PnL minus B's, with a bootstrap confidence interval over
the per-interval differences (how sure we are A did better than B, not luck).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs
import trio

from .._core._events import Event, Fill, OrderUpdate
from .._core._metrics import WindowStats, copy_position, measure
from .._core._runner import Runner


@attrs.frozen
class AbSide:
    name: str
    slot: int
    strategy: str
    source_hash: str
    params: dict[str, Any]
    events: int
    orders: int
    stats: WindowStats


@attrs.frozen
class AbResult:
    a: AbSide
    b: AbSide
    window_start_ns: int
    window_end_ns: int
    #: (seconds since the start, A's equity, B's equity) every interval.
    curve: tuple[tuple[float, Decimal, Decimal], ...]
    pnl_diff: Decimal
    ci_low: Decimal
    ci_high: Decimal
    confidence: float


def bootstrap_ci(increments: Sequence[Decimal], *, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[Decimal, Decimal]:
    """A percentile bootstrap interval of the sum of ``increments`` (reproducible: ``seed``)."""
    if not increments:
        return Decimal(0), Decimal(0)
    rng = random.Random(seed)
    values = [float(x) for x in increments]
    n = len(values)
    sums = sorted(sum(rng.choices(values, k=n)) for _ in range(resamples))
    lo = sums[int((1 - confidence) / 2 * (resamples - 1))]
    hi = sums[int((1 + confidence) / 2 * (resamples - 1))]
    return Decimal(repr(lo)), Decimal(repr(hi))


async def run_ab(runner: Runner, a: Any, b: Any, *, seconds: float, interval: float = 1.0,
                 confidence: float = 0.95, seed: int = 0) -> AbResult:
    """Add strategies ``a`` and ``b`` to ``runner`` in two new slots, run them ``seconds``, compare them."""
    ex = runner.executor
    slots = (runner.add_strategy(a), runner.add_strategy(b))
    symbols = [s.symbol for s in runner.slot(slots[0]).symbols]
    if sorted(symbols) != sorted(s.symbol for s in runner.slot(slots[1]).symbols):
        raise ValueError("an A/B test compares two strategies on the same symbols")
    seen: dict[int, list[Event]] = {s: [] for s in slots}

    def listen(events: list[Event]) -> None:
        for e in events:
            slot = getattr(e, "slot", None)
            if slot in seen:
                seen[slot].append(e)

    start = {s: {sym: copy_position(ex.position(s, sym)) for sym in symbols} for s in slots}
    dispatched = {s: runner.slot(s).market_dispatched for s in slots}
    unsubscribe = runner.subscribe_orders(listen)
    t0_ns, t0 = runner.clock.wall_ns(), trio.current_time()

    def equity(slot: int) -> Decimal:
        total = Decimal(0)
        for sym in symbols:
            p = ex.position(slot, sym)
            total += p.realized_pnl + p.unrealized_pnl(ex.mark_price(slot, sym))
        return total

    base = {s: equity(s) for s in slots}
    curve: list[tuple[float, Decimal, Decimal]] = [(0.0, Decimal(0), Decimal(0))]
    try:
        for n in range(1, int(seconds / interval) + 1):
            await trio.sleep_until(t0 + n * interval)
            curve.append((n * interval, equity(slots[0]) - base[slots[0]], equity(slots[1]) - base[slots[1]]))
    finally:
        unsubscribe()
    t1_ns = runner.clock.wall_ns()
    sides = []
    for name, s in zip("ab", slots, strict=True):
        info = runner.slot(s).host.info
        fills = [e for e in seen[s] if isinstance(e, Fill)]
        orders = {e.order_id for e in seen[s] if isinstance(e, OrderUpdate)}
        marks = {sym: ex.mark_price(s, sym) for sym in symbols}
        sides.append(AbSide(name, s, info.spec, info.source_hash,
                            {k: v for k, v in info.params.items() if k != "symbols"},
                            runner.slot(s).market_dispatched - dispatched[s], len(orders),
                            measure(fills, marks, start[s])))
    diffs = [(a1 - a0) - (b1 - b0) for (_, a0, b0), (_, a1, b1) in itertools.pairwise(curve)]
    low, high = bootstrap_ci(diffs, confidence=confidence, seed=seed)
    pnl_diff = sides[0].stats.pnl - sides[1].stats.pnl
    return AbResult(sides[0], sides[1], t0_ns, t1_ns, tuple(curve), pnl_diff, low, high, confidence)
