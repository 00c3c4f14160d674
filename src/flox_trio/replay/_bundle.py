"""Reproducibility bundles: a tape, every strategy source, the config and the expected outputs.

A bundle is a directory or a ``.tar`` of::

    manifest.json        format version, versions, sha256 of every file, slots and swaps
    tape/                the recorded tape
    strategies/          one file per strategy version: before and after every swap
    config.toml          the run's config, when there was one
    expected.json        orders, fills, positions and PnL of the reference replay

``validate_bundle`` replays the tape with the bundle's strategy files and
compares with ``expected.json``: identical, or the first divergence.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .._core._clock import unix_time_ns
from .._core._convert import to_jsonable
from .._errors import TapeError
from .._version import __version__
from ..execution import first_divergence, outputs_json
from ._replay import (
    RecordedStrategy,
    ReplayPlan,
    ReplayResult,
    executor_settings,
    plan_from_tape,
    replay_tape,
)

BUNDLE_FORMAT_VERSION = 1
_EXT = {"python": ".py", "javascript": ".js"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def pack_bundle(tape: str | Path, out: str | Path, *, config: str | Path | None = None) -> Path:
    """Pack ``tape`` (and ``config``) into a bundle at ``out`` (a directory, or a ``.tar`` file).

    The expected outputs come from a reference replay run now.
    """
    tape, out = Path(tape), Path(out)
    plan = plan_from_tape(tape)
    with tempfile.TemporaryDirectory(prefix="flox-bundle-") as tmp:
        root = Path(tmp) / "bundle"
        shutil.copytree(tape, root / "tape")
        (root / "strategies").mkdir()
        written: dict[str, str] = {}

        def store(spec: RecordedStrategy) -> dict[str, Any]:
            name = f"strategies/{spec.source_hash[:16]}{_EXT.get(spec.language, '.txt')}"
            if name not in written:
                (root / name).write_text(spec.source)
                written[name] = spec.source_hash
            return {"language": spec.language, "spec": spec.spec, "params": spec.params, "source": name,
                    "source_sha256": spec.source_hash}

        slots = [{"slot": i, **store(s)} for i, s in plan.slots]
        swaps = [{"slot": i, "at_market_event": at, **store(s)} for i, at, s in plan.swaps]
        if config is not None:
            shutil.copyfile(config, root / "config.toml")
        result = replay_tape(root / "tape", plan=plan)
        (root / "expected.json").write_bytes(outputs_json(result.outputs))
        manifest = {
            "bundle_format_version": BUNDLE_FORMAT_VERSION,
            "flox_trio_version": __version__,
            "python": platform.python_version(),
            "created_ns": unix_time_ns(),
            "executor": to_jsonable(plan.executor),
            "bar_intervals": list(plan.bar_intervals),
            "slots": slots,
            "swaps": swaps,
            "expected": {"events": result.events, "swaps": result.swaps,
                         "orders": len(result.outputs["orders"]), "fills": len(result.outputs["fills"])},
            "files": _files(root),
        }
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if out.suffix == ".tar":
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w") as tar:
                for p in sorted(root.rglob("*")):
                    tar.add(p, arcname=p.relative_to(root).as_posix(), recursive=False)
        else:
            if out.exists():
                raise TapeError(f"{out} already exists: choose another bundle path or remove it")
            shutil.copytree(root, out)
    return out


@contextmanager
def open_bundle(path: str | Path) -> Iterator[Path]:
    """The bundle as a directory (a ``.tar`` is extracted to a temporary one)."""
    path = Path(path)
    if not path.exists():
        raise TapeError(f"bundle {path} does not exist")
    if path.is_dir():
        yield path
        return
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise TapeError(f"{path} is not a bundle (.tar or directory): {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="flox-bundle-") as tmp, tar:
        tar.extractall(tmp, filter="data")
        yield Path(tmp)


def is_bundle(path: Path) -> bool:
    return (path / "manifest.json").exists() or path.suffix == ".tar"


@contextmanager
def tape_of(path: str | Path) -> Iterator[Path]:
    """The tape directory of a tape, or of a bundle (a ``.tar`` is extracted for the duration)."""
    path = Path(path)
    if not is_bundle(path):
        yield path
        return
    with open_bundle(path) as root:
        yield root / "tape"


@attrs.frozen
class Validation:
    ok: bool
    divergence: str | None
    warnings: list[str]
    result: ReplayResult


def _load_manifest(root: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        raise TapeError(f"bundle {root}: manifest.json is missing") from None
    except json.JSONDecodeError as exc:
        raise TapeError(f"bundle {root}: manifest.json is not valid JSON ({exc})") from exc
    version = manifest.get("bundle_format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise TapeError(f"bundle {root}: format version {version!r} is not supported "
                        f"(this flox-trio reads version {BUNDLE_FORMAT_VERSION})")
    return manifest


def check_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Verify every file against the manifest.

    A missing file or a changed tape or expected output is an error; a changed
    strategy source is a warning: replaying it is exactly how you see what
    the change does.
    """
    warnings = []
    for rel, digest in sorted(manifest.get("files", {}).items()):
        p = root / rel
        if not p.is_file():
            raise TapeError(f"bundle {root}: {rel} is listed in the manifest but missing")
        actual = _sha256(p)
        if actual != digest:
            if rel.startswith("strategies/"):
                warnings.append(f"{rel} changed since the bundle was packed")
            else:
                raise TapeError(f"bundle {root}: {rel} does not match its manifest hash "
                                f"(expected {digest[:12]}…, found {actual[:12]}…); the bundle was altered")
    return warnings


def plan_from_bundle(root: Path, manifest: dict[str, Any]) -> ReplayPlan:
    def spec(entry: dict[str, Any]) -> RecordedStrategy:
        return RecordedStrategy(entry["language"], (root / entry["source"]).read_text(), entry["spec"],
                                dict(entry["params"]))

    return ReplayPlan(
        [(e["slot"], spec(e)) for e in manifest["slots"]],
        [(e["slot"], e["at_market_event"], spec(e)) for e in manifest["swaps"]],
        executor_settings(manifest, f"bundle {root}"),
        tuple(manifest.get("bar_intervals", (60.0,))),
    )


def validate_bundle(path: str | Path, *, progress: Callable[[int], None] | None = None) -> Validation:
    """Replay a bundle with its own strategy files and compare with its expected outputs."""
    with open_bundle(path) as root:
        manifest = _load_manifest(root)
        warnings = check_files(root, manifest)
        expected = json.loads((root / "expected.json").read_text())
        result = replay_tape(root / "tape", plan=plan_from_bundle(root, manifest), progress=progress)
    divergence = first_divergence(expected, result.outputs)
    return Validation(divergence is None, divergence, warnings, result)

