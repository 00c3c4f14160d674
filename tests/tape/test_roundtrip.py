from __future__ import annotations

import struct
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.tape import (
    ConnectorRecord,
    ErrorRecord,
    EventsRecord,
    SlotRecord,
    SwapRecord,
    TapeReader,
    TapeWriter,
    tape_info,
)

from .conftest import BASE_NS, batches, canon, json_dicts, make_trades, text

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _write_batches(path: Path, data: list[list[Any]], **options: Any) -> list[EventsRecord]:
    expected = []
    seq = 0
    with TapeWriter(path, **options) as w:
        for batch in data:
            w.write_events(seq, batch)
            expected.append(EventsRecord(seq, list(batch)))
            seq += len(batch)
    return expected


@PROPERTY
@given(
    data=st.lists(batches, max_size=12),
    compression=st.sampled_from([None, "zstd"]),
    flush_bytes=st.sampled_from([0, 200, 4096, 1 << 20]),
    segment_bytes=st.sampled_from([1, 300, 5000, 1 << 26]),
)
def test_any_events_round_trip_exactly(
    data: list[list[Any]], compression: str | None, flush_bytes: int, segment_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t"
        expected = _write_batches(path, data, compression=compression, flush_bytes=flush_bytes,
                                  flush_interval_s=3600, segment_bytes=segment_bytes)
        reader = TapeReader(path)
        got = list(reader)
        assert canon(got) == canon(expected)
        assert canon(list(reader.iter_events())) == canon([e for b in data for e in b])
        assert reader.torn_tail is None
        if segment_bytes == 1 and flush_bytes == 0 and len(data) > 1:
            # Every batch was its own frame and every frame rotated the segment.
            assert len(reader.segments) == len(data) + 1


def _record_ops() -> st.SearchStrategy[list[tuple[str, Any]]]:
    ints = st.integers(0, 2**63 - 1)
    opt_text = st.none() | text
    swap = st.fixed_dictionaries({
        "seq": ints, "slot": st.integers(0, 1000), "at_market_event": ints, "slot_market_event": ints,
        "old_hash": text, "new_hash": text,
        "old_language": text, "new_language": text, "params": json_dicts, "old_source": opt_text,
        "new_source": opt_text, "old_spec": opt_text, "new_spec": opt_text,
    })
    slot = st.fixed_dictionaries({
        "seq": ints, "slot": st.integers(0, 1000), "action": st.sampled_from(["add", "remove"]),
        "hash": text, "language": st.sampled_from(["python", "js"]), "params": json_dicts,
        "source": opt_text, "spec": opt_text,
    })
    connector = st.fixed_dictionaries({"kind": text, "info": json_dicts, "ts_ns": st.integers(0, 2**63 - 1)})
    error = st.fixed_dictionaries({"seq": ints, "slot": st.integers(-1, 1000), "message": text})
    return st.lists(st.one_of(
        st.tuples(st.just("events"), batches),
        st.tuples(st.just("swap"), swap),
        st.tuples(st.just("slot"), slot),
        st.tuples(st.just("connector"), connector),
        st.tuples(st.just("error"), error),
    ), max_size=15)


@PROPERTY
@given(ops=_record_ops(), compression=st.sampled_from([None, "zstd"]),
       segment_bytes=st.sampled_from([1, 2000, 1 << 26]))
def test_every_record_kind_round_trips_in_order(
    ops: list[tuple[str, Any]], compression: str | None, segment_bytes: int
) -> None:
    expected: list[Any] = []
    seq = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t"
        with TapeWriter(path, compression=compression, segment_bytes=segment_bytes, flush_bytes=1000) as w:
            for kind, arg in ops:
                if kind == "events":
                    w.write_events(seq, arg)
                    expected.append(EventsRecord(seq, list(arg)))
                    seq += len(arg)
                elif kind == "swap":
                    w.write_swap(**arg)
                    expected.append(SwapRecord(**arg))
                elif kind == "slot":
                    w.write_slot(**arg)
                    expected.append(SlotRecord(**arg))
                elif kind == "connector":
                    w.write_connector(arg["kind"], arg["info"], arg["ts_ns"])
                    expected.append(ConnectorRecord(**arg))
                else:
                    w.write_error(**arg)
                    expected.append(ErrorRecord(**arg))
        reader = TapeReader(path)
        assert canon(list(reader)) == canon(expected)
        assert canon(reader.swaps()) == canon([r for r in expected if isinstance(r, SwapRecord)])
        assert canon(reader.slot_records()) == canon([r for r in expected if isinstance(r, SlotRecord)])
        assert canon(reader.connector_records()) == canon(
            [r for r in expected if isinstance(r, ConnectorRecord)])
        assert canon(reader.errors()) == canon([r for r in expected if isinstance(r, ErrorRecord)])
        info = tape_info(path)
        assert info.events == sum(len(r.events) for r in expected if isinstance(r, EventsRecord))
        assert canon(info.swaps) == canon([r for r in expected if isinstance(r, SwapRecord)])


def test_exact_values_survive(tmp_path: Path) -> None:
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0123))[0]
    neg_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF0_0000_0000_0001))[0]
    evs: list[Any] = [
        flox.Trade("BTC/€", nan_payload, -0.0, "buy", "🚀", 2**64 - 1, -(2**63), "bínance"),
        flox.Trade("X", float("inf"), float("-inf"), "sell", "", 2**53 + 1, 0),
        flox.Book("X", ((neg_nan, 5e-324),), (), seq=2**63),
        flox.Bar("X", 1.0, 2.0, 0.5, 1.5, 10.0, 2**62, 1, 2, 0.1),
        flox.OrderUpdate("o1", "X", "buy", "limit", "accepted", Decimal("1.000"), Decimal("-0"),
                         None, Decimal("sNaN")),
        flox.Fill("o1", "X", "buy", Decimal("12345678901234567890.000000000000000001"),
                  Decimal("1E+400"), Decimal("-0.00")),
    ]
    with TapeWriter(tmp_path / "t", compression="zstd") as w:
        w.write_events(2**63 - 1, evs)
    [rec] = list(TapeReader(tmp_path / "t"))
    assert isinstance(rec, EventsRecord)
    assert rec.seq == 2**63 - 1
    assert canon(rec.events) == canon(evs)
    got_trade = rec.events[0]
    assert isinstance(got_trade, flox.Trade)
    assert struct.pack("<d", got_trade.price) == struct.pack("<d", nan_payload)
    assert str(rec.events[5].price) == "12345678901234567890.000000000000000001"  # type: ignore[union-attr]


def test_batch_boundaries_and_sequence_numbers(tmp_path: Path) -> None:
    sizes = [1, 7, 1024, 3]
    data, start = [], 0
    for n in sizes:
        data.append(make_trades(n, start))
        start += n
    expected = _write_batches(tmp_path / "t", data, flush_bytes=10_000, segment_bytes=50_000)
    batches_read = list(TapeReader(tmp_path / "t").iter_batches())
    assert [b.seq for b in batches_read] == [0, 1, 8, 1032]
    assert batches_read == expected
    assert len(TapeReader(tmp_path / "t").segments) > 1


def test_tape_info_counts(tmp_path: Path) -> None:
    path = tmp_path / "t"
    with TapeWriter(path, meta={"venue": "binance", "config": {"symbols": ["BTCUSDT"]}}) as w:
        w.write_events(0, make_trades(5) + make_trades(2, 100, "ETHUSDT"))
        w.write_events(7, [flox.Bar("BTCUSDT", 1, 2, 0.5, 1.5, 3, 4, BASE_NS, BASE_NS + 10**12, 1.0)])
        w.write_events(8, [flox.Fill("o", "BTCUSDT", "buy", Decimal(1), Decimal(2), ts_ns=BASE_NS - 5)])
        w.write_slot(seq=9, slot=0, action="add", hash="h0", language="python", spec="a.py:A")
        w.write_swap(seq=9, slot=0, at_market_event=9, slot_market_event=9, old_hash="h0", new_hash="h1",
                     old_language="python", new_language="js", params={"fast": 8}, new_spec="b.js")
        w.write_connector("gap", {"expected": 5, "got": 9}, BASE_NS)
        w.write_connector("gap", {}, BASE_NS)
        w.write_connector("connect", {}, BASE_NS)
        w.write_error(seq=9, slot=0, message="on_trade: ValueError")
    info = tape_info(path)
    assert info.records == {"events": 3, "slot": 1, "swap": 1, "connector": 3, "error": 1}
    assert info.events == 9
    assert info.event_types == {"Trade": 7, "Bar": 1, "Fill": 1}
    assert info.symbols == {"BTCUSDT": 7, "ETHUSDT": 2}
    assert (info.first_seq, info.last_seq) == (0, 8)
    assert info.first_ts_ns == BASE_NS - 5
    assert info.last_ts_ns == BASE_NS + 10**12
    assert info.duration_s == pytest.approx(1000.0)
    assert [(s.slot, s.old_hash, s.new_hash, s.params) for s in info.swaps] == [(0, "h0", "h1", {"fast": 8})]
    assert [(s.action, s.spec) for s in info.slots] == [("add", "a.py:A")]
    assert info.connector_events == {"gap": 2, "connect": 1}
    assert info.errors == 1
    assert info.header.meta == {"venue": "binance", "config": {"symbols": ["BTCUSDT"]}}
    assert info.bytes == (path / "seg-000000.tape").stat().st_size
    d = info.to_dict()
    assert d["symbols"] == {"BTCUSDT": 7, "ETHUSDT": 2}
    assert d["torn_tail"] is None
    assert d["format_version"] == 4


def test_header_and_meta(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t", compression="zstd", meta={"venue": "bybit", "n": 3}) as w:
        w.write_events(0, make_trades(3))
    reader = TapeReader(tmp_path / "t")
    assert reader.meta == {"venue": "bybit", "n": 3}
    assert reader.header.format_version == 4
    assert reader.header.compression == "zstd"
    assert reader.header.flox_trio_version == flox.__version__
    assert len(reader.header.tape_id) == 32


def test_empty_tape_reads_as_empty(tmp_path: Path) -> None:
    TapeWriter(tmp_path / "t").close()
    reader = TapeReader(tmp_path / "t")
    assert list(reader) == []
    assert tape_info(tmp_path / "t").events == 0
    assert tape_info(tmp_path / "t").first_ts_ns is None


def test_zstd_frames_are_smaller(tmp_path: Path) -> None:
    trades = make_trades(5000)
    _write_batches(tmp_path / "plain", [trades])
    _write_batches(tmp_path / "z", [trades], compression="zstd")
    plain = (tmp_path / "plain" / "seg-000000.tape").stat().st_size
    packed = (tmp_path / "z" / "seg-000000.tape").stat().st_size
    assert packed * 4 < plain
