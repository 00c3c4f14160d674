"""A new user's first hour (issue 11): swaps keep parameters, engines are found, tapes are not single-use."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import flox_trio as flox
from flox_trio.app import open_engine
from flox_trio.app._engine import new_tape_path
from flox_trio.cli._control import parse_warmup, read_status, render_status
from flox_trio.config import parse_config
from flox_trio.control import (
    RUNTIME_ENV,
    ControlClient,
    ControlError,
    announce_engine,
    find_run_dir,
    running_engines,
    runtime_root,
    serve_control,
)
from flox_trio.control._protocol import RunDirError

from .conftest import trade

ROOT = Path(__file__).resolve().parents[2]
EMA = ROOT / "py_strategies" / "ema.py"
JS_EMA = ROOT / "js_strategies" / "ema.js"


async def _swap(tmp_path: Path, strategy: Any, **request: Any) -> tuple[dict[str, Any], flox.Runner, list[Any]]:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    changes: list[Any] = []
    with trio.fail_after(20):
        async with flox.open_runner(feed) as runner, trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve_control(
                runner, tmp_path / "run", on_change=lambda i, r: changes.append((i, r)), task_status=task_status))
            runner.add_strategy(strategy)
            await feed.push([trade("1")])
            await runner.wait_idle()
            async with ControlClient(tmp_path / "run") as client:
                reply = await client.call("swap", slot=0, **request)
                status = (await client.call("status"))["status"]
            nursery.cancel_scope.cancel()
    return {**reply, "status": status}, runner, changes


def _ema(**params: Any) -> Any:
    from flox_trio._loader import strategy_class

    return strategy_class(EMA, "EmaStrategy")(["BTCUSDT"], **params)


async def test_a_swap_keeps_the_slots_parameters_and_applies_the_named_ones_on_top(tmp_path: Path) -> None:
    snapshot = str(tmp_path / "ema.json")
    reply, runner, changes = await _swap(tmp_path, _ema(qty=0.01, snapshot=snapshot, cooldown=1.0),
                                         path=f"{EMA}:EmaStrategy", params={"fast": 8, "slow": 21})
    new = runner.slots[0].strategy
    assert (new.fast, new.slow, new.qty, str(new.snapshot)) == (8, 21, 0.01, snapshot)
    assert reply["params"]["qty"] == 0.01 and reply["unnamed_changes"] == []
    assert "fast=12→8" in reply["report"]["label"]
    # what --reload rebuilds from is what runs now, not just what the request named
    assert changes[0][1]["params"]["qty"] == 0.01 and changes[0][1]["params"]["fast"] == 8
    # status shows each slot's parameters
    text = " ".join(str(part) for part in render_status(read_status(reply["status"])))
    assert "slot 0 params: fast=8 slow=21 qty=0.01" in text


async def test_a_fresh_swap_says_which_parameters_it_changed_that_were_not_named(tmp_path: Path) -> None:
    reply, runner, _ = await _swap(tmp_path, _ema(qty=0.01, snapshot=str(tmp_path / "e.json")),
                                   path=f"{EMA}:EmaStrategy", params={"fast": 8, "slow": 21}, fresh=True)
    assert runner.slots[0].strategy.qty == 0.01  # the class's own default
    changed = reply["unnamed_changes"]
    assert any(c.startswith("snapshot ") for c in changed) and not any(c.startswith("fast") for c in changed)


async def test_a_swap_to_another_class_keeps_only_the_parameters_it_takes(tmp_path: Path) -> None:
    other = tmp_path / "other.py"
    other.write_text("import flox_trio as flox\n\nclass Other(flox.Strategy):\n"
                     "    def __init__(self, symbols, qty=1.0):\n        super().__init__(symbols, qty=qty)\n"
                     "        self.qty = qty\n")
    reply, runner, _ = await _swap(tmp_path, _ema(qty=0.03, snapshot=str(tmp_path / "e.json")),
                                   path=f"{other}:Other")
    assert runner.slots[0].strategy.qty == 0.03
    assert reply["params"] == {"qty": 0.03}
    assert {c.split()[0] for c in reply["unnamed_changes"]} == {"fast", "slow", "snapshot", "history", "cooldown"}


@pytest.mark.parametrize(("text", "value"), [("500", 500), ("2.5s", 2.5), ("2m", 120.0), ("1h", 3600.0),
                                             ("90S", 90.0), ("0", 0)])
def test_warmup_takes_events_or_a_duration(text: str, value: float) -> None:
    got = parse_warmup(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["2.5", "-1", "abc", "2x", "infs", "nan"])
def test_warmup_refuses_what_is_neither(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_warmup(text)


def test_tape_paths_fill_their_template_and_never_reuse_a_tape(tmp_path: Path) -> None:
    config = parse_config('symbols = ["BTCUSDT"]\ntape = "tapes/{name}-{date}"\n[venue]\nname = "sim"\n',
                          tmp_path / "mine.toml")
    at = 1_764_633_600_000_000_000  # 2025-12-02 00:00:00 UTC
    path = new_tape_path(config, at)
    assert path == tmp_path / "tapes" / "mine-20251202"
    path.mkdir(parents=True)
    (path / "seg-000000.tape").write_bytes(b"x")
    assert new_tape_path(config, at) == tmp_path / "tapes" / "mine-20251202-2"
    assert not (tmp_path / "tapes" / "mine-20251202-2").exists()  # nothing is created before the engine is up
    bad = attrs.evolve(config, tape="t/{who}")
    with pytest.raises(flox.FloxError, match=r"\{name\}, \{date\} and \{time\}"):
        new_tape_path(bad)


def test_control_commands_find_the_one_running_engine_or_say_which_to_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "rt"))
    assert runtime_root() == tmp_path / "rt"
    with pytest.raises(ControlError, match="no engine is running"):
        find_run_dir()
    dirs = []
    for name in ("a", "b"):
        run_dir = tmp_path / "rt" / name
        run_dir.mkdir(parents=True, mode=0o700)
        (run_dir / "control.sock").touch()
        dirs.append(run_dir)
    with announce_engine(dirs[0], name="a", config="a.toml", started=0.0):
        assert find_run_dir() == dirs[0]
        assert [e.name for e in running_engines()] == ["a"]
        with announce_engine(dirs[1], name="b", config="b.toml", started=0.0):
            with pytest.raises(ControlError, match=r"2 engines are running \(a, b\): say which with --run NAME"):
                find_run_dir()
            assert find_run_dir(name="b") == dirs[1]
            assert find_run_dir(Path("elsewhere")) == Path("elsewhere")
    assert running_engines() == [] and not (dirs[0] / "engine.json").exists()


def test_an_engine_file_of_a_live_engine_or_not_ours_is_refused(tmp_path: Path) -> None:
    (tmp_path / "engine.json").write_text(f'{{"pid": {os.getppid()}, "name": "x", "config": "c", "started": 0}}')
    with pytest.raises(RunDirError, match="belongs to a running engine"), \
            announce_engine(tmp_path, name="y", config="d", started=0.0):
        pass
    (tmp_path / "engine.json").write_text("notes")
    with pytest.raises(RunDirError, match="not an engine file"), \
            announce_engine(tmp_path, name="y", config="d", started=0.0):
        pass
    assert (tmp_path / "engine.json").read_text() == "notes"


async def test_the_engine_uses_the_per_user_run_dir_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "rt"))
    config = parse_config(f'symbols = ["BTCUSDT"]\n[venue]\nname = "sim"\n[[slots]]\nstrategy = "{EMA}:EmaStrategy"\n',
                          tmp_path / "my-run.toml")
    assert config.name == "my-run"
    with trio.fail_after(30):
        async with open_engine(config, feed=flox.feeds.PushFeed(["BTCUSDT"])) as engine:
            assert engine.control_socket == tmp_path / "rt" / "my-run" / "control.sock"
            assert find_run_dir() == tmp_path / "rt" / "my-run"
            async with ControlClient(find_run_dir()) as client:
                added = await client.call("add", path=str(JS_EMA))
            assert added["symbols"] == ["BTCUSDT"]  # the engine's symbols: ema.js declares none of its own


def test_ps_lists_nothing_when_nothing_runs(tmp_path: Path) -> None:
    env = {**os.environ, RUNTIME_ENV: str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "flox_trio.cli", "ps"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "no engine is running" in out.stdout
    status = subprocess.run([sys.executable, "-m", "flox_trio.cli", "status"], env=env, capture_output=True,
                            text=True)
    assert status.returncode == 2 and len(status.stderr.strip().splitlines()) == 1
    assert "start one with `flox-trio run CONFIG`" in status.stderr


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("json_logs", [False, True])
def test_start_up_failures_are_one_line_naming_the_key_and_line(tmp_path: Path, json_logs: bool) -> None:
    (tmp_path / "syn.py").write_text("import flox_trio as flox\nclass S(flox.Strategy)\n    pass\n")
    cases = {
        "missing": ('strategy = "nothere.py:X"', "bad.toml:5: slots[0].strategy: ", "no such strategy file"),
        "param": (f'strategy = "{EMA}:EmaStrategy"\nparams = {{ fast = 30, slow = 10 }}',
                  "bad.toml:5: slots[0].strategy", "needs 0 < fast < slow"),
        "syntax": ('strategy = "syn.py:S"', "bad.toml:5: slots[0].strategy", "syn.py:2: syntax error"),
    }
    for body, where, what in cases.values():
        (tmp_path / "bad.toml").write_text(f'symbols = ["BTCUSDT"]\n[venue]\nname = "sim"\n[[slots]]\n{body}\n')
        out = _cli(tmp_path, "run", "bad.toml", *(["--log-format", "json"] if json_logs else []))
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        if json_logs:
            import json

            line = json.loads(lines[0])
            assert line["level"] == "error" and where in line["message"] and what in line["message"]
        else:
            assert lines[0].startswith("flox-trio run: ") and where in lines[0] and what in lines[0]
    assert not (tmp_path / "tapes").exists()


def test_a_json_run_stays_json_to_its_last_line(tmp_path: Path) -> None:
    import json
    import signal
    import time

    config = tmp_path / "j.toml"
    config.write_text(f'symbols = ["BTCUSDT"]\ntape = "tapes/{{name}}"\n[venue]\nname = "sim"\n[log]\nformat = "json"\n'
                      f'[[slots]]\nstrategy = "{EMA}:EmaStrategy"\nparams = {{ cooldown = 1.0 }}\n')
    proc = subprocess.Popen([sys.executable, "-m", "flox_trio.cli", "run", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "tapes" / "j").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # a real process on the real clock: polling is the only way to observe it
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for line in (out + err).strip().splitlines():
        json.loads(line)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["message"] == "engine stopped" and summary["tape"] == str(tmp_path / "tapes" / "j")
    assert any("recording to tape" in json.loads(line)["message"] for line in err.splitlines())


def test_every_command_and_argument_has_help_and_there_is_a_version() -> None:
    from flox_trio import __version__
    from flox_trio.cli._main import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for sub, child in action.choices.items():
                    if not helps.get(sub):
                        missing.append(f"{name} {sub}")
                    walk(child, f"{name} {sub}")
            elif not action.help and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                missing.append(f"{name} {action.option_strings or action.dest}")

    walk(build_parser(), "flox-trio")
    assert missing == []
    out = _cli(ROOT, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"flox-trio {__version__}"


async def test_reload_reacts_to_strategy_files_only_not_tapes_or_state_next_to_them(tmp_path: Path) -> None:
    strat = tmp_path / "s.py"
    strat.write_text(EMA.read_text())
    config = parse_config('symbols = ["BTCUSDT"]\ntape = "tape"\n[venue]\nname = "sim"\n'
                          '[[slots]]\nstrategy = "s.py:EmaStrategy"\n', tmp_path / "c.toml")
    with trio.fail_after(30):
        async with open_engine(config, feed=flox.feeds.PushFeed(["BTCUSDT"])) as engine:
            assert engine.is_strategy_file(strat) and engine.is_strategy_file(str(tmp_path / "." / "s.py"))
            assert not engine.is_strategy_file(tmp_path / "tape" / "seg-000000.tape")
            assert not engine.is_strategy_file(tmp_path / "state" / "ema.json")
            assert not engine.is_strategy_file(tmp_path / "other.py")
