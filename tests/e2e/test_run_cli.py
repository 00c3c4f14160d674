"""The whole thing as a user runs it: `flox-trio run` in one process, commands from others."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flox_trio.sim")

STRATEGY = '''
import json
import flox_trio as flox

VERSION = {version}

class Recorder(flox.Strategy):
    """Appends every trade id it saw to seen.jsonl when it stops (swap, reload or shutdown)."""

    def __init__(self, symbols, tag="a", **params):
        super().__init__(symbols, tag=tag, **params)
        self.tag = tag
        self.seen = []

    def on_trade(self, ctx, trade):
        self.seen.append(int(trade.trade_id))

    def on_stop(self):
        with open("seen.jsonl", "a") as f:
            f.write(json.dumps({{"tag": self.tag, "version": VERSION, "ids": self.seen}}) + "\\n")
'''

CONFIG = """
symbols = ["BTCUSDT"]
run_dir = "run"

[venue]
name = "sim"
sim_rate = 40

[[slots]]
strategy = "strat.py:Recorder"
params = { tag = "a" }
"""


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def status(cwd: Path) -> dict[str, Any]:
    out = cli(cwd, "status", "--run-dir", "run", "--json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def wait_for(pred: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
        except (AssertionError, json.JSONDecodeError, KeyError, IndexError):
            value = None
        if value:
            return value
        time.sleep(0.1)  # a real process on the real clock: polling is the only way to observe it
    raise AssertionError(f"timed out waiting for {what}")


def test_run_swap_reload_status_from_other_processes(tmp_path: Path) -> None:
    (tmp_path / "strat.py").write_text(STRATEGY.format(version=1))
    (tmp_path / "run.toml").write_text(CONFIG)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    engine = subprocess.Popen([sys.executable, "-m", "flox_trio.cli", "run", "run.toml", "--reload"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = wait_for(lambda: (s := status(tmp_path))["feed"].get("connection_id") and
                         s["slots"][0]["dispatched"] > 20 and s, "the engine to connect and trade")
        conn = first["feed"]["connection_id"]

        swapped = cli(tmp_path, "swap", "0", "strat.py:Recorder", "--param", "tag=b", "--run-dir", "run")
        assert swapped.returncode == 0, swapped.stdout + swapped.stderr
        wait_for(lambda: status(tmp_path)["slots"][0]["swaps"] == 1, "the swap")
        time.sleep(0.5)

        # Save a new version of the file: --reload swaps it in, keeping the slot's parameters (tag=b).
        (tmp_path / "strat.py").write_text(STRATEGY.format(version=2))
        wait_for(lambda: status(tmp_path)["slots"][0]["swaps"] == 2, "the reload swap")
        time.sleep(0.5)
        last = status(tmp_path)
        assert last["feed"]["connection_id"] == conn
        assert last["feed"]["connect_count"] == 1
        assert last["slots"][0]["errors"] == 0
    finally:
        engine.send_signal(signal.SIGINT)
        output, _ = engine.communicate(timeout=30)
    assert engine.returncode == 0, output
    runs = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert [(r["tag"], r["version"]) for r in runs] == [("a", 1), ("b", 1), ("b", 2)]
    ids = [i for r in runs for i in r["ids"]]
    # Every trade the simulator sent, each seen once, in order, across two swaps.
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert all(r["ids"] for r in runs)
