"""The engine's one clock.

Scheduling (timers, timeouts, rate windows, pacing) uses the Trio clock, so a
``MockClock`` drives everything in tests and replays. Timestamps (an event's
receive time, an order update's time) come from one wall-clock source:
Unix time taken once when the clock starts, advanced by the Trio clock. It
is virtual under a ``MockClock``, never jumps with NTP, and two stamps from
it can always be subtracted. No other module reads ``time.time_ns()``.
"""

from __future__ import annotations

import time

import trio


class TrioClock:
    """``now()``: Trio seconds; ``wall_ns()``: the wall-clock nanoseconds derived from them.

    ``epoch_ns`` pins the wall time of Trio time 0 (a replay passes the tape's
    first event time, so its timestamps do not depend on when it runs);
    otherwise the offset is measured the first time the clock is read inside
    ``trio.run``.
    """

    __slots__ = ("_offset_ns",)

    def __init__(self, epoch_ns: int | None = None) -> None:
        self._offset_ns = epoch_ns

    def now(self) -> float:
        return trio.current_time()

    def wall_ns(self) -> int:
        t = trio.current_time()
        offset = self._offset_ns
        if offset is None:
            offset = self._offset_ns = time.time_ns() - int(t * 1e9)
        return offset + int(t * 1e9)


def unix_time_ns() -> int:
    """Wall-clock time outside any engine (file names, bundle manifests); not an event timestamp."""
    return time.time_ns()
