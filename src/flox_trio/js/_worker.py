"""The thread a script's QuickJS context lives on.

A context must only be used from the thread that created it, and a call into
it can hold that thread for as long as the script manages to (the time limit
stops most runaways at once, but an out-of-memory error caught in a loop can
keep the allocator busy for seconds). So each script gets a thread of its
own and the Trio thread only waits for it: the engine, the other slots, the
control socket and the signal handlers go on meanwhile. A call that does not
come back within its deadline is abandoned: the script is retired and its
thread left to finish on its own (a daemon: it never holds up the process's exit).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio
from trio.testing import MockClock

from .._core._clock import real_seconds

T = TypeVar("T")

#: QuickJS recursion uses the C stack: give the thread room beyond the context's stack limit.
_THREAD_STACK = 16 * 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS: nothing to do there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()
#: Seconds between two trims of a busy script's thread (one costs well under a millisecond).
_TRIM_EVERY = 30.0


class Stuck(Exception):
    """The script's thread did not come back within the deadline."""


class JsThread:
    """One daemon thread that runs the jobs given to it, in order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[tuple[bool, Any]], None]] | None] = (
            queue.SimpleQueue())
        old = threading.stack_size()
        try:
            threading.stack_size(_THREAD_STACK)
            self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(old)

    def _serve(self) -> None:
        trimmed = real_seconds()
        while True:
            job = self._jobs.get()
            if job is None:
                # A retired context freed its heap in this thread's malloc arena; glibc keeps
                # such pages unless asked, and a session that swaps scripts all day retires
                # hundreds of them (bench/soak.py measured the growth this removes).
                if _TRIM is not None:
                    _TRIM(0)
                return
            fn, done = job
            try:
                result: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # handed to the caller, whatever it is
                result = (False, exc)
            done(result)
            if _TRIM is not None and real_seconds() - trimmed > _TRIM_EVERY:
                # QuickJS frees what a script dropped, but glibc keeps the pages in this
                # thread's arena: over hours of calls RSS crept up with nothing live in it.
                _TRIM(0)
                trimmed = real_seconds()

    def run_sync(self, fn: Callable[[], T], timeout: float) -> T:
        """Run ``fn`` on the thread and wait for it (load time, factory calls, inspection)."""
        box: list[tuple[bool, Any]] = []
        finished = threading.Event()

        def done(result: tuple[bool, Any]) -> None:
            box.append(result)
            finished.set()

        self._jobs.put((fn, done))
        if not finished.wait(timeout):
            raise Stuck(f"no answer within {timeout:g} s")
        value: T = _unbox(box[0])
        return value

    async def run(self, fn: Callable[[], T], timeout: float, *, patience: float = 0.02) -> T:
        """Run ``fn`` on the thread; the Trio thread waits for it without holding up the engine.

        Most calls take a few milliseconds: the Trio thread waits for them in
        place (``patience``), which costs one thread switch and no trip through
        the event loop. A call that takes longer is waited for asynchronously,
        so the engine, the control socket and the signal handlers go on.

        Under a virtual clock (tests, replays) the Trio thread waits for the call
        in place whatever it takes: script time is not virtual time, and an idle
        loop would let the clock jump ahead of the script.
        """
        box: list[tuple[bool, Any]] = []
        finished = threading.Event()
        woken: list[trio.Event] = []
        token = trio.lowlevel.current_trio_token()

        def done(result: tuple[bool, Any]) -> None:
            box.append(result)
            finished.set()
            if woken:  # the caller went back to the event loop: wake it there
                try:
                    token.run_sync_soon(woken[0].set)
                except trio.RunFinishedError:
                    pass  # the engine is gone; nobody waits for this any more

        self._jobs.put((fn, done))
        virtual = isinstance(trio.lowlevel.current_clock(), MockClock)
        # No checkpoint after an in-place wait: a cancellation there would lose a
        # result (order intents already given ids) that the script has produced.
        if not finished.wait(timeout if virtual else patience):
            if virtual:
                raise Stuck(f"no answer within {timeout:g} s")
            event = trio.Event()
            woken.append(event)
            if not finished.is_set():  # done() may have run before `woken` was filled
                with trio.move_on_after(timeout - patience):
                    await event.wait()
            if not box:
                raise Stuck(f"no answer within {timeout:g} s")
        value: T = _unbox(box[0])
        return value

    def close(self) -> None:
        self._jobs.put(None)


def _unbox(result: tuple[bool, Any]) -> Any:
    ok, value = result
    if ok:
        return value
    raise value
