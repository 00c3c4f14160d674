"""The README's command lines, typed as written, top to bottom, in a fresh copy of the repository.

A new user clones, runs ``make demo``, puts ``.venv/bin`` on ``PATH`` (the
README says so) and types the lines of the README's shell blocks from the
repository root. This test does exactly that in a copy of the tracked tree:
``flox-trio run`` is started in the background (it runs until Ctrl-C), the
lines after it talk to it, and after Ctrl-C the tape it recorded goes through
the tape, replay and bundle lines. Two blocks are not typed here, and why:
``make demo`` / ``make test`` (this suite is ``make test``; ``make demo`` is
``flox-trio demo``, run by ``test_scripts.py``), and the benchmarks (they are
measurements that take minutes; ``test_bench.py`` runs each briefly).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flox_trio.sim")

ROOT = Path(__file__).resolve().parents[2]


def shell_blocks(text: str) -> list[list[str]]:
    """The ``sh`` code blocks of a markdown text: each a list of commands (comments dropped, ``;`` split)."""
    blocks = []
    for body in re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S):
        commands = []
        for line in body.splitlines():
            code = line.split(" #", 1)[0].strip()
            commands.extend(c.strip() for c in code.split(" ; ") if c.strip())
        blocks.append(commands)
    return blocks


def fresh_copy(dest: Path) -> Path:
    """The files git would check out (tracked, or new and not ignored), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() or src.is_symlink():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), target)
            else:
                shutil.copy2(src, target)
    return dest


def wait_until_up(env: dict[str, str], cwd: Path, engine: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert engine.poll() is None, f"flox-trio run exited: {engine.communicate()}"
        probe = subprocess.run(["flox-trio", "status"], cwd=cwd, env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return
        time.sleep(0.2)  # a real process on the real clock: polling is the only way to observe it
    raise AssertionError("flox-trio run did not come up")


def test_readme_command_lines_run_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = shell_blocks(readme)
    lines = [c for block in blocks for c in block]
    assert "make demo" in lines and "make test" in lines
    typed = [c for c in lines if c.startswith("flox-trio")]
    assert any(c.startswith("flox-trio run ") for c in typed) and "flox-trio status" in typed

    repo = fresh_copy(tmp_path / "clone")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "FLOX_TRIO_RUNTIME_DIR": str(tmp_path / "rt"), "COLUMNS": "120"}
    engine: subprocess.Popen[str] | None = None
    try:
        for command in typed:
            argv = shlex.split(command)
            if argv[1] == "run":
                engine = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
                wait_until_up(env, repo, engine)
                continue
            if engine is not None and argv[1] in ("tape", "replay", "bundle", "report"):
                # The tape lines read what the session recorded: stop it as a user would, with Ctrl-C.
                engine.send_signal(signal.SIGINT)
                out, err = engine.communicate(timeout=30)
                assert engine.returncode == 0, err
                assert "tape: " in out, out
                engine = None
            done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{command!r} failed:\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in done.stderr, done.stderr
            if argv[1] == "swap":
                assert "qty=0.01" in done.stdout and "which you did not name" not in done.stdout, done.stdout
    finally:
        if engine is not None:
            engine.kill()
            engine.communicate()
    assert (repo / "runs" / "today.tape").is_dir()
    assert (repo / "out" / "report.png").exists()
