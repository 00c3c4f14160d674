"""A REST request-weight budget: what a venue lets one IP spend a minute, spent with room to spare."""

from __future__ import annotations

import math
from collections import deque

import trio


class WeightBudget:
    """Request weight spent in any ``window`` seconds stays within ``per_window``.

    The window slides, so every fixed minute the venue counts in (Binance
    resets its counter each minute) sees at most ``per_window`` as well.
    Requests wait their turn first come, first served, and a rate-limit
    answer (``pause``) holds every one of them until its Retry-After.
    """

    __slots__ = ("_lock", "_paused_until", "_spent", "_total", "per_window", "waiting", "window")

    def __init__(self, per_window: int, window: float = 60.0) -> None:
        self.per_window = per_window
        self.window = window
        # (Trio time, weight) of every request within the window, oldest first.
        self._spent: deque[tuple[float, int]] = deque()
        self._total = 0
        self._paused_until = -math.inf
        self._lock = trio.Lock()
        #: Requests waiting for budget (or for a pause to end) right now.
        self.waiting = 0

    def used(self) -> int:
        """Weight spent within the last window."""
        try:
            self._expire(trio.current_time())
        except RuntimeError:  # asked from outside Trio: the last count will do
            pass
        return self._total

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the venue said so with Retry-After)."""
        self._paused_until = max(self._paused_until, trio.current_time() + seconds)

    async def spend(self, weight: int) -> None:
        """Wait until ``weight`` fits in the window, then count it as spent."""
        # A request heavier than the whole budget still goes, alone in its window.
        weight = min(weight, self.per_window)
        self.waiting += 1
        try:
            async with self._lock:
                while True:
                    now = trio.current_time()
                    if now < self._paused_until:
                        await trio.sleep_until(self._paused_until)
                        continue
                    self._expire(now)
                    if self._total + weight <= self.per_window:
                        break
                    await trio.sleep_until(self._spent[0][0] + self.window)
                self._spent.append((trio.current_time(), weight))
                self._total += weight
        finally:
            self.waiting -= 1

    def _expire(self, now: float) -> None:
        spent = self._spent
        while spent and spent[0][0] + self.window <= now:
            self._total -= spent.popleft()[1]
