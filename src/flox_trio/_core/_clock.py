"""The engine's one clock.

Scheduling (timers, timeouts, rate windows, pacing) uses the Trio clock, so a
``MockClock`` drives everything in tests and replays. Timestamps (an event's
receive time, an order update's time) come from one wall-clock source:
Unix time taken once when the clock starts, advanced by the Trio clock. It
is virtual under a ``MockClock``, never jumps with NTP, and two stamps from
it can always be subtracted. No other module reads the machine's clocks:
what is not an engine time (a tape's creation date, an I/O throttle) comes
from ``unix_time_ns`` and ``real_seconds`` here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import trio

from ._events import event_time_ns


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


class EventClock:
    """A replay's clock: time is the time of the newest event published, whenever the replay runs.

    The replay's feed calls ``observe`` with each batch before publishing it,
    so rate windows, order timestamps and everything else a replay computes
    from the clock are what the recorded events say, and two replays agree.
    """

    __slots__ = ("_ns",)

    def __init__(self) -> None:
        self._ns = 0

    def observe(self, batch: Sequence[object]) -> None:
        for ev in reversed(batch):
            ts = event_time_ns(ev)
            if ts:
                if ts > self._ns:
                    self._ns = ts
                return

    def now(self) -> float:
        return self._ns / 1e9

    def wall_ns(self) -> int:
        return self._ns


def unix_time_ns() -> int:
    """Wall-clock time outside any engine (tape headers, bundle manifests); not an event timestamp."""
    return time.time_ns()


def real_seconds() -> float:
    """Real elapsed time for I/O throttles (tape flushes, state-directory syncs) that must follow the
    machine's time even when the engine runs on a ``MockClock``."""
    return time.monotonic()


def real_ns() -> int:
    """Real elapsed nanoseconds, to measure what a piece of code costs (a strategy's
    dispatch) whatever clock the engine runs on; not a timestamp."""
    return time.perf_counter_ns()
