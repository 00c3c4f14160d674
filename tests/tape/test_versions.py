"""Tapes of every format version this flox-trio reads, read the same way.

``data/v2-zstd`` and ``data/v2-plain`` were written by flox-trio's format-2
writer (trades as msgpack maps keyed by field name) from ``write_session``
below, ``data/v3-*`` by the format-3 writer (trades as arrays); the current
writer (format 4) also flags the frames that hold records other than event
batches. Whatever the version, the reader gives the same records, down to the bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flox_trio as flox
from flox_trio.tape import FORMAT_VERSION, EventsRecord, TapeReader, TapeWriter, _writer, tape_info
from flox_trio.tape._format import (
    FLAG_RECORDS,
    FRAME_DECODER,
    FRAME_HEADER,
    WireEvents,
    frame_decoder,
)

from .conftest import BASE_NS, canon

DATA = Path(__file__).with_name("data")


def session_events() -> list[list[Any]]:
    """The batches of a small two-symbol session: trades, books, a bar, a gap, order events."""
    batches: list[list[Any]] = []
    for b in range(12):
        batch: list[Any] = []
        for i in range(b * 20, b * 20 + 20):
            sym = "BTCUSDT" if i % 3 else "ETHUSDT"
            batch.append(flox.Trade(sym, 100.0 + (i % 17) * 0.25, 0.001 * (i % 11 + 1), "buy" if i % 2 else "sell",
                                    str(10_000 + i), BASE_NS + i * 1_000, BASE_NS + i * 1_000 + 9, "binance"))
        if b % 4 == 1:
            batch.append(flox.Book("BTCUSDT", ((99.5, 1.0), (99.0, 2.0)), ((100.5, 1.5),), BASE_NS + b, BASE_NS + b,
                                   "binance", 7 + b))
        if b == 5:
            batch.append(flox.Gap("ETHUSDT", "trade_ids", 3, "10097", "10099", BASE_NS + 5, BASE_NS + 6))
            batch.append(flox.Bar("BTCUSDT", 100.0, 101.0, 99.0, 100.5, 3.5, 40, BASE_NS, BASE_NS + 60 * 10**9,
                                  60.0, "binance"))
        batches.append(batch)
    return batches


def write_session(path: Path, compression: str | None, segment_bytes: int) -> None:
    """What the fixtures hold (run with the writer of the version being pinned)."""
    with TapeWriter(path, compression=compression, meta={"venue": "binance"}, flush_bytes=2048,
                    segment_bytes=segment_bytes) as w:
        w.write_slot(seq=0, slot=0, action="add", hash="h0", language="python", params={"symbols": ["BTCUSDT"]},
                     source="class A: pass\n", spec="a.py:A")
        seq = 0
        for i, batch in enumerate(session_events()):
            w.write_events(seq, batch)
            seq += len(batch)
            if i == 6:
                w.write_swap(seq=seq, slot=0, at_market_event=seq, slot_market_event=seq - 40, old_hash="h0",
                             new_hash="h1", old_language="python", new_language="python", params={"fast": 8},
                             old_source="class A: pass\n", new_source="class B: pass\n", old_spec="a.py:A",
                             new_spec="a.py:B")
                w.write_connector("gap", {"symbol": "ETHUSDT", "missing": 3}, BASE_NS + 7)
                w.write_error(seq=seq, slot=0, message="ValueError: boom")
                w.write_control(seq=seq, at_market_event=seq, action="halt", reason="test", ts_ns=BASE_NS + 8)


FIXTURES = [(f"v{version}-{kind}", version, compression, segment_bytes)
            for version in (2, 3)
            for kind, compression, segment_bytes in (("zstd", "zstd", 64 * 1024 * 1024), ("plain", None, 4096))]


@pytest.mark.parametrize(("name", "version", "compression", "segment_bytes"), FIXTURES)
def test_an_older_tape_reads_as_the_current_writer_writes_it(name: str, version: int, compression: str | None,
                                                             segment_bytes: int, tmp_path: Path) -> None:
    old = TapeReader(DATA / name)
    assert old.header.format_version == version
    write_session(tmp_path / "now", compression, segment_bytes)
    now = TapeReader(tmp_path / "now")
    assert now.header.format_version == FORMAT_VERSION == 4
    assert len(old.segments) >= len(now.segments)  # format 3's trades take half the bytes: fewer segments
    # Every way of reading a tape: records, batches, events, market batches, the one-pass decode.
    assert canon(list(old)) == canon(list(now))
    assert canon(list(old.iter_batches())) == canon(list(now.iter_batches()))
    assert canon(list(old.iter_market_batches())) == canon(list(now.iter_market_batches()))
    assert canon(list(old.iter_events())) == canon([e for b in session_events() for e in b])
    assert all(type(e) is flox.Trade for e in old.iter_events() if isinstance(e, flox.Trade))
    old_info, now_info = tape_info(DATA / name).to_dict(), tape_info(tmp_path / "now").to_dict()
    for key in ("records", "events", "event_types", "symbols", "first_seq", "last_seq", "first_ts_ns",
                "last_ts_ns", "swaps", "slots", "connector_events", "errors"):
        assert old_info[key] == now_info[key], key
    assert (old_info["format_version"], now_info["format_version"]) == (version, 4)
    # The records besides events, read the short way from format 4 (see below) and the long way before.
    assert canon(old.engine_records()) == canon(now.engine_records())
    assert canon(old.swaps()) == canon(now.swaps())
    assert canon(old.errors()) == canon(now.errors())


def test_trades_are_arrays_in_format_3(tmp_path: Path) -> None:
    # Field order is the format: a field added to Trade goes last, with a default, so older
    # tapes (shorter arrays) still read.
    assert flox.Trade.__struct_fields__ == ("symbol", "price", "qty", "side", "trade_id", "exchange_ts_ns",
                                            "recv_ts_ns", "venue")
    assert frame_decoder(frozenset({0}), 3).decoded
    with TapeWriter(tmp_path / "t") as w:
        w.write_events(0, [flox.Trade("BTCUSDT", 1.5, 2.0, "buy", "7", 1, 2, "bybit")])
    raw = (tmp_path / "t" / "seg-000000.tape").read_bytes()
    assert b"\xa7BTCUSDT\xcb" in raw  # the symbol, then straight to the price: no field names
    assert b"trade_id" not in raw


def test_segments_of_two_formats_are_refused(tmp_path: Path) -> None:
    write_session(tmp_path / "t", None, 4096)
    seg = tmp_path / "t" / "seg-000001.tape"
    data = bytearray(seg.read_bytes())
    data[8:10] = (2).to_bytes(2, "little")  # the format version, outside the header map's checksum
    seg.write_bytes(bytes(data))
    reader = TapeReader(tmp_path / "t")  # segment 0 is whole
    with pytest.raises(flox.TapeError, match=r"seg-000001\.tape has format version 2 \(at byte 8\) where segment 0 has 4"):
        list(reader)


def test_format_4_flags_the_frames_that_hold_records_besides_events(tmp_path: Path) -> None:
    write_session(tmp_path / "t", "zstd", 64 * 1024 * 1024)
    reader = TapeReader(tmp_path / "t")
    frames = list(reader._frames())
    flagged = []
    for seg, offset, payload, _flagged in frames:
        with open(seg, "rb") as f:
            f.seek(offset)
            flags = FRAME_HEADER.unpack(f.read(FRAME_HEADER.size))[1]
        kinds = {type(r) for r in FRAME_DECODER.decode(payload)}
        assert bool(flags & FLAG_RECORDS) == (kinds != {WireEvents}), (seg.name, offset, kinds)
        flagged.append(bool(flags & FLAG_RECORDS))
    assert 0 < sum(flagged) < len(frames)
    # A reader after those records alone reads only the flagged frames, and finds all of them.
    assert sum(1 for _ in reader._frames(records_only=True)) == sum(flagged)
    assert canon(reader.engine_records()) == canon([r for r in reader if not isinstance(r, EventsRecord)])


def test_a_record_that_moves_to_a_frame_of_its_own_takes_the_flag_with_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A record that would overfill the frame goes into the next one: the flag must follow it there.
    monkeypatch.setattr(_writer, "MAX_FRAME_BYTES", 4096)
    with TapeWriter(tmp_path / "t", flush_bytes=1 << 20) as w:
        w.write_events(0, [flox.Trade("BTCUSDT", 1.0, 1.0, "buy", str(i), 1, 2) for i in range(60)])
        w.write_error(seq=60, slot=0, message="x" * 2000)
        w.write_events(60, [flox.Trade("BTCUSDT", 1.0, 1.0, "buy", "61", 1, 2)])
    reader = TapeReader(tmp_path / "t")
    assert [type(r).__name__ for r, _ in reader._wire(records_only=True)] == ["WireError", "WireEvents"]
    assert [e.message for e in reader.errors()] == ["x" * 2000]
