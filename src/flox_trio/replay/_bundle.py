"""Reproducibility bundles: a tape, every strategy source, the config and the expected outputs.

A bundle is a directory or a tar (plain, or gzip/bzip2/xz/zstd compressed) of::

    manifest.json        format version, versions, sha256 of every file, slots and swaps
    tape/                the recorded tape
    strategies/          one file per strategy version: before and after every swap
    config.toml          the run's config, when there was one
    expected.json        orders, fills, positions and PnL of the reference replay

``validate_bundle`` replays the tape with the bundle's strategy files and
compares with ``expected.json``: identical, or the first divergence.

A bundle is a file from someone else. Opening one extracts it member by
member (regular files and directories only, names inside the bundle, sizes
and member count capped, a decompression-ratio guard): no archive can write
outside its temporary directory or fill the disk. Validating one runs its
strategies, so a bundle with Python strategies (which have no sandbox) is
replayed only when the caller trusts it (``trust=True``, ``--trust``).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import platform
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import attrs

from .._core._clock import unix_time_ns
from .._core._convert import to_jsonable
from .._errors import FloxError, TapeError
from .._version import __version__
from ..execution import first_divergence, outputs_json
from ..tape import TapeReader
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
#: Bundle file names and the tar mode that writes each.
_TAR_MODES = {".tar": "x", ".tar.gz": "x:gz", ".tgz": "x:gz", ".tar.bz2": "x:bz2", ".tar.xz": "x:xz"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _tar_mode(out: Path) -> str | None:
    name = out.name.lower()
    for suffix, mode in _TAR_MODES.items():
        if name.endswith(suffix):
            return mode
    return None


def _copy_regular(src: Path, dst: Path, what: str) -> None:
    try:
        mode = os.lstat(src).st_mode
    except OSError as exc:
        raise TapeError(f"cannot pack {what} {src}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise TapeError(f"cannot pack {what} {src}: it is not a regular file (a link or a special file)")
    shutil.copyfile(src, dst, follow_symlinks=False)


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A member without its packer's user and group names."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def pack_bundle(tape: str | Path, out: str | Path, *, config: str | Path | None = None) -> Path:
    """Pack ``tape`` (and ``config``) into a bundle at ``out``: a new directory, or a new
    ``.tar`` (``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) file.

    Only the tape's segment files are packed (regular files, never what a
    link points to). The expected outputs come from a reference replay run
    now, of the strategies recorded on the tape: a tape you recorded runs
    your own code. ``out`` must not exist: nothing is overwritten.
    """
    tape, out = Path(tape), Path(out)
    if os.path.lexists(out):
        raise TapeError(f"{out} already exists: choose another bundle path or remove it")
    plan = plan_from_tape(tape)
    segments = TapeReader(tape).segments
    with tempfile.TemporaryDirectory(prefix="flox-bundle-") as tmp:
        root = Path(tmp) / "bundle"
        (root / "tape").mkdir(parents=True)
        for seg in segments:
            _copy_regular(seg, root / "tape" / seg.name, "tape segment")
        (root / "strategies").mkdir()
        written: dict[str, str] = {}

        def store(spec: RecordedStrategy) -> dict[str, Any]:
            name = f"strategies/{spec.source_hash[:16]}{_EXT.get(spec.language, '.txt')}"
            if name not in written:
                (root / name).write_text(spec.source, encoding="utf-8")
                written[name] = spec.source_hash
            return {"language": spec.language, "spec": spec.spec, "params": spec.params, "source": name,
                    "source_sha256": spec.source_hash}

        slots = [{"slot": i, **store(s)} for i, s in plan.slots]
        swaps = [{"slot": i, "at_market_event": at, **store(s)} for i, at, s in plan.swaps]
        if config is not None:
            _copy_regular(Path(config), root / "config.toml", "config")
        result = replay_tape(root / "tape", plan=plan, mode="simulate")
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
        mode = _tar_mode(out)
        try:
            if mode is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                with tarfile.open(out, mode) as tar:  # type: ignore[call-overload]
                    for p in sorted(root.rglob("*")):
                        tar.add(p, arcname=p.relative_to(root).as_posix(), recursive=False, filter=_anonymous)
            else:
                shutil.copytree(root, out)
        except FileExistsError:
            raise TapeError(f"{out} already exists: choose another bundle path or remove it") from None
        except OSError as exc:
            raise TapeError(f"cannot write bundle {out}: {exc.strerror or exc}") from None
    return out


@attrs.frozen
class BundleLimits:
    """What opening a bundle may cost: checked against each member's header *and* while copying.

    A bundle is a file someone handed you, so none of these trust it: the
    sizes a header declares are checked before anything is written, the bytes
    actually read are counted as they are copied, and a compressed bundle may
    inflate at most ``max_ratio`` times its size on disk (or ``ratio_floor``
    bytes, for small ones).
    """

    #: Files and directories in one bundle.
    max_members: int = 20_000
    #: The largest file in a bundle (a tape segment is 64 MiB by default).
    max_member_bytes: int = 4 << 30
    #: Everything extracted, headers included.
    max_total_bytes: int = 16 << 30
    #: For gzip/bzip2/xz/zstd bundles: uncompressed bytes per compressed byte.
    max_ratio: float = 100.0
    #: ... but any compressed bundle may inflate to this much.
    ratio_floor: int = 64 << 20
    #: A pax or GNU long-name header (names, not data) is at most this large.
    max_header_bytes: int = 1 << 20


DEFAULT_LIMITS = BundleLimits()


class UntrustedBundleError(FloxError, PermissionError):
    """A bundle holds Python strategy code, which would run unsandboxed, and the caller did not trust it."""


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_COPY_CHUNK = 1 << 20
_MAX_NAME = 4096
_LINK_KINDS = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
               b"4": "a block device", b"6": "a named pipe (FIFO)", b"S": "a sparse file", b"V": "a volume label",
               b"M": "a multi-volume continuation", b"D": "a GNU dump directory"}


class _Inflated(Exception):
    """Internal: the stream went past its byte budget."""


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _Counted:
    """A file object that counts what it returns and refuses to return more than ``budget`` bytes."""

    def __init__(self, f: _Stream, budget: int) -> None:
        self.f = f
        self.budget = budget
        self.total = 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.total += len(data)
        if self.total > self.budget:
            raise _Inflated
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            data = self.read(min(n, _COPY_CHUNK))
            if not data:
                return
            n -= len(data)

    def read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self.read(min(n - len(out), _COPY_CHUNK))
            if not data:
                break
            out += data
        return bytes(out)


def _decompressed(raw: BinaryIO, magic: bytes) -> tuple[_Stream, str | None]:
    """The tar stream of a bundle file, and the compression it was in (None: a plain tar)."""
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), "gzip"
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, "rb"), "bzip2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, "rb"), "xz"
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw), "zstd"
    return raw, None


def _number(field: bytes, what: str) -> int:
    """A tar header number: octal text, or GNU base-256 when the top bit is set."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:
            raise ValueError(f"negative {what}")
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise ValueError(f"{what} {text!r} is not an octal number")
    return int(text, 8)


def _text(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _pax(data: bytes) -> dict[str, str]:
    """The records of a pax extended header: ``"%d %s=%s\\n"``, the length counting the whole record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if not data[pos:].strip(b"\x00"):
            break
        space = data.find(b" ", pos, pos + 21)
        if space < 0:
            raise ValueError("a pax record without a length")
        length = int(data[pos:space])
        record = data[pos : pos + length]
        if length <= space - pos + 1 or len(record) != length or not record.endswith(b"\n"):
            raise ValueError("a pax record of the wrong length")
        key, sep, value = record[space - pos + 1 : -1].partition(b"=")
        if not sep:
            raise ValueError("a pax record without '='")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _member_name(name: str, where: str) -> tuple[str, ...]:
    """The parts of a member name, refused unless relative, normalised and inside the bundle."""
    if not name or "\x00" in name:
        raise TapeError(f"{where}: a member has an empty name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise TapeError(f"{where}: member {name!r} has an absolute path; a bundle holds relative names only")
    if len(name) > _MAX_NAME:
        raise TapeError(f"{where}: member name {name[:60]!r}… is longer than {_MAX_NAME} characters")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise TapeError(f"{where}: member {name!r} points outside the bundle ('..'); refused")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise TapeError(f"{where}: member name {name!r} is not UTF-8") from None
    return parts


def _extract(path: Path, dest: Path, limits: BundleLimits) -> None:
    """Extract the tar ``path`` into the empty directory ``dest``, member by member.

    Only regular files and directories are extracted, under names that are
    relative, normalised and unique; links, devices, FIFOs and sparse files
    are refused, so nothing can be written outside ``dest`` (there is no link
    to follow: none is ever created). Sizes are checked against the limits
    from each header before anything is written, and counted while copying.
    """
    try:
        size = path.stat().st_size
        raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise TapeError(f"cannot open bundle {path}: {exc.strerror or exc}") from None
    try:
        magic = raw.read(6)
        raw.seek(0)
        stream, compression = _decompressed(raw, magic)
        if compression is None:
            budget = limits.max_total_bytes
        else:
            budget = min(limits.max_total_bytes, max(limits.ratio_floor, int(limits.max_ratio * size)))
        counted = _Counted(stream, budget)
        try:
            _extract_members(counted, path, dest, limits, budget, compression)
        except _Inflated:
            raise TapeError(
                f"bundle {path} inflates past {budget} bytes while being read (at byte {counted.total - 1} of "
                + (f"its {compression} stream, {size} bytes on disk: at most {limits.max_ratio:g} times that"
                   if compression else "its tar stream") + "); refused as a decompression bomb"
            ) from None
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise TapeError(f"bundle {path} cannot be read (at byte {counted.total} of its tar stream): "
                            f"{exc}") from None
        finally:
            if stream is not raw:
                stream.close()
    finally:
        raw.close()


def _extract_members(src: _Counted, path: Path, dest: Path, limits: BundleLimits, budget: int,
                     compression: str | None) -> None:
    kinds: dict[tuple[str, ...], str] = {}
    members = 0
    declared = 0
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        offset = src.total
        block = src.read_exact(_BLOCK)
        if not block:
            return  # the end, without end-of-archive blocks: as tar itself accepts
        if len(block) < _BLOCK:
            raise TapeError(f"bundle {path} is truncated: {len(block)} bytes of a tar header at byte {offset}")
        if block == _ZERO_BLOCK:
            return  # the end of the archive
        where = f"bundle {path}, tar header at byte {offset}"
        stored = _number(block[148:156], "header checksum")
        unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
        signed = unsigned - 2 * (sum(b for b in block[:148] if b > 127) + sum(b for b in block[156:] if b > 127))
        if stored not in (unsigned, signed):
            raise TapeError(f"{where}: header checksum mismatch; this is not a tar bundle, or it is damaged")
        kind = block[156:157]
        member_size = _number(block[124:136], "size")
        magic = block[257:263]
        if kind in (b"x", b"g", b"L", b"K"):
            if member_size > limits.max_header_bytes:
                raise TapeError(f"{where}: an extended header of {member_size} bytes "
                                f"(at most {limits.max_header_bytes})")
            data = src.read_exact(member_size)
            if len(data) < member_size:
                raise TapeError(f"{where}: truncated inside an extended header")
            src.skip(-member_size % _BLOCK)
            if kind == b"x":
                pax = _pax(data)
            elif kind == b"L":
                long_name = _text(data).decode("utf-8", "surrogateescape")
            continue  # b"g" (global) and b"K" (a link's long target) carry nothing we use
        name_bytes = _text(block[0:100])
        if magic == b"ustar\x00" and block[345:346] != b"\x00":
            name_bytes = _text(block[345:500]) + b"/" + name_bytes
        name = name_bytes.decode("utf-8", "surrogateescape")
        name = pax.get("path", long_name if long_name is not None else name)
        if "size" in pax:
            try:
                member_size = int(pax["size"])
            except ValueError:
                raise TapeError(f"{where}: a pax size {pax['size']!r} that is not a number") from None
        pax, long_name = {}, None
        if kind in _LINK_KINDS or kind not in (b"0", b"\x00", b"7", b"5"):
            what = _LINK_KINDS.get(kind, f"of tar type {kind!r}")
            link = _text(block[157:257]).decode("utf-8", "replace")
            detail = f" to {link!r}" if kind in (b"1", b"2") else ""
            raise TapeError(f"{where}: member {name!r} is {what}{detail}; a bundle holds only regular files "
                            "and directories, so it is refused")
        parts = _member_name(name, where)
        members += 1
        if members > limits.max_members:
            raise TapeError(f"bundle {path} has more than {limits.max_members} members; refused")
        is_dir = kind == b"5"
        if not parts:
            if is_dir:
                continue  # "./": the bundle's root
            raise TapeError(f"{where}: a file member has no name")
        key = "/".join(parts)
        if parts in kinds and not (is_dir and kinds[parts] == "dir"):
            raise TapeError(f"{where}: member {key!r} appears twice; refused (a later copy would replace the "
                            "one the manifest was checked against)")
        for i in range(1, len(parts)):
            if kinds.get(parts[:i]) == "file":
                raise TapeError(f"{where}: member {key!r} is inside {'/'.join(parts[:i])!r}, which is a file")
        if member_size > limits.max_member_bytes:
            raise TapeError(f"{where}: member {key!r} is {member_size} bytes, more than a bundle member may be "
                            f"({limits.max_member_bytes})")
        declared += member_size
        if declared > budget:
            bound = (f"{limits.max_ratio:g} times its {compression} size on disk" if compression
                     else f"{limits.max_total_bytes} bytes")
            raise TapeError(f"{where}: member {key!r} would make the bundle {declared} bytes, more than it may "
                            f"extract to ({bound}); refused as a decompression bomb")
        target = dest.joinpath(*parts)
        _make_parents(dest, parts[:-1] if not is_dir else parts, kinds)
        if is_dir:
            kinds[parts] = "dir"
            src.skip(member_size + (-member_size % _BLOCK))  # directories carry no data
            continue
        kinds[parts] = "file"
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise TapeError(f"{where}: cannot extract {key!r}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as out:
            left = member_size
            while left:
                chunk = src.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise TapeError(f"bundle {path} is truncated inside member {key!r} "
                                    f"({member_size - left} of {member_size} bytes)")
                out.write(chunk)
                left -= len(chunk)
        src.skip(-member_size % _BLOCK)


def _make_parents(dest: Path, parts: tuple[str, ...], kinds: dict[tuple[str, ...], str]) -> None:
    for i in range(1, len(parts) + 1):
        sub = parts[:i]
        if kinds.get(sub) == "dir":
            continue
        os.mkdir(dest.joinpath(*sub), 0o700)
        kinds[sub] = "dir"


def _check_tree(root: Path) -> None:
    """A bundle directory: regular files and directories only (a link or a FIFO in it is refused)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise TapeError(f"bundle {root}: {p.relative_to(root).as_posix()} is {kind}; a bundle holds only "
                                "regular files and directories")


@contextmanager
def open_bundle(path: str | Path, *, limits: BundleLimits = DEFAULT_LIMITS) -> Iterator[Path]:
    """The bundle as a directory: a tar (plain, gzip, bzip2, xz or zstd) is extracted to a temporary one.

    Extraction is done member by member under ``limits`` (see ``BundleLimits``
    and ``_extract``): nothing in the archive can write outside the
    temporary directory, or fill the disk or memory.
    """
    path = Path(path)
    if not path.exists():
        raise TapeError(f"bundle {path} does not exist")
    if path.is_dir():
        _check_tree(path)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="flox-bundle-") as tmp:
        _extract(path, Path(tmp), limits)
        yield Path(tmp)


def is_bundle(path: Path) -> bool:
    """A directory with a manifest, or a file (a tape is always a directory)."""
    return path.suffix == ".tar" or path.is_file() or (path / "manifest.json").exists()


@contextmanager
def tape_of(path: str | Path, *, limits: BundleLimits = DEFAULT_LIMITS) -> Iterator[Path]:
    """The tape directory of a tape, or of a bundle (a tar is extracted for the duration). No code runs."""
    path = Path(path)
    if not is_bundle(path):
        yield path
        return
    with open_bundle(path, limits=limits) as root:
        yield root / "tape"


@attrs.frozen
class Validation:
    ok: bool
    divergence: str | None
    warnings: list[str]
    result: ReplayResult


def _read_json(root: Path, rel: str) -> Any:
    try:
        return json.loads((root / rel).read_bytes())
    except FileNotFoundError:
        raise TapeError(f"bundle {root}: {rel} is missing") from None
    except (ValueError, RecursionError) as exc:
        raise TapeError(f"bundle {root}: {rel} is not valid JSON ({_flat(exc)})") from None
    except OSError as exc:
        raise TapeError(f"bundle {root}: cannot read {rel}: {exc.strerror or exc}") from None


def _flat(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _load_manifest(root: Path) -> dict[str, Any]:
    """``manifest.json``, with every field the replay uses checked for type (and names for safety)."""
    manifest = _read_json(root, "manifest.json")
    if not isinstance(manifest, dict):
        raise TapeError(f"bundle {root}: manifest.json is not a JSON object")
    version = manifest.get("bundle_format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise TapeError(f"bundle {root}: format version {version!r} is not supported "
                        f"(this flox-trio reads version {BUNDLE_FORMAT_VERSION})")

    def bad(what: str) -> TapeError:
        return TapeError(f"bundle {root}: manifest.json: {what}; the bundle is damaged or was not made by "
                         "flox-trio bundle pack")

    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise bad("'files' must map file names to sha256 digests")
    for rel in files:
        _checked_name(root, rel)
    for key in ("slots", "swaps"):
        entries = manifest.get(key)
        if not isinstance(entries, list):
            raise bad(f"{key!r} must be a list")
        for i, e in enumerate(entries):
            ints = ("slot", "at_market_event") if key == "swaps" else ("slot",)
            if not isinstance(e, dict):
                raise bad(f"{key}[{i}] must be an object")
            for f in ints:
                if type(e.get(f)) is not int or e[f] < 0:
                    raise bad(f"{key}[{i}].{f} must be an integer >= 0")
            if e.get("language") not in _EXT:
                raise bad(f"{key}[{i}].language must be one of {', '.join(_EXT)}, got {e.get('language')!r}")
            if not isinstance(e.get("spec"), str) or not isinstance(e.get("params"), dict):
                raise bad(f"{key}[{i}] needs a 'spec' string and a 'params' object")
            source = e.get("source")
            if not isinstance(source, str) or not source.startswith("strategies/") or source not in files:
                raise bad(f"{key}[{i}].source must name a file under strategies/ listed in 'files', got {source!r}")
    intervals = manifest.get("bar_intervals", [60.0])
    if not (isinstance(intervals, list) and all(
            isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < 1e9 for x in intervals)):
        raise bad("'bar_intervals' must be a list of positive numbers of seconds")
    return manifest


def _checked_name(root: Path, rel: str) -> Path:
    parts = tuple(p for p in rel.split("/") if p not in ("", "."))
    if (not parts or rel.startswith("/") or "\\" in rel or "\x00" in rel or ".." in parts
            or "/".join(parts) != rel):
        raise TapeError(f"bundle {root}: manifest.json lists {rel!r}, which is not a plain relative name "
                        "inside the bundle; refused")
    return root.joinpath(*parts)


def check_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Verify every file against the manifest.

    A missing file, a changed tape or expected output, or a tape file the
    manifest does not list is an error; a changed strategy source is a
    warning: replaying it is exactly how you see what the change does.
    """
    warnings = []
    files: dict[str, str] = manifest.get("files", {})
    for rel, digest in sorted(files.items()):
        p = _checked_name(root, rel)
        if not p.is_file() or p.is_symlink():
            raise TapeError(f"bundle {root}: {rel} is listed in the manifest but missing")
        actual = _sha256(p)
        if actual != digest:
            if rel.startswith("strategies/"):
                warnings.append(f"{rel} changed since the bundle was packed")
            else:
                raise TapeError(f"bundle {root}: {rel} does not match its manifest hash "
                                f"(expected {digest[:12]}…, found {actual[:12]}…); the bundle was altered")
    tape = root / "tape"
    if tape.is_dir():
        for p in sorted(tape.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel not in files:
                raise TapeError(f"bundle {root}: {rel} is in the bundle's tape but not in its manifest; "
                                "the bundle was altered")
    return warnings


def plan_from_bundle(root: Path, manifest: dict[str, Any]) -> ReplayPlan:
    def spec(entry: dict[str, Any]) -> RecordedStrategy:
        rel = entry["source"]
        try:
            source = _checked_name(root, rel).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise TapeError(f"bundle {root}: cannot read {rel}: {_flat(exc)}") from None
        return RecordedStrategy(entry["language"], source, entry["spec"], dict(entry["params"]))

    return ReplayPlan(
        [(e["slot"], spec(e)) for e in manifest["slots"]],
        [(e["slot"], e["at_market_event"], spec(e)) for e in manifest["swaps"]],
        executor_settings(manifest, f"bundle {root}"),
        tuple(manifest.get("bar_intervals", (60.0,))),
    )


def python_sources(manifest: dict[str, Any]) -> list[str]:
    """The bundle's Python strategy files: what validating it would run, outside any sandbox."""
    return sorted({e["source"] for key in ("slots", "swaps") for e in manifest[key] if e["language"] == "python"})


def validate_bundle(path: str | Path, *, trust: bool = False, progress: Callable[[int], None] | None = None,
                    limits: BundleLimits = DEFAULT_LIMITS) -> Validation:
    """Replay a bundle with its own strategy files and compare with its expected outputs.

    A bundle's Python strategies are code from whoever made the bundle, and
    replaying runs them with your permissions (Python has no sandbox): unless
    ``trust=True`` (``--trust`` on the command line), a bundle with Python
    strategies is refused with ``UntrustedBundleError`` naming the files,
    after its integrity is checked and before anything runs. JavaScript
    strategies run in their sandbox and need no trust. (``replay_tape`` on a
    tape you recorded yourself needs none either: its strategies are yours.)

    Raises:
        TapeError: the bundle is damaged, altered, or unsafe to extract.
        UntrustedBundleError: it holds Python code and ``trust`` is false.
    """
    with open_bundle(path, limits=limits) as root:
        manifest = _load_manifest(root)
        warnings = check_files(root, manifest)
        python = python_sources(manifest)
        if python and not trust:
            raise UntrustedBundleError(
                f"bundle {path} holds Python strategy code that replaying it would run unsandboxed with your "
                f"permissions ({', '.join(python)}); read it, then pass --trust (trust=True) to run it. "
                "JavaScript strategies run sandboxed and need no trust; a tape you recorded replays without it"
            )
        expected = _read_json(root, "expected.json")
        if not isinstance(expected, dict):
            raise TapeError(f"bundle {path}: expected.json is not a JSON object")
        result = replay_tape(root / "tape", plan=plan_from_bundle(root, manifest), progress=progress,
                             mode="simulate")
    try:
        divergence = first_divergence(expected, result.outputs)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TapeError(f"bundle {path}: expected.json does not hold replay outputs ({_flat(exc)})") from None
    return Validation(divergence is None, divergence, warnings, result)
