"""The simulator in its own process, for benches that measure the engine alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def simulator(*args: str) -> Iterator[dict[str, Any]]:
    """``python -m flox_trio.sim --port 0 --json ARGS``; yields the URLs it prints when ready."""
    cmd = [sys.executable, "-m", "flox_trio.sim", "--port", "0", "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator did not start: {proc.communicate(timeout=5)[1]}")
        yield json.loads(line)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
