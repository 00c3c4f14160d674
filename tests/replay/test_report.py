from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

import flox_trio as flox
from flox_trio.report import build_report, write_report

from .test_bundle import record


def test_report_rebuilds_equity_and_marks_the_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the EMA keeps its snapshot under a relative path: not in the repository
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


async def _ten_swaps(tape: Path) -> None:
    from flox_trio._loader import strategy_class
    from flox_trio.app import STRATEGIES

    ema = strategy_class(STRATEGIES / "ema.py", "EmaStrategy")
    feed = flox.feeds.ListFeed(flox.feeds.random_walk(6000, rate=100), batch_size=16, pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.02), tape=str(tape)) as runner:
        runner.add_strategy(ema(["BTCUSDT"], fast=5, slow=12, qty=0.01, snapshot="s.json"))
        for k in range(1, 11):
            await trio.sleep(5)
            await runner.replace_strategy(0, ema(["BTCUSDT"], fast=5 + k, slow=12 + 2 * k, qty=0.01,
                                                 snapshot="s.json"))


def test_swap_labels_say_what_changed_and_the_report_names_the_currency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio.testing

    monkeypatch.chdir(tmp_path)
    tape = tmp_path / "ten.tape"
    trio.run(_ten_swaps, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    report = build_report(tape)
    assert [sw["label"] for sw in report.swaps][:2] == ["EmaStrategy fast=5→6 slow=12→14",
                                                        "EmaStrategy fast=6→7 slow=14→16"]
    assert len(report.swaps) == 10 and report.currency == "USDT" and report.names == {0: "EmaStrategy"}
    assert [round(sw["t"]) for sw in report.swaps] == [5 * k for k in range(1, 11)]
    assert len(report.price["BTCUSDT"]) == len(report.t)
    _, png = write_report(tape, tmp_path / "out")
    assert png.stat().st_size > 20_000
