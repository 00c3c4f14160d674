"""Every bench script runs, small, and writes its JSON: a measurement that rots is found here, not in a note.

These are not timings (a bench measures on a quiet machine, never in a test);
they check that each script still runs end to end on today's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SMALL = {
    "dispatch.py": ["--events", "20000", "--repeat", "1", "--swap-seconds", "0.5"],
    "live.py": ["--seconds", "0.5", "--repeat", "1", "--latency-seconds", "1", "--rate", "500", "--wide-rate", "2000",
                "--frames", "2000"],
    "tape.py": ["--events", "20000", "--single", "2000", "--repeat", "1"],
    "soak.py": ["--seconds", "12", "--rate", "50"],
    "execution.py": ["--orders", "5", "--burst", "5", "--rate", "20"],
    "sweep.py": ["--events", "3000", "--variants", "2", "--no-ray"],
    "replay.py": ["--events", "5000", "--repeat", "1"],
    "scale.py": ["--events", "20000", "--slots", "1,10", "--repeat", "1"],
}


def test_every_bench_script_is_covered() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SMALL)


@pytest.mark.parametrize("script", sorted(SMALL))
def test_a_bench_runs_small_and_writes_its_json(tmp_path: Path, script: str) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *SMALL[script], "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(out.read_text())
