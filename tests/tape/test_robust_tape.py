"""Crafted and damaged tapes: bounded memory, damage told apart from a torn tail, always a TapeError.

Each case is a file someone could hand you: a zstd frame that declares (or
inflates to) gigabytes, a length field rewritten with a valid header
checksum, msgpack nested deeper than any decoder recurses, random byte
damage. None may take the reader's memory, end in anything but a
``TapeError`` naming the segment and the byte offset, or be read as a
torn tail (which silently drops what follows).
"""

from __future__ import annotations

import itertools
import re
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import msgspec
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.tape import TapeReader, TapeWriter, tape_info
from flox_trio.tape import _writer as tape_writer
from flox_trio.tape._format import (
    FLAG_RECORDS,
    FLAG_ZSTD,
    FRAME_HEADER,
    FRAME_MARKER,
    MAX_READ_FRAME,
    SEGMENT_HEADER,
    TAG_EVENTS,
    frame_header,
)

from .conftest import make_trades

SEG0 = "seg-000000.tape"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _tape(path: Path, frames: int, per_frame: int = 10, compression: str | None = None) -> list[flox.Trade]:
    events = make_trades(frames * per_frame)
    with TapeWriter(path, compression=compression, flush_bytes=1 << 30, flush_interval_s=3600) as w:
        for i in range(frames):
            w.write_events(i * per_frame, events[i * per_frame : (i + 1) * per_frame])
            w.flush()
    return events


def _frames(seg: Path) -> list[tuple[int, int]]:
    data = seg.read_bytes()
    body_len = SEGMENT_HEADER.unpack_from(data, 0)[3]
    pos = SEGMENT_HEADER.size + body_len
    out = []
    while pos < len(data):
        plen = FRAME_HEADER.unpack_from(data, pos)[0]
        out.append((pos, FRAME_HEADER.size + plen))
        pos += FRAME_HEADER.size + plen
    return out


def _with_frame(seg: Path, payload: bytes, flags: int) -> int:
    """Replace every frame of ``seg`` by one frame of ``payload``; return its offset."""
    off = _frames(seg)[0][0]
    data = seg.read_bytes()[:off]
    seg.write_bytes(data + frame_header(payload, flags) + payload)
    return off


def _records_payload(n: int = 3) -> bytes:
    return msgspec.msgpack.encode([(TAG_EVENTS, 0, ((0, make_trades(n)),))])


def _zstd_frame(content: bytes, *, declared: int | None, rle_blocks: int = 0) -> bytes:
    """A hand-built zstd frame: optional declared size, ``rle_blocks`` 128 KiB zero blocks, then ``content`` raw."""
    window = bytes([0x58])  # 2 MiB window; Single_Segment off, so the window byte is present
    if declared is None:
        head = ZSTD_MAGIC + bytes([0x00]) + window
    else:
        head = ZSTD_MAGIC + bytes([0xC0]) + window + declared.to_bytes(8, "little")
    blocks = bytearray()
    rle = (1 << 1) | ((128 * 1024) << 3)  # not last, type RLE, regenerates 128 KiB
    for _ in range(rle_blocks):
        blocks += rle.to_bytes(3, "little") + b"\x00"
    raw_last = 1 | (0 << 1) | (len(content) << 3)  # last, type raw
    blocks += raw_last.to_bytes(3, "little") + content
    return head + bytes(blocks)


# --- zstd: bounded memory ---------------------------------------------------------------------


def test_a_frame_declaring_gigabytes_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """A 6 GiB declared content size: a TapeError at once, even with 1.5 GiB of address space.

    Before, the reader allocated what the frame declared: 1 GB of RSS without
    a limit, an uncaught MemoryError under one.
    """
    _tape(tmp_path / "t", frames=1)
    seg = tmp_path / "t" / SEG0
    # The content that follows really is zeros (RLE blocks), as in the file that was reported.
    frame = _zstd_frame(_records_payload(), declared=6 << 30, rle_blocks=64)
    off = _with_frame(seg, frame, FLAG_ZSTD)
    script = textwrap.dedent(f"""
        import resource, sys
        import flox_trio as flox
        from flox_trio.tape import TapeReader
        limit = 1536 << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            list(TapeReader({str(tmp_path / "t")!r}))
        except flox.TapeError as exc:
            print("TapeError:", exc)
            sys.exit(0)
        print("no error")
        sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SEG0} at byte {off}: it declares {6 << 30} bytes decompressed" in done.stdout


def test_a_frame_without_a_declared_size_is_read_within_the_cap(tmp_path: Path) -> None:
    """A frame that declares no size is read (in bounded steps); one that inflates past the cap is refused."""
    events = _tape(tmp_path / "ok", frames=1, per_frame=3)
    plain = zstandard.ZstdCompressor(write_content_size=False).compress(_records_payload())
    assert zstandard.frame_content_size(plain) == -1
    _with_frame(tmp_path / "ok" / SEG0, plain, FLAG_ZSTD)
    assert list(TapeReader(tmp_path / "ok").iter_events()) == events

    _tape(tmp_path / "bomb", frames=1)
    blocks = MAX_READ_FRAME // (128 * 1024) + 1
    bomb = _zstd_frame(_records_payload(), declared=None, rle_blocks=blocks)
    assert len(bomb) < 16 * 1024  # a few KiB on disk for more than 256 MiB of content
    off = _with_frame(tmp_path / "bomb" / SEG0, bomb, FLAG_ZSTD)
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {off}: it decompresses to more than"):
        list(TapeReader(tmp_path / "bomb"))


def test_a_frame_that_is_not_zstd_is_a_tape_error(tmp_path: Path) -> None:
    _tape(tmp_path, frames=1)
    off = _with_frame(tmp_path / SEG0, b"not zstd at all", FLAG_ZSTD)
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {off} does not decompress"):
        list(TapeReader(tmp_path))


# --- lengths: damage, not a torn tail -------------------------------------------------------------


def _set_length(seg: Path, off: int, plen: int) -> None:
    """Rewrite a frame's length and recompute its header checksum, as a crafted file would."""
    data = bytearray(seg.read_bytes())
    _plen, flags, marker, pcrc, _hcrc = FRAME_HEADER.unpack_from(data, off)
    head = struct.pack("<IHHI", plen, flags, marker, pcrc)
    data[off : off + FRAME_HEADER.size] = head + zlib.crc32(head).to_bytes(4, "little")
    seg.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_crafted_4gib_length_after_the_first_frame_is_damage_not_a_torn_tail(
    tmp_path: Path, compression: str | None
) -> None:
    """17 frames, the second claims 4 GiB: before, 16 of 17 were dropped as a 'torn tail'."""
    events = _tape(tmp_path, frames=17, compression=compression)
    seg = tmp_path / SEG0
    off = _frames(seg)[1][0]
    _set_length(seg, off, 0xFFFF_FFFF)
    reader = TapeReader(tmp_path)
    got: list[object] = []
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {off}: its header claims 4294967295 bytes"):
        got.extend(reader.iter_events())  # keeps what came before the error
    assert got == events[:10]
    assert reader.torn_tail is None
    with pytest.raises(flox.TapeError, match=rf"at byte {off}"):
        tape_info(tmp_path)


def test_a_plausible_length_past_the_end_with_whole_frames_after_it_is_damage(tmp_path: Path) -> None:
    _tape(tmp_path, frames=5)
    seg = tmp_path / SEG0
    frames = _frames(seg)
    off = frames[1][0]
    after = frames[2][0]
    _set_length(seg, off, seg.stat().st_size)  # within the frame cap, past the end of the file
    with pytest.raises(flox.TapeError, match=rf"at byte {off}: .* a whole frame follows at byte {after}"):
        list(TapeReader(tmp_path))


def test_a_long_length_in_the_very_last_frame_is_still_a_torn_tail(tmp_path: Path) -> None:
    """What a crash leaves (the last frame's payload cut short, nothing after) stays a torn tail."""
    events = _tape(tmp_path, frames=5)
    seg = tmp_path / SEG0
    last_off, last_len = _frames(seg)[-1]
    seg.write_bytes(seg.read_bytes()[: last_off + last_len - 3])
    reader = TapeReader(tmp_path)
    assert list(reader.iter_events()) == events[:40]
    assert reader.torn_tail is not None and reader.torn_tail.offset == last_off


# --- records: deep nesting ----------------------------------------------------------------------


def test_records_nested_deeper_than_the_decoder_recurses_are_a_tape_error(tmp_path: Path) -> None:
    """A slot record whose params nest 200,000 deep: a TapeError, not a RecursionError."""
    _tape(tmp_path, frames=1)
    deep = b"\x91" * 200_000 + b"\xc0"
    # [[3, 0, 0, "add", "h", "python", {"a": [[[...]]]}, None, None]]
    payload = (b"\x91\x99\x03\x00\x00" + msgspec.msgpack.encode("add") + msgspec.msgpack.encode("h")
               + msgspec.msgpack.encode("python") + b"\x81\xa1a" + deep + b"\xc0\xc0")
    off = _with_frame(tmp_path / SEG0, payload, FLAG_RECORDS)  # a slot record's frame, flagged as the writer does
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {off} holds records this flox-trio cannot decode"):
        TapeReader(tmp_path).slot_records()
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {off} holds records this flox-trio cannot decode"):
        list(TapeReader(tmp_path))


def test_a_header_map_nested_too_deep_is_a_tape_error(tmp_path: Path) -> None:
    _tape(tmp_path, frames=1)
    seg = tmp_path / SEG0
    data = seg.read_bytes()
    body_len = SEGMENT_HEADER.unpack_from(data, 0)[3]
    rest = data[SEGMENT_HEADER.size + body_len :]
    body = (b"\x86" + msgspec.msgpack.encode("tape_id") + msgspec.msgpack.encode("x")
            + msgspec.msgpack.encode("segment") + b"\x00" + msgspec.msgpack.encode("created_ns") + b"\x00"
            + msgspec.msgpack.encode("flox_trio_version") + msgspec.msgpack.encode("0")
            + msgspec.msgpack.encode("compression") + b"\xc0"
            + msgspec.msgpack.encode("meta") + b"\x81\xa1a" + b"\x91" * 200_000 + b"\xc0")
    fixed = SEGMENT_HEADER.pack(b"FLXTAPE\x00", 2, 0, len(body), zlib.crc32(body))
    seg.write_bytes(fixed + body + rest)
    with pytest.raises(flox.TapeError, match=rf"garbled header at byte {SEGMENT_HEADER.size}"):
        TapeReader(tmp_path)


# --- any damage ---------------------------------------------------------------------------------

_DAMAGE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_DAMAGE
@given(data=st.data(), compression=st.sampled_from([None, "zstd"]))
def test_any_damage_is_a_tape_error_with_a_byte_offset_or_a_torn_tail(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, compression: str | None
) -> None:
    """Overwrite, cut or splice anywhere: the reader ends normally, at a torn tail, or with a TapeError at a byte."""
    path = tmp_path_factory.mktemp("damaged")
    events = _tape(path, frames=6, compression=compression)
    seg = path / SEG0
    raw = bytearray(seg.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["overwrite", "truncate", "insert", "length"]))
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        if kind == "overwrite":
            raw[at : at + 4] = data.draw(st.binary(min_size=1, max_size=4))
        elif kind == "truncate":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=32))
        else:
            frames = [o for o, _ in _frames_of(bytes(raw))]
            if frames:
                off = data.draw(st.sampled_from(frames))
                seg.write_bytes(bytes(raw))
                _set_length(seg, off, data.draw(st.sampled_from([0, 1, 0xFFFF_FFFF, len(raw),
                                                                 MAX_READ_FRAME + 1])))
                raw = bytearray(seg.read_bytes())
    seg.write_bytes(bytes(raw))
    outcome: flox.TapeError | list[object]
    try:
        outcome = list(TapeReader(path).iter_events())
        tape_info(path)
    except flox.TapeError as exc:
        outcome = exc
    if isinstance(outcome, flox.TapeError):
        assert re.search(r"\bat byte \d+", str(outcome)), str(outcome)
    else:
        assert len(outcome) <= len(events)


def _frames_of(data: bytes) -> list[tuple[int, int]]:
    try:
        body_len = SEGMENT_HEADER.unpack_from(data, 0)[3]
    except struct.error:
        return []
    pos = SEGMENT_HEADER.size + body_len
    out = []
    while pos + FRAME_HEADER.size <= len(data):
        plen, _, marker, _, _ = FRAME_HEADER.unpack_from(data, pos)
        if marker != FRAME_MARKER:
            break
        out.append((pos, FRAME_HEADER.size + plen))
        pos += FRAME_HEADER.size + plen
    return out


# --- the writer keeps frames within what the reader accepts --------------------------------------


def test_a_batch_larger_than_a_frame_is_split_and_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 64 KiB frame cap, a 4,000-event batch lands in several frames and reads back whole, in order."""
    monkeypatch.setattr(tape_writer, "MAX_FRAME_BYTES", 64 * 1024)
    events = make_trades(4000)
    with TapeWriter(tmp_path, flush_bytes=1 << 30, flush_interval_s=3600) as w:
        w.write_events(0, events[:5])
        w.write_events(5, events[5:])
        w.write_slot(seq=4000, slot=0, action="add", hash="h", language="python", source="x" * 1000)
    seg = tmp_path / SEG0
    sizes = [n for _, n in _frames(seg)]
    assert len(sizes) > 3 and max(sizes) <= 64 * 1024 + FRAME_HEADER.size
    reader = TapeReader(tmp_path)
    assert list(reader.iter_events()) == events
    batches = list(reader.iter_batches())
    assert batches[0].seq == 0 and sum(len(b.events) for b in batches) == 4000
    assert all(b.seq + len(b.events) == n.seq for b, n in itertools.pairwise(batches))
    assert [r.source for r in reader.slot_records()] == ["x" * 1000]


def test_a_record_too_large_for_any_frame_is_refused_and_the_tape_stays_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tape_writer, "MAX_FRAME_BYTES", 64 * 1024)
    events = make_trades(10)
    with TapeWriter(tmp_path, flush_interval_s=3600) as w:
        w.write_events(0, events)
        with pytest.raises(flox.TapeError, match="more than a tape frame holds"):
            w.write_slot(seq=10, slot=0, action="add", hash="h", language="python", source="x" * 100_000)
        w.write_events(10, events)
    assert len(list(TapeReader(tmp_path).iter_events())) == 20
