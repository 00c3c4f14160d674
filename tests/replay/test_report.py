from __future__ import annotations

import json
from pathlib import Path

import trio

from flox_trio.report import build_report, write_report

from .test_bundle import record


def test_report_rebuilds_equity_and_marks_the_swap(tmp_path: Path) -> None:
    tape = tmp_path / "run.tape"
    trio.run(record, tape, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0))
    report = build_report(tape)
    assert report.totals["market_events"] == 3000
    assert report.totals["fills"] > 10
    (swap,) = report.swaps
    assert swap["slot"] == 0 and 7.0 < swap["t"] < 8.0  # the swap happened 7.5 s in
    # Position before the swap comes in lots of 0.5, after it in lots of 0.25.
    before = {p for t, p in zip(report.t, report.position[0], strict=True) if t < swap["t"]}
    after = {p for t, p in zip(report.t, report.position[0], strict=True) if t > swap["t"] + 0.5}
    assert before <= {0.0, 0.5} and 0.5 in before
    assert after <= {0.0, 0.25} and 0.25 in after
    json_path, png_path = write_report(tape, tmp_path / "out")
    assert json.loads(json_path.read_text())["totals"]["fills"] == report.totals["fills"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
