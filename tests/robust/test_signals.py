"""Whatever a JavaScript slot is doing, `flox-trio run` answers SIGTERM and SIGINT at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Every onTrade spends milliseconds in a regular expression that backtracks; onStop runs one that would
# take minutes: the process must still stop within 2 s of the signal.
BUSY_JS = """
var calls = 0;
flox.register({ symbols: ['BTCUSDT'],
  onTrade: function (ctx, t) { calls++; /(a+)+$/.test('a'.repeat(17) + 'b'); },
  onStop: function () { /(a+)+$/.test('a'.repeat(40) + 'b'); } });
"""

CONFIG = """
symbols = ["BTCUSDT"]
run_dir = "run"
max_errors = 1000

[venue]
name = "sim"
sim_rate = 40

[[slots]]
strategy = "busy.js"
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_run_within_two_seconds_while_js_is_in_a_regex(tmp_path: Path, sig: int) -> None:
    (tmp_path / "busy.js").write_text(BUSY_JS)
    (tmp_path / "run.toml").write_text(CONFIG)
    with (tmp_path / "out.txt").open("w") as out_file, (tmp_path / "err.txt").open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "flox_trio.cli", "run", "run.toml"], cwd=tmp_path,
                                stdout=out_file, stderr=err_file, text=True)
        took = _signal_when_busy(proc, tmp_path, sig)
    stderr = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, stderr
    assert took < 2.0, f"stopped {took:.2f} s after the signal"
    assert "Traceback" not in stderr


def _signal_when_busy(proc: subprocess.Popen[str], tmp_path: Path, sig: int) -> float:
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-m", "flox_trio.cli", "status", "--run-dir", "run", "--json"],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and json.loads(out.stdout)["slots"][0]["dispatched"] > 5:
                break
            time.sleep(0.2)  # a real process on the real clock: polling is the only way to observe it
        else:
            raise AssertionError(f"the engine never got going: {(tmp_path / 'err.txt').read_text()}")
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        return time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
