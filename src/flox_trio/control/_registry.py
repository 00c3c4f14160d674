"""Finding a running engine: one run directory per run name, under a per-user root.

An engine's run directory (its control socket, and ``engine.json`` saying
who it is) is ``ROOT/NAME`` unless the config or ``--run-dir`` names
another; ``NAME`` is the config's ``name`` (default: the config file's stem,
``sim_ema`` for ``examples/sim_ema.toml``). ``ROOT`` is, first found:
``$FLOX_TRIO_RUNTIME_DIR``, ``$XDG_RUNTIME_DIR/flox-trio`` (a per-user
directory the login session owns), ``$TMPDIR/flox-trio-UID``. So a control
command works from wherever its user stands: ``--run-dir DIR`` or
``--run NAME`` say which engine, and with neither the one engine running
under ``ROOT`` is meant (``flox-trio ps`` lists them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ._protocol import SOCKET_NAME, ControlError, RunDirError

RUNTIME_ENV = "FLOX_TRIO_RUNTIME_DIR"
ENGINE_FILE = "engine.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def runtime_root() -> Path:
    """The per-user directory that holds the run directories of named runs."""
    explicit = os.environ.get(RUNTIME_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        with contextlib.suppress(OSError):
            if os.path.isdir(xdg) and os.stat(xdg).st_uid == os.getuid():
                return Path(xdg) / "flox-trio"
    return Path(tempfile.gettempdir()) / f"flox-trio-{os.getuid()}"


def check_run_name(name: str) -> str:
    """A run name is a file name: letters, digits, ``.``, ``_``, ``-``; at most 64, not starting with a dot."""
    if not _NAME.match(name):
        raise RunDirError(f"run name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                          "not starting with '.' or '-'; set `name` in the config or pass --name")
    return name


def named_run_dir(name: str) -> Path:
    return runtime_root() / check_run_name(name)


@attrs.frozen
class RunningEngine:
    """What ``flox-trio ps`` shows of one engine: read from its ``engine.json``."""

    name: str
    run_dir: Path
    pid: int
    config: str
    started: float
    tape: str | None = None


def running_engines(root: Path | None = None) -> list[RunningEngine]:
    """Engines running under ``root`` (default ``runtime_root()``), by name: those whose process is alive."""
    root = runtime_root() if root is None else root
    found = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for run_dir in entries:
        engine = read_engine_file(run_dir)
        if engine is not None and _alive(engine.pid) and (run_dir / SOCKET_NAME).exists():
            found.append(engine)
    return found


def read_engine_file(run_dir: Path) -> RunningEngine | None:
    try:
        data = json.loads((run_dir / ENGINE_FILE).read_bytes()[:65536])
        return RunningEngine(str(data["name"]), run_dir, int(data["pid"]), str(data["config"]),
                             float(data["started"]), None if data.get("tape") is None else str(data["tape"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a pid reused by another user's process
        return False
    return pid > 0


def find_run_dir(run_dir: Path | None = None, name: str | None = None) -> Path:
    """The run directory a control command talks to (see the module docstring).

    Raises:
        ControlError: neither was given and not exactly one engine is running.
    """
    if run_dir is not None:
        return run_dir
    if name is not None:
        return named_run_dir(name)
    engines = running_engines()
    if len(engines) == 1:
        return engines[0].run_dir
    root = runtime_root()
    if not engines:
        raise ControlError(f"no engine is running (none under {root}): start one with `flox-trio run CONFIG`; "
                           "an engine whose config sets run_dir is reached with --run-dir DIR")
    names = ", ".join(e.name for e in engines)
    raise ControlError(f"{len(engines)} engines are running ({names}): say which with --run NAME")


@contextlib.contextmanager
def announce_engine(run_dir: Path, **fields: Any) -> Iterator[Path]:
    """Write ``run_dir/engine.json`` (who runs here) for as long as the engine runs, then remove it.

    Created exclusively (0600, no following links): a file already there from
    an engine that died is replaced only when its process is gone.
    """
    path = run_dir / ENGINE_FILE
    old = read_engine_file(run_dir)
    if old is not None and _alive(old.pid) and old.pid != os.getpid():
        raise RunDirError(f"run directory {run_dir} belongs to a running engine (pid {old.pid}, {old.config}): "
                          "stop it first, or give this run another name (`name` in the config, or --name)")
    if old is None and os.path.lexists(path):
        raise RunDirError(f"{path} is not an engine file this program wrote: move it away, or use another run_dir")
    if old is not None:
        os.unlink(path)  # left by an engine that died
    data = json.dumps({"pid": os.getpid(), **fields}, default=str).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
