"""What the benches share: the simulator in its own process, a hub that counts, the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from flox_trio._core._clock import TrioClock


@contextmanager
def simulator(*args: str, pin: bool = True) -> Iterator[dict[str, Any]]:
    """``python -m flox_trio.sim --port 0 --json ARGS``; yields the URLs it prints when ready.

    With ``pin`` (and two CPUs or more) the simulator gets a CPU of its own and
    this process the others, for as long as the simulator runs. Unpinned, the
    kernel wakes the receiver of a loopback frame on the sender's CPU (sync
    wake-ups are "affine"), so each process waits out the other's work after
    every frame: on this 2-core machine a send to the simulator returned after
    ~1 ms, the time the simulator took to answer it, against 27 µs pinned.
    A venue is another machine; pinning is the closest a benchmark gets here.
    """
    cmd = [sys.executable, "-m", "flox_trio.sim", "--port", "0", "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    own = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = pin and len(own) >= 2
    try:
        if pinned:
            os.sched_setaffinity(proc.pid, {own[-1]})
            os.sched_setaffinity(0, set(own[:-1]))
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator did not start: {proc.communicate(timeout=5)[1]}")
        yield {**json.loads(line), "pinned": pinned, "pid": proc.pid}
    finally:
        if pinned:
            os.sched_setaffinity(0, set(own))
        proc.terminate()
        proc.communicate(timeout=10)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process so far (Linux's /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def placement(urls: dict[str, Any]) -> str:
    """How the simulator and this process share the machine, for a table's title."""
    return "simulator on a CPU of its own" if urls.get("pinned") else "simulator unpinned"


class CountingHub:
    """A FeedHub that only counts what a feed publishes: the feed's own speed, no engine."""

    def __init__(self) -> None:
        self.n = 0
        self.clock = TrioClock()

    async def publish(self, events: Any) -> None:
        self.n += len(events)

    @property
    def watched_symbols(self) -> frozenset[str]:
        return frozenset()

    async def wait_watch_changed(self) -> None:
        await trio.sleep_forever()

    def connector_event(self, kind: str, **info: Any) -> None:
        pass


def report(table: Table, results: Any, path: str) -> None:
    """Print the table and write the results as JSON (bench/results/ by default)."""
    Console().print(table)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
