"""Bundles someone else made: extraction that cannot escape or explode, and Python code only when trusted.

Every archive here is built with the standard ``tarfile`` writer (or by hand
where tarfile refuses to write the attack) and opened for real, in
tmp_path: temporary extraction directories are made there too
(``tempfile.tempdir``), so "nothing outside" can be checked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio._loader import strategy_class
from flox_trio.feeds import random_walk
from flox_trio.replay import (
    BundleLimits,
    UntrustedBundleError,
    open_bundle,
    pack_bundle,
    replay_tape,
    tape_of,
    validate_bundle,
)

STRATEGY = """
import flox_trio as flox

class Every(flox.Strategy):
    def __init__(self, symbols, n=40, **params):
        super().__init__(symbols, n=n, **params)
        self.n = n
        self.seen = 0

    def on_trade(self, ctx, trade):
        self.seen += 1
        if self.seen % self.n == 0:
            ctx.market_buy("0.1") if self.seen % (2 * self.n) else ctx.market_sell("0.1")
"""


async def _record(tape: Path, src: Path) -> None:
    every = strategy_class(src, "Every")
    feed = flox.feeds.ListFeed(random_walk(400, seed=11), batch_size=16, pace=True)
    async with flox.open_runner(feed, flox.PaperExecutor(latency=0.01), tape=str(tape)) as runner:
        runner.add_strategy(every(["BTCUSDT"], n=40))


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tape of a Python strategy and its bundle, as a directory."""
    root = tmp_path_factory.mktemp("packed")
    src = root / "every.py"
    src.write_text(STRATEGY)
    trio.run(_record, root / "run.tape", src, clock=trio.testing.MockClock(autojump_threshold=0))
    return pack_bundle(root / "run.tape", root / "bundle")


@pytest.fixture
def tmpdir_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary directories (where bundles are extracted) under tmp_path/t."""
    t = tmp_path / "t"
    t.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(t))
    return t


def _tar_of(bundle: Path, out: Path, extra: Any = None, mode: str = "w") -> Path:
    """``bundle``'s files as a tar, then whatever ``extra(tar)`` adds."""
    with tarfile.open(out, mode) as tar:
        for p in sorted(bundle.rglob("*")):
            tar.add(p, arcname=p.relative_to(bundle).as_posix(), recursive=False)
        if extra is not None:
            extra(tar)
    return out


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
         **fields: Any) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    for k, v in fields.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def _everything_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}


# --- CVE-2025-4517: the link bypass of tarfile's "data" filter ---------------------------------------


def _cve_2025_4517(tar: tarfile.TarFile) -> None:
    """The published technique: symlinks through a chain of directories whose resolved path exceeds
    PATH_MAX, so ``os.path.realpath`` stops resolving and the filter's "inside" check passes; then a hard
    link through it, and a regular file written through the hard link, outside."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    path = ""
    for step in steps:
        _add(tar, os.path.join(path, comp), tarfile.DIRTYPE)
        _add(tar, os.path.join(path, step), tarfile.SYMTYPE, linkname=comp)
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    _add(tar, linkpath, tarfile.SYMTYPE, linkname="../" * len(steps))
    _add(tar, "escape", tarfile.SYMTYPE, linkname=linkpath + "/..")
    _add(tar, "flaglink", tarfile.LNKTYPE, linkname="escape/flag")
    _add(tar, "flaglink", data=b"written outside the bundle\n")


def test_the_cve_2025_4517_link_bypass_is_refused_and_writes_nothing_outside(
    packed: Path, tmp_path: Path, tmpdir_here: Path
) -> None:
    """Before: extracted with filter="data", ``flag`` appeared next to the extraction directory, and
    ``validate`` still said identical (the manifest only checks the files it lists)."""
    evil = _tar_of(packed, tmp_path / "evil.tar", _cve_2025_4517)
    with pytest.raises(flox.TapeError, match=r"member '.*' is a symbolic link to '.*'; a bundle holds only"), \
            open_bundle(evil):
        pass
    assert _everything_under(tmpdir_here) == set()
    with pytest.raises(flox.TapeError, match="is a symbolic link"):
        validate_bundle(evil, trust=True)
    assert _everything_under(tmpdir_here) == set()


# --- members that are not plain files, or not inside ---------------------------------------------------


MEMBERS = [
        ("symlink-inside", lambda t: _add(t, "tape/link", tarfile.SYMTYPE, linkname="seg-000000.tape"),
         "member 'tape/link' is a symbolic link to 'seg-000000.tape'"),
        ("symlink-out", lambda t: _add(t, "out", tarfile.SYMTYPE, linkname="/etc"), "is a symbolic link to '/etc'"),
        ("hardlink", lambda t: _add(t, "copy", tarfile.LNKTYPE, linkname="manifest.json"),
         "member 'copy' is a hard link to 'manifest.json'"),
        ("fifo", lambda t: _add(t, "pipe", tarfile.FIFOTYPE), "member 'pipe' is a named pipe"),
        ("chardev", lambda t: _add(t, "null", tarfile.CHRTYPE, devmajor=1, devminor=3),
         "member 'null' is a character device"),
        ("blockdev", lambda t: _add(t, "disk", tarfile.BLKTYPE), "member 'disk' is a block device"),
        ("absolute", lambda t: _add(t, "/tmp/flox-abs-escape", data=b"x"), "has an absolute path"),
        ("dotdot", lambda t: _add(t, "strategies/../../escape.txt", data=b"x"), "points outside the bundle"),
        ("duplicate", lambda t: _add(t, "manifest.json", data=b"{}"), "member 'manifest.json' appears twice"),
        ("inside-a-file", lambda t: _add(t, "expected.json/x", data=b"x"), "is inside 'expected.json', which is a file"),
]


@pytest.mark.parametrize(("name", "add", "fragment"), MEMBERS, ids=[m[0] for m in MEMBERS])
def test_a_member_that_is_not_a_plain_file_inside_the_bundle_is_refused(
    packed: Path, tmp_path: Path, tmpdir_here: Path, name: str, add: Any, fragment: str
) -> None:
    evil = _tar_of(packed, tmp_path / f"{name}.tar", add)
    with pytest.raises(flox.TapeError, match=r"tar header at byte \d+") as info, open_bundle(evil):
        pass
    assert fragment in str(info.value)
    assert _everything_under(tmpdir_here) == set()
    assert not Path("/tmp/flox-abs-escape").exists() and not (tmp_path / "escape.txt").exists()


# --- decompression bombs and caps ------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.n = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def _bomb(out: Path, size: int, mode: str = "w:gz") -> Path:
    with tarfile.open(out, mode) as tar:
        info = tarfile.TarInfo("tape/seg-000000.tape")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return out


def test_a_gzip_bomb_is_refused_from_its_header_before_anything_is_written(tmp_path: Path, tmpdir_here: Path) -> None:
    """200 KiB of gzip that inflates to 200 MiB: before, all of it was written to the temporary directory."""
    bomb = _bomb(tmp_path / "bomb.tar.gz", 200 << 20)
    assert bomb.stat().st_size < 300_000
    with pytest.raises(flox.TapeError, match=r"would make the bundle 209715200 bytes, more than it may extract to "
                       r"\(100 times its gzip size on disk\); refused as a decompression bomb"), \
            open_bundle(bomb):
        pass
    assert _everything_under(tmpdir_here) == set()


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_the_ratio_guard_counts_what_is_read_not_only_what_headers_say(tmp_path: Path, mode: str) -> None:
    """Thousands of metadata headers (no data at all) inflate the stream too: refused while reading."""
    out = tmp_path / f"meta.{mode[2:]}"
    with tarfile.open(out, mode, format=tarfile.PAX_FORMAT) as tar:
        for i in range(400):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            info.pax_headers = {"comment": "z" * 60_000}
            tar.addfile(info)
    limits = BundleLimits(ratio_floor=1 << 20)
    with pytest.raises(flox.TapeError, match=r"inflates past \d+ bytes while being read .* decompression bomb"), \
            open_bundle(out, limits=limits):
        pass


def test_member_count_and_size_caps(tmp_path: Path) -> None:
    many = tmp_path / "many.tar"
    with tarfile.open(many, "w") as tar:
        for i in range(60):
            _add(tar, f"strategies/{i}.py", data=b"x")
    with pytest.raises(flox.TapeError, match=r"has more than 50 members"), \
            open_bundle(many, limits=BundleLimits(max_members=50)):
        pass
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        _add(tar, "expected.json", data=b"x" * 2000)
    with pytest.raises(flox.TapeError, match=r"member 'expected\.json' is 2000 bytes, more than a bundle member may be"), \
            open_bundle(big, limits=BundleLimits(max_member_bytes=1000)):
        pass
    with pytest.raises(flox.TapeError, match=r"more than it may extract to .1000 bytes."), \
            open_bundle(big, limits=BundleLimits(max_total_bytes=1000)):
        pass
    header = tmp_path / "header.tar"
    with tarfile.open(header, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "c" * 5000}
        tar.addfile(info)
    with pytest.raises(flox.TapeError, match=r"an extended header of \d+ bytes \(at most 4096\)"), \
            open_bundle(header, limits=BundleLimits(max_header_bytes=4096)):
        pass


@pytest.mark.parametrize("data", [b"not a tar at all", b"\x1f\x8b garbage gzip", bytes(100), b"x" * 512 * 3])
def test_garbage_is_a_tape_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.tar"
    path.write_bytes(data)
    with pytest.raises(flox.TapeError, match=r"junk\.tar"):
        validate_bundle(path, trust=True)


def test_a_truncated_bundle_is_a_tape_error(packed: Path, tmp_path: Path) -> None:
    whole_tar = _tar_of(packed, tmp_path / "whole.tar")
    with tarfile.open(whole_tar) as tar:
        seg = tar.getmember("tape/seg-000000.tape")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole_tar.read_bytes()[: seg.offset_data + seg.size // 2])
    with pytest.raises(flox.TapeError, match="truncated"), open_bundle(cut):
        pass


# --- compressed bundles of our own still work -----------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.xz"])
def test_packed_bundles_extract_and_validate(packed: Path, tmp_path: Path, suffix: str) -> None:
    out = pack_bundle(packed / "tape", tmp_path / f"b{suffix}")
    validation = validate_bundle(out, trust=True)
    assert validation.ok, validation.divergence
    with tape_of(out) as tape:
        assert (tape / "seg-000000.tape").is_file()
    with pytest.raises(flox.TapeError, match="already exists"):
        pack_bundle(packed / "tape", out)  # never overwritten


# --- directory bundles and their manifest ---------------------------------------------------------------


def _copy(packed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(packed, out)
    return out


def test_a_directory_bundle_with_a_link_in_it_is_refused(packed: Path, tmp_path: Path) -> None:
    bundle = _copy(packed, tmp_path)
    seg = bundle / "tape" / "seg-000000.tape"
    outside = tmp_path / "outside.tape"
    seg.rename(outside)
    seg.symlink_to(outside)  # same bytes, same hash: before, it validated
    with pytest.raises(flox.TapeError, match=r"tape/seg-000000\.tape is a symbolic link"):
        validate_bundle(bundle, trust=True)


def test_a_fifo_in_a_directory_bundle_is_refused_not_read(packed: Path, tmp_path: Path) -> None:
    bundle = _copy(packed, tmp_path)
    (bundle / "expected.json").unlink()
    os.mkfifo(bundle / "expected.json")
    with pytest.raises(flox.TapeError, match=r"expected\.json is not a regular file"):
        validate_bundle(bundle, trust=True)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: m["files"].update({"../../../etc/hostname": "0" * 64}), "not a plain relative name"),  # dotdot
        (lambda m: m["files"].update({"/etc/hostname": "0" * 64}), "not a plain relative name"),
        (lambda m: m["slots"][0].update(source="../every.py"), "must name a file under strategies/"),
        (lambda m: m["slots"][0].update(language="ruby"), "language must be one of python, javascript"),
        (lambda m: m["slots"][0].update(slot="0"), "slots[0].slot must be an integer"),
        (lambda m: m.update(slots={}), "'slots' must be a list"),
        (lambda m: m.update(bar_intervals=[float("nan")]), "'bar_intervals' must be a list of positive numbers"),
    ],
)
def test_a_manifest_that_points_outside_or_is_malformed_is_refused(
    packed: Path, tmp_path: Path, edit: Any, fragment: str
) -> None:
    bundle = _copy(packed, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(flox.TapeError) as info:
        validate_bundle(bundle, trust=True)
    assert fragment in str(info.value)


def test_a_tape_segment_the_manifest_does_not_list_is_refused(packed: Path, tmp_path: Path) -> None:
    bundle = _copy(packed, tmp_path)
    shutil.copyfile(bundle / "tape" / "seg-000000.tape", bundle / "tape" / "seg-000001.tape")
    with pytest.raises(flox.TapeError, match=r"tape/seg-000001\.tape is in the bundle's tape but not in its manifest"):
        validate_bundle(bundle, trust=True)


def test_nested_json_in_the_manifest_is_a_tape_error(packed: Path, tmp_path: Path) -> None:
    bundle = _copy(packed, tmp_path)
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(flox.TapeError, match=r"manifest\.json is not valid JSON"):
        validate_bundle(bundle, trust=True)


# --- trust ----------------------------------------------------------------------------------------


def test_validating_python_code_needs_trust_and_nothing_runs_without_it(packed: Path, tmp_path: Path) -> None:
    bundle = _copy(packed, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    source = manifest["slots"][0]["source"]
    marker = tmp_path / "it-ran"
    text = (bundle / source).read_text()
    assert "        self.seen = 0\n" in text
    (bundle / source).write_text(text.replace("        self.seen = 0\n",
                                              f"        self.seen = 0\n        open({str(marker)!r}, 'w').close()\n"))
    with pytest.raises(UntrustedBundleError) as info:
        validate_bundle(bundle)
    message = str(info.value)
    assert f"holds Python strategy code that replaying it would run unsandboxed with your permissions ({source})" \
        in message
    assert "--trust (trust=True)" in message and "JavaScript strategies run sandboxed" in message
    assert "\n" not in message
    assert not marker.exists()
    validation = validate_bundle(bundle, trust=True)
    assert marker.exists() and validation.warnings == [f"{source} changed since the bundle was packed"]


def test_a_plain_tape_of_your_own_replays_without_trust(packed: Path) -> None:
    result = replay_tape(packed / "tape")
    assert result.events == 400 and len(result.outputs["orders"]) > 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_the_command_line_asks_for_trust_in_one_line(packed: Path, tmp_path: Path) -> None:
    tar = _tar_of(packed, tmp_path / "b.tar")
    for args in (("bundle", "validate", str(tar)), ("replay", str(tar))):
        done = _cli(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(f"flox-trio {args[0]}: bundle {tar} holds Python strategy code")
        assert "pass --trust" in lines[0]
        trusted = _cli(*args, "--trust", cwd=tmp_path)
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert "identical" in trusted.stdout
    plain = _cli("replay", str(packed / "tape"), cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr


def test_the_command_line_reports_a_refused_member_in_one_line(packed: Path, tmp_path: Path) -> None:
    evil = _tar_of(packed, tmp_path / "evil.tar", _cve_2025_4517)
    done = _cli("bundle", "validate", str(evil), "--trust", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "is a symbolic link" in lines[0], done.stderr


@pytest.fixture(autouse=True)
def _no_escape() -> Iterator[None]:
    yield
    assert not Path("/tmp/flox-abs-escape").exists()
