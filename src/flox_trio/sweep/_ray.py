"""Backtest jobs on a Ray cluster: the same ``run_one``, on Ray workers.

``ray`` is an optional extra (``pip install 'flox-trio[ray]'``), imported only
here and only when asked for. Each tape is packed once (a plain tar of its
segment files, which are compressed already) and put in the object store
once, so it travels to each node once; a worker process unpacks it into a
temporary directory the first time one of its tasks needs it and keeps it for
the next. Results are gathered as they finish. The cluster's nodes need
flox-trio (and whatever the strategy imports) installed, as for any Ray job.
"""

from __future__ import annotations

import atexit
import io
import logging
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError, TapeError

if TYPE_CHECKING:
    from ._backtest import BacktestJob, BacktestRow, TapeSource

INSTALL_HINT = "pip install 'flox-trio[ray]'"


class RayUnavailableError(ConfigError):
    """``--ray`` was given but Ray is not installed here."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def pack_tape(path: Path) -> bytes:
    """A tape directory as the bytes of a plain tar of its regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(path.iterdir()):
            if p.is_file() and not p.is_symlink():
                tar.add(p, arcname=p.name, recursive=False)
    return buf.getvalue()


def unpack_tape(data: bytes, dest: Path) -> Path:
    """Unpack ``pack_tape``'s bytes into the new directory ``dest`` (regular files only)."""
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name in ("", ".", ".."):
                raise TapeError(f"a shipped tape holds {member.name!r}, which is not a segment file")
            src = tar.extractfile(member)
            assert src is not None
            with src, (dest / member.name).open("wb") as out:
                shutil.copyfileobj(src, out)
    return dest


#: In each Ray worker process: the tapes it has unpacked, by object id.
_UNPACKED: dict[str, Path] = {}
_ROOT: list[Path] = []


def _local_tape(ref: Any) -> Path:
    key = ref.hex()
    path = _UNPACKED.get(key)
    if path is None:
        import ray

        if not _ROOT:
            _ROOT.append(Path(tempfile.mkdtemp(prefix="flox-ray-tapes-")))
            atexit.register(shutil.rmtree, _ROOT[0], True)
        path = _UNPACKED[key] = unpack_tape(ray.get(ref), _ROOT[0] / key)
    return path


def ray_task(run: Callable[[BacktestJob], BacktestRow], job: BacktestJob, tape: list[Any]) -> BacktestRow:
    """A Ray task: ``run(job)`` (``run_one``), on this worker's copy of the job's tape.

    The tape's object reference comes inside a list so that Ray does not
    fetch it for every task: the worker fetches and unpacks it once.
    """
    return run(attrs.evolve(job, tape_path=str(_local_tape(tape[0]))))


def init_ray(address: str, *, workers: int) -> bool:
    """Connect to (``auto``, ``ray://host:port``, ``host:port``) or start (``local``) Ray, unless it is up.

    Returns whether this call connected (and so should shut it down).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if not address.strip():
        raise ConfigError("--ray takes auto, local or ray://host:port")
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                               "configure_logging": True}
    try:
        if address == "local":
            ray.init(num_cpus=workers, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to Ray at {address!r}: {' '.join(str(exc).split())[:300]}") from None
    return True


def run_on_ray(run: Callable[[BacktestJob], BacktestRow], jobs: Sequence[BacktestJob],
               tapes: Sequence[TapeSource], address: str, *, workers: int,
               on_row: Callable[[BacktestRow], None] | None = None) -> list[BacktestRow]:
    """Run ``run(job)`` for each of ``jobs`` as Ray tasks (one CPU each); the rows in job order,
    ``on_row`` called as each finishes. ``workers``: the CPUs of a ``local`` instance."""
    ray = import_ray()
    started = init_ray(address, workers=workers)
    try:
        refs = {str(t.path): ray.put(pack_tape(t.path)) for t in tapes}
        task = ray.remote(num_cpus=1)(ray_task)
        pending = {task.remote(run, job, [refs[job.tape_path]]): i for i, job in enumerate(jobs)}
        rows: list[BacktestRow | None] = [None] * len(jobs)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    rows[pending.pop(ref)] = row = ray.get(ref)
                    if on_row is not None:
                        on_row(row)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return [r for r in rows if r is not None]
    finally:
        if started:
            ray.shutdown()
