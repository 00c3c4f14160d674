"""Sub-millisecond pacing for the simulator's market clock.

Trio's timers wait in epoll, whose timeout has millisecond granularity: at
5,000 steps a second that bunches messages into bursts of five. On Linux a
periodic timerfd wakes the loop at the exact period without spinning a core
(which, on a two-core machine, would steal the CPU from the client being
measured). Elsewhere the pacer sleeps most of the way and yields in a loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import trio

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Pacer:
    """``await pacer.wait()`` returns once per ``period`` seconds with the number of periods that elapsed."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._fd = -1
        self._next = 0.0
        if sys.platform.startswith("linux"):
            self._fd = _timerfd(period)

    async def wait(self) -> int:
        if self._fd >= 0:
            while True:
                await trio.lowlevel.wait_readable(self._fd)
                try:
                    return int.from_bytes(os.read(self._fd, 8), sys.byteorder)
                except BlockingIOError:
                    continue
        now = trio.current_time()
        if not self._next:
            self._next = now
        self._next += self.period
        if self._next - now > 0.002:
            await trio.sleep_until(self._next - 0.0015)
        while trio.current_time() < self._next:
            await trio.lowlevel.checkpoint()
        return 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _timerfd(period: float) -> int:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return -1
        ns = max(1, round(period * 1e9))
        step = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
        spec = _Itimerspec(step, step)
        if libc.timerfd_settime(fd, 0, ctypes.byref(spec), None) != 0:
            os.close(fd)
            return -1
        return int(fd)
    except (OSError, AttributeError):
        return -1
