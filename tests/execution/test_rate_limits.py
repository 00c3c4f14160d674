"""Binance rate-limit bookkeeping: the running totals are the sums of what each window holds."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from flox_trio.execution._binance import _RateLimits


@given(st.lists(st.tuples(st.integers(0, 5_000), st.sampled_from(["ORDERS", "REQUEST_WEIGHT"]),
                          st.integers(1, 20)), max_size=200))
def test_the_used_count_is_what_the_window_holds(steps: list[tuple[int, str, int]]) -> None:
    clock = [1_000_000]
    limits = _RateLimits(lambda: clock[0])
    spans = {("ORDERS", 10_000): 10_500, ("REQUEST_WEIGHT", 60_000): 60_500}
    for key in spans:
        limits._spent[key] = deque()
    for advance, kind, cost in steps:
        clock[0] += advance
        key = next(k for k in spans if k[0] == kind)
        limits._spend(key, clock[0], cost)
        for k, span in spans.items():
            want = sum(c for t, c in limits._spent[k] if t > clock[0] - span)
            assert limits._used(k, clock[0], span) == want
            assert sum(c for _, c in limits._spent[k]) == want  # what left the window is gone
