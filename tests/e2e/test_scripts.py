"""Commands and scripts as users run them, as processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
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
    assert "slot 0: swapped EmaStrategy fast=" in out.stdout and "→8 slow=" in out.stdout
    assert "(python) at event" in out.stdout
    if "--offline" not in args:
        assert "connection across the swap: id 1 → 1, connects 1 → 1 (the same session)" in out.stdout


async def _record_live_session(tape: Path, tmp: Path) -> None:
    import trio

    import flox_trio as flox
    from flox_trio._loader import strategy_class

    ema = strategy_class(ROOT / "py_strategies" / "ema.py", "EmaStrategy")
    v2 = tmp / "ema_v2.py"
    v2.write_text("# v2\n" + (ROOT / "py_strategies" / "ema.py").read_text())
    ema2 = strategy_class(v2, "EmaStrategy")
    async with flox.sim.open_simulator(seed=11, rate=200, symbols=["BTCUSDT"]) as sim:
        feed = flox.connectors.Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url)
        async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01), tape=str(tape), drain=False) as runner:
            runner.add_strategy(ema(["BTCUSDT"], fast=3, slow=7, qty=0.5, snapshot="s.json"))
            with trio.fail_after(20):
                while runner.slots[0].dispatched < 300:
                    await trio.sleep(0.05)
            await runner.replace_strategy(0, ema2(["BTCUSDT"], fast=4, slow=9, qty=0.25, snapshot="s.json"))
            with trio.fail_after(20):
                while runner.slots[0].dispatched < 600:
                    await trio.sleep(0.05)


def test_a_live_simulator_session_with_a_swap_packs_and_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unpack: Callable[[Path, Path], None]
) -> None:
    import json

    import trio

    monkeypatch.chdir(tmp_path)  # the strategies keep their snapshot under a relative path

    tape = tmp_path / "live.tape"
    trio.run(_record_live_session, tape, tmp_path)
    assert tape_info(tape).connector_events.get("connect") == 1
    packed = run(tmp_path, "-m", "flox_trio.cli", "bundle", "pack", str(tape), "-o", "live.tar")
    assert packed.returncode == 0, packed.stderr
    for _ in range(2):
        ok = run(tmp_path, "-m", "flox_trio.cli", "bundle", "validate", "live.tar", "--trust")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "identical" in ok.stdout and "1 swaps" in ok.stdout
    unpack(tmp_path / "live.tar", tmp_path / "edited")
    manifest = json.loads((tmp_path / "edited" / "manifest.json").read_text())
    after = tmp_path / "edited" / manifest["swaps"][0]["source"]
    after.write_text(after.read_text().replace("ctx.market_buy(self.qty)", "ctx.market_buy(self.qty * 2)"))
    untrusted = run(tmp_path, "-m", "flox_trio.cli", "bundle", "validate", str(tmp_path / "edited"))
    assert untrusted.returncode == 2 and "--trust" in untrusted.stderr and len(untrusted.stderr.splitlines()) == 1
    bad = run(tmp_path, "-m", "flox_trio.cli", "bundle", "validate", str(tmp_path / "edited"), "--trust")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "first differing order is #" in bad.stdout and "qty expected '0.25' got '0.5'" in bad.stdout
