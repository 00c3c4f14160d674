"""Damaged tapes: what is an error, what is a torn tail, and what each says."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import pytest

import flox_trio as flox
from flox_trio.tape import TapeReader, TapeWriter, tape_info
from flox_trio.tape._format import FRAME_HEADER, SEGMENT_HEADER

from .conftest import make_trades

SEG0 = "seg-000000.tape"



def _frame_offsets(seg: Path) -> list[tuple[int, int]]:
    """(offset, total length) of each frame in a segment, found by walking the layout."""
    data = seg.read_bytes()
    _, _, _, body_len, _ = SEGMENT_HEADER.unpack_from(data, 0)
    pos = SEGMENT_HEADER.size + body_len
    out = []
    while pos < len(data):
        plen = FRAME_HEADER.unpack_from(data, pos)[0]
        out.append((pos, FRAME_HEADER.size + plen))
        pos += FRAME_HEADER.size + plen
    return out


def _tape(path: Path, frames: int = 5, per_frame: int = 100, compression: str | None = None,
          segment_bytes: int = 1 << 26) -> list[flox.Trade]:
    events = make_trades(frames * per_frame)
    with TapeWriter(path, compression=compression, segment_bytes=segment_bytes, flush_bytes=1 << 30,
                    flush_interval_s=3600) as w:
        for i in range(frames):
            w.write_events(i * per_frame, events[i * per_frame : (i + 1) * per_frame])
            w.flush()
    return events


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize("where", ["payload", "header"])
def test_corrupt_middle_frame_names_segment_and_offset(tmp_path: Path, compression: str | None,
                                                       where: str) -> None:
    events = _tape(tmp_path, compression=compression)
    seg = tmp_path / SEG0
    offset, length = _frame_offsets(seg)[2]
    _flip(seg, offset + length // 2 if where == "payload" else offset + 1)
    reader = TapeReader(tmp_path)
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {offset}\b.*checksum") as info:
        list(reader)
    assert str(seg) in str(info.value)
    # The frames before the damage were readable on the way.
    got: list[flox.Trade] = []
    try:
        for ev in TapeReader(tmp_path).iter_events():
            got.append(ev)  # type: ignore[arg-type]
    except flox.TapeError:
        pass
    else:
        pytest.fail("reading on past a corrupt frame")
    assert got == events[:200]


def test_corrupt_frame_in_an_earlier_segment_is_an_error(tmp_path: Path) -> None:
    _tape(tmp_path, frames=4, segment_bytes=1)
    assert len(TapeReader(tmp_path).segments) == 5
    seg = tmp_path / "seg-000001.tape"
    offset, length = _frame_offsets(seg)[0]
    _flip(seg, offset + length - 1)
    with pytest.raises(flox.TapeError, match=r"seg-000001\.tape at byte \d+: payload checksum mismatch"):
        list(TapeReader(tmp_path))


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_torn_tail_reads_up_to_last_whole_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                compression: str | None) -> None:
    events = _tape(tmp_path, compression=compression)
    seg = tmp_path / SEG0
    frames = _frame_offsets(seg)
    last_off, last_len = frames[-1]
    full = seg.read_bytes()
    # Every cut inside the last frame: in its header, in its payload, one byte short.
    for cut in sorted({last_off + 1, last_off + FRAME_HEADER.size - 1, last_off + FRAME_HEADER.size,
                       last_off + last_len // 2, last_off + last_len - 1}):
        seg.write_bytes(full[:cut])
        caplog.clear()
        reader = TapeReader(tmp_path)
        with caplog.at_level(logging.WARNING, logger="flox_trio.tape"):
            got = list(reader.iter_events())
        assert got == events[:400], cut
        assert reader.torn_tail is not None
        assert reader.torn_tail.offset == last_off
        assert reader.torn_tail.dropped_bytes == cut - last_off
        assert reader.torn_tail.segment == seg
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert "torn tail" in warning.getMessage()
        assert f"{SEG0} at byte {last_off}" in warning.getMessage()
        assert tape_info(tmp_path).torn_tail is not None
    # A cut exactly at a frame boundary is a clean end.
    seg.write_bytes(full[:last_off])
    reader = TapeReader(tmp_path)
    assert len(list(reader.iter_events())) == 400
    assert reader.torn_tail is None


def test_zero_filled_tail_is_torn_not_corrupt(tmp_path: Path) -> None:
    # What a machine crash can leave: the file grew but the data never landed.
    events = _tape(tmp_path)
    seg = tmp_path / SEG0
    last_off, last_len = _frame_offsets(seg)[-1]
    data = bytearray(seg.read_bytes())
    data[last_off:] = bytes(last_len)
    seg.write_bytes(bytes(data))
    reader = TapeReader(tmp_path)
    assert list(reader.iter_events()) == events[:400]
    assert reader.torn_tail is not None


def test_garbage_in_the_last_frame_header_is_corruption(tmp_path: Path) -> None:
    _tape(tmp_path)
    seg = tmp_path / SEG0
    last_off, _ = _frame_offsets(seg)[-1]
    _flip(seg, last_off + 2)
    with pytest.raises(flox.TapeError, match="frame header checksum mismatch"):
        list(TapeReader(tmp_path))


def test_truncated_earlier_segment_is_an_error(tmp_path: Path) -> None:
    _tape(tmp_path, frames=3, segment_bytes=1)
    seg = tmp_path / "seg-000001.tape"
    seg.write_bytes(seg.read_bytes()[:-10])
    with pytest.raises(flox.TapeError, match=r"seg-000001\.tape is cut short at byte \d+ .* later segments follow"):
        list(TapeReader(tmp_path))


def test_torn_header_of_a_new_last_segment_is_a_torn_tail(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # The writer died right after rotating: the new segment has half a header.
    events = _tape(tmp_path, frames=3, segment_bytes=1)
    last = tmp_path / "seg-000003.tape"
    last.write_bytes(last.read_bytes()[:7])
    reader = TapeReader(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flox_trio.tape"):
        assert list(reader.iter_events()) == events
    assert reader.torn_tail is not None
    assert reader.torn_tail.segment == last
    assert "torn tail" in caplog.text


@pytest.mark.parametrize("keep", [0, 5, SEGMENT_HEADER.size, SEGMENT_HEADER.size + 3])
def test_truncated_or_missing_header_is_a_clear_error(tmp_path: Path, keep: int) -> None:
    _tape(tmp_path, frames=1)
    seg = tmp_path / SEG0
    seg.write_bytes(seg.read_bytes()[:keep])
    with pytest.raises(flox.TapeError, match=r"header is missing|truncated header"):
        TapeReader(tmp_path)


def test_garbled_header_is_a_clear_error(tmp_path: Path) -> None:
    _tape(tmp_path, frames=1)
    seg = tmp_path / SEG0
    _flip(seg, 0)
    with pytest.raises(flox.TapeError, match="not a flox-trio tape segment: bad magic"):
        TapeReader(tmp_path)
    _flip(seg, 0)
    _flip(seg, SEGMENT_HEADER.size + 4)  # inside the header map
    with pytest.raises(flox.TapeError, match="garbled header: checksum mismatch"):
        TapeReader(tmp_path)


@pytest.mark.parametrize(("version", "message"), [
    (5, "format version 5, newer than this flox-trio reads .version 4.: upgrade flox-trio"),
    (1, "format version 1, written by an older flox-trio"),
    (0, "unsupported format version 0"),
])
def test_unsupported_version_is_rejected(tmp_path: Path, version: int, message: str) -> None:
    _tape(tmp_path, frames=1)
    seg = tmp_path / SEG0
    data = bytearray(seg.read_bytes())
    struct.pack_into("<H", data, 8, version)
    seg.write_bytes(bytes(data))
    with pytest.raises(flox.TapeError, match=message):
        TapeReader(tmp_path)


def test_unknown_frame_flags_are_rejected(tmp_path: Path) -> None:
    _tape(tmp_path, frames=2)
    seg = tmp_path / SEG0
    off, _ = _frame_offsets(seg)[0]
    data = bytearray(seg.read_bytes())
    plen, _flags, marker, pcrc, _ = FRAME_HEADER.unpack_from(data, off)
    head = struct.pack("<IHHI", plen, 0x80, marker, pcrc)
    data[off : off + FRAME_HEADER.size] = head + zlib.crc32(head).to_bytes(4, "little")
    seg.write_bytes(bytes(data))
    with pytest.raises(flox.TapeError, match=r"flags 0x80 .* newer version"):
        list(TapeReader(tmp_path))


def test_not_a_tape(tmp_path: Path) -> None:
    with pytest.raises(flox.TapeError, match="does not exist"):
        TapeReader(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(flox.TapeError, match="is not a tape"):
        TapeReader(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(flox.TapeError, match="no segment files"):
        TapeReader(tmp_path / "empty")


def test_missing_or_foreign_segments(tmp_path: Path) -> None:
    _tape(tmp_path / "a", frames=3, segment_bytes=1)
    (tmp_path / "a" / "seg-000001.tape").unlink()
    with pytest.raises(flox.TapeError, match="missing segment 1"):
        TapeReader(tmp_path / "a")
    _tape(tmp_path / "b", frames=3, segment_bytes=1)
    _tape(tmp_path / "c", frames=3, segment_bytes=1)
    (tmp_path / "b" / "seg-000002.tape").write_bytes((tmp_path / "c" / "seg-000002.tape").read_bytes())
    with pytest.raises(flox.TapeError, match="belongs to another tape"):
        list(TapeReader(tmp_path / "b"))
    c = tmp_path / "c"
    (c / "seg-000001.tape").rename(c / "tmp")
    (c / "seg-000002.tape").rename(c / "seg-000001.tape")
    (c / "tmp").rename(c / "seg-000002.tape")
    with pytest.raises(flox.TapeError, match=r"seg-000001\.tape says it is segment 2"):
        list(TapeReader(tmp_path / "c"))


def test_valid_checksum_but_undecodable_records(tmp_path: Path) -> None:
    # A frame whose checksums hold but whose records do not parse (a writer bug,
    # or an event code from the future) is an error naming where.
    _tape(tmp_path, frames=1)
    seg = tmp_path / SEG0
    off, _ = _frame_offsets(seg)[0]
    data = bytearray(seg.read_bytes())
    payload = b"\x91\x93\x01\x00\x91\x92\x09\x90"  # [[1, 0, [[9, []]]]]: event code 9
    head = struct.pack("<IHHI", len(payload), 0, 0x5446, zlib.crc32(payload))
    data[off:] = head + zlib.crc32(head).to_bytes(4, "little") + payload
    seg.write_bytes(bytes(data))
    with pytest.raises(flox.TapeError, match=rf"{SEG0} at byte {off} holds records this flox-trio cannot decode"):
        list(TapeReader(tmp_path))
