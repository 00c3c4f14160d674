"""Commands and scripts as users run them, as processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flox_trio.tape import TapeReader, tape_info

ROOT = Path(__file__).resolve().parents[2]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_run_ema_script_against_the_simulator(tmp_path: Path) -> None:
    out = run(tmp_path, str(ROOT / "py_strategies" / "run_ema.py"), "--seconds", "2", "--state", "st")
    assert out.returncode == 0, out.stderr
    assert "connection 1, connects 1" in out.stdout
    assert "sim BTCUSDT:" in out.stdout
    assert (tmp_path / "st" / "ema.json").exists()


def test_record_then_replay_and_inspect_from_the_command_line(tmp_path: Path) -> None:
    rec = run(tmp_path, "-m", "flox_trio.cli", "record", "--venue", "sim", "--symbols", "BTCUSDT",
              "--duration", "2", "-o", "rec.tape")
    assert rec.returncode == 0, rec.stderr
    info = tape_info(tmp_path / "rec.tape")
    assert info.event_types.get("Trade", 0) > 10
    assert info.connector_events.get("connect") == 1
    reader = TapeReader(tmp_path / "rec.tape")
    assert reader.meta["feed"] == "Binance"
    again = run(tmp_path, "-m", "flox_trio.cli", "record", "--venue", "sim", "--symbols", "BTCUSDT",
                "--duration", "1", "-o", "rec.tape")
    assert again.returncode == 2 and "already exists" in again.stderr
    shown = run(tmp_path, "-m", "flox_trio.cli", "tape", "info", "rec.tape")
    assert shown.returncode == 0 and "events: Trade" in shown.stdout
    replayed = run(tmp_path, "-m", "flox_trio.cli", "replay", "rec.tape", "--report", "out")
    assert replayed.returncode == 0, replayed.stderr
    assert "market events" in replayed.stdout
    assert (tmp_path / "out" / "report.png").exists()


@pytest.mark.parametrize("args", [["demo", "--seconds", "2"], ["demo", "--offline", "--seconds", "2"]])
def test_demo(tmp_path: Path, args: list[str]) -> None:
    out = run(tmp_path, "-m", "flox_trio.cli", *args)
    assert out.returncode == 0, out.stderr
    assert "swapped python" in out.stdout
    if "--offline" not in args:
        assert "connection across the swap: id 1 → 1, connects 1 → 1 (the same session)" in out.stdout
