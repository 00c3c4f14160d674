"""Record a run with a swap in the middle, pack it, validate it (twice), break it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio._loader import strategy_class
from flox_trio.feeds import random_walk
from flox_trio.replay import pack_bundle, replay_tape, validate_bundle
from flox_trio.tape import TapeReader

ROOT = Path(__file__).resolve().parents[2]


async def record(tape: Path, tmp: Path) -> None:
    ema = strategy_class(ROOT / "py_strategies" / "ema.py", "EmaStrategy")
    # The version swapped in is a different file (as after an edit), so the bundle holds two sources.
    v2 = tmp / "ema_v2.py"
    v2.write_text("# v2: slower EMAs\n" + (ROOT / "py_strategies" / "ema.py").read_text())
    ema2 = strategy_class(v2, "EmaStrategy")
    feed = flox.feeds.ListFeed(random_walk(3000, seed=3), batch_size=32, pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01), tape=str(tape)) as runner:
        runner.add_strategy(ema(["BTCUSDT"], fast=5, slow=12, qty=0.5, snapshot="a.json"))
        await trio.sleep(7.5)  # half of the 15 s of trades
        await runner.replace_strategy(0, ema2(["BTCUSDT"], fast=8, slow=21, qty=0.25, snapshot="a.json"))


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the EMA keeps its snapshot under a relative path
    tape = tmp_path / "run.tape"
    trio.run(record, tape, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0))
    return tape


def test_tape_holds_slot_and_swap_with_sources(recorded: Path) -> None:
    reader = TapeReader(recorded)
    (slot,) = reader.slot_records()
    (swap,) = reader.swaps()
    assert slot.language == "python" and "class EmaStrategy" in (slot.source or "")
    assert slot.params["symbols"] == ["BTCUSDT"] and slot.params["fast"] == 5
    assert swap.params["new"]["fast"] == 8 and 1000 < swap.seq < 2000
    assert reader.meta["executor"] == {"kind": "PaperSettings", "latency": 0.01, "taker_fee": "0",
                                       "maker_fee": "0"}


def test_replay_is_deterministic_and_performs_the_swap(recorded: Path) -> None:
    a, b = replay_tape(recorded), replay_tape(recorded)
    assert a.outputs == b.outputs
    assert a.swaps == 1 and a.events == 3000
    assert len(a.outputs["orders"]) > 10
    assert a.status.slots[0].swaps == 1


def test_bundle_validates_twice_and_a_changed_source_names_the_first_differing_order(
    recorded: Path, tmp_path: Path
) -> None:
    bundle = pack_bundle(recorded, tmp_path / "run.bundle")
    # Its strategies are Python: replaying them runs them, so the caller says it trusts them.
    first, second = validate_bundle(bundle, trust=True), validate_bundle(bundle, trust=True)
    assert first.ok and second.ok and not first.warnings
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(manifest["slots"]) == 1 and len(manifest["swaps"]) == 1
    # Both the before and the after of the swap trade in the expected outputs.
    expected = json.loads((bundle / "expected.json").read_text())
    assert expected["orders"] == first.result.outputs["orders"]

    # Edit the strategy that was swapped in: trade twice the size.
    after = bundle / manifest["swaps"][0]["source"]
    after.write_text(after.read_text().replace("ctx.market_buy(self.qty)", "ctx.market_buy(self.qty * 2)"))
    changed = validate_bundle(bundle, trust=True)
    assert not changed.ok
    assert changed.warnings == [f"{manifest['swaps'][0]['source']} changed since the bundle was packed"]
    assert changed.divergence is not None and "first differing order" in changed.divergence
    # The orders from before the swap are reproduced; the first one after it differs.
    first_after = next(i for i, o in enumerate(expected["orders"]) if o["qty"] == "0.25")
    assert f"first differing order is #{first_after} " in changed.divergence
    assert "qty expected '0.25' got '0.5'" in changed.divergence
    assert changed.result.outputs["orders"][:first_after] == expected["orders"][:first_after]


def test_bundle_errors(recorded: Path, tmp_path: Path, unpack: Callable[[Path, Path], None]) -> None:
    bundle = pack_bundle(recorded, tmp_path / "b.tar")
    extracted = tmp_path / "x"
    unpack(bundle, extracted)
    (extracted / "expected.json").write_text("{}")
    with pytest.raises(flox.TapeError, match=r"expected\.json does not match its manifest hash"):
        validate_bundle(extracted)
    other = tmp_path / "y"
    unpack(bundle, other)
    segment = next((other / "tape").iterdir())
    segment.unlink()
    with pytest.raises(flox.TapeError, match=f"tape/{segment.name} is listed in the manifest but missing"):
        validate_bundle(other)
    with pytest.raises(flox.TapeError, match="does not exist"):
        validate_bundle(tmp_path / "nope.tar")


def test_cli_bundle_validate_exit_codes(recorded: Path, tmp_path: Path,
                                       unpack: Callable[[Path, Path], None]) -> None:
    bundle = tmp_path / "cli.tar"

    def cli(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "flox_trio.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)

    packed = cli("bundle", "pack", str(recorded), "-o", str(bundle))
    assert packed.returncode == 0, packed.stderr
    for _ in range(2):
        ok = cli("bundle", "validate", str(bundle), "--trust")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "identical" in ok.stdout
    extracted = tmp_path / "edited"
    unpack(bundle, extracted)
    manifest = json.loads((extracted / "manifest.json").read_text())
    src = extracted / manifest["slots"][0]["source"]
    src.write_text(src.read_text().replace("ctx.market_buy(self.qty)", "ctx.market_buy(self.qty * 3)"))
    bad = cli("bundle", "validate", str(extracted), "--trust")
    assert bad.returncode == 1
    assert "first differing order is #0 (0-1)" in bad.stdout


async def record_js(tape: Path, tmp: Path) -> None:
    from flox_trio.js import load

    script = load(ROOT / "js_strategies" / "ema.js", state_dir=tmp / "js-state")
    feed = flox.feeds.ListFeed(random_walk(2000, seed=5), batch_size=32, pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01), tape=str(tape)) as runner:
        runner.add_strategy(script.call("makeStrategy", "v1", 5, 12, 0.5))
        await trio.sleep(5)
        await runner.replace_strategy(0, script.call("makeStrategy", "v2", 8, 21, 0.25))


def test_a_javascript_run_replays_and_validates(tmp_path: Path) -> None:
    tape = tmp_path / "js.tape"
    trio.run(record_js, tape, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0))
    (swap,) = TapeReader(tape).swaps()
    assert swap.old_language == swap.new_language == "javascript"
    bundle = pack_bundle(tape, tmp_path / "js.bundle")
    first, second = validate_bundle(bundle), validate_bundle(bundle)
    assert first.ok and second.ok
    orders = first.result.outputs["orders"]
    assert {o["qty"] for o in orders} == {"0.5", "0.25"}  # both versions traded
