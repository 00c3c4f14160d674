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


#: The window venues count connection attempts in: Binance "300 connections per attempt every 5
#: minutes per IP", Bybit "Do not build over 500 connections in 5 minutes" per domain.
CONNECT_WINDOW = 300.0


class ConnectBudget:
    """Connection attempts paced within a venue's budget: at most ``limit`` in any ``window`` seconds.

    A burst of ``limit // 10`` (at least one) attempts goes at once, so a few
    shards open (or reopen after a blip) together; past it attempts are spaced
    ``window / limit`` apart, so a storm of reconnects spreads evenly over the
    window instead of spending it in the first seconds and then waiting out
    the rest of it. Every attempt is also counted over a sliding window, which
    makes the venue's limit a hard bound whatever the pacing does.
    """

    __slots__ = ("_attempts", "_lock", "_tokens", "_updated", "burst", "limit", "waiting", "window")

    def __init__(self, limit: int, window: float = CONNECT_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.burst = max(1, limit // 10)
        self._tokens = float(self.burst)
        self._updated = -math.inf
        # Trio times of the attempts within the last window, oldest first.
        self._attempts: deque[float] = deque()
        self._lock = trio.Lock()
        #: Attempts waiting for the budget right now.
        self.waiting = 0

    def used(self) -> int:
        """Attempts within the last window."""
        try:
            now = trio.current_time()
        except RuntimeError:  # asked from outside Trio: the last count will do
            return len(self._attempts)
        attempts = self._attempts
        while attempts and attempts[0] + self.window <= now:
            attempts.popleft()
        return len(attempts)

    async def spend(self) -> None:
        """Wait until one more attempt fits, then count it."""
        self.waiting += 1
        try:
            async with self._lock:
                rate = self.limit / self.window
                attempts = self._attempts
                while True:
                    now = trio.current_time()
                    if self._updated == -math.inf:
                        self._updated = now
                    self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * rate)
                    self._updated = now
                    while attempts and attempts[0] + self.window <= now:
                        attempts.popleft()
                    if len(attempts) >= self.limit:
                        await trio.sleep_until(attempts[0] + self.window)
                        continue
                    # (A hair under one is one: the refill's rounding must not make this spin.)
                    if self._tokens < 1.0 - 1e-9:
                        await trio.sleep_until(now + (1.0 - self._tokens) / rate)
                        continue
                    break
                self._tokens = max(0.0, self._tokens - 1.0)
                attempts.append(now)
        finally:
            self.waiting -= 1
