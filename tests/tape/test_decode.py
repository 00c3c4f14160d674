"""The one-pass frame decode gives exactly what the reference decode gives: records, events, errors.

The reader decodes a frame's events while it parses the frame (``frame_decoder``);
the reference way, kept for frames too large for that and for frames it refuses,
parses the records with each event run left Raw and decodes the runs after. Here
both read the same tapes, written by the writer (hypothesis) or crafted, and must
agree to the bit, including where an error comes and what it says.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio.tape import ConnectorRecord, EventsRecord, TapeReader, TapeWriter
from flox_trio.tape import _reader as tape_reader
from flox_trio.tape._format import (
    EVENT_CLASSES,
    FLAG_RECORDS,
    FORMAT_VERSION,
    MARKET_CODES,
    TAG_CONNECTOR,
    TAG_EVENTS,
    WireEvents,
    event_decoder,
    frame_header,
)
from flox_trio.tape._reader import _convert

from .conftest import batches, canon, json_dicts, make_trades, text

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEG0 = "seg-000000.tape"
ALL = frozenset(range(len(EVENT_CLASSES)))
ORDERS = frozenset({3, 4})


# --- the reference, as the reader did it before the one-pass decode -------------------------


def reference(reader: TapeReader, codes: frozenset[int]) -> Iterator[tuple[Any, ...]]:
    """("events", seq, the events of codes, how many others) or ("record", record), in order."""
    for rec, _where in reader._wire():
        if type(rec) is not WireEvents:
            yield ("record", _convert(rec))
            continue
        events: list[Any] = []
        others = 0
        for code, raw in rec.runs:
            decoded = event_decoder(code, FORMAT_VERSION).decode(raw)
            if code in codes:
                events.extend(decoded)
            else:
                others += len(decoded)
        yield ("events", rec.seq, events, others)


def fast(reader: TapeReader, codes: frozenset[int]) -> Iterator[tuple[Any, ...]]:
    for item in reader._decoded(codes, count=True):
        if type(item) is tuple:
            yield ("events", *item)
        else:
            yield ("record", _convert(item))  # type: ignore[arg-type]


def order_batches_reference(reader: TapeReader) -> list[tuple[int, list[Any]]]:
    """What RecordedExecutor computed from ``iter_batches`` before ``order_batches`` existed."""
    out = []
    market = 0
    for rec in reader.iter_batches():
        orders = [e for e in rec.events if isinstance(e, flox.OrderUpdate | flox.Fill)]
        if orders:
            out.append((market, orders))
        market += len(rec.events) - len(orders)
    return out


# --- tapes the writer makes -------------------------------------------------------------------


def _ops() -> st.SearchStrategy[list[tuple[str, Any]]]:
    ints = st.integers(0, 2**63 - 1)
    control = st.fixed_dictionaries({"seq": ints, "at_market_event": ints,
                                     "action": st.sampled_from(["halt", "resume"]), "reason": text,
                                     "ts_ns": ints})
    slot = st.fixed_dictionaries({"seq": ints, "slot": st.integers(0, 9), "action": st.just("add"),
                                  "hash": text, "language": st.just("python"), "params": json_dicts,
                                  "source": st.none() | text, "spec": st.none() | text})
    return st.lists(st.one_of(
        st.tuples(st.just("events"), batches),
        st.tuples(st.just("events"), batches),
        st.tuples(st.just("control"), control),
        st.tuples(st.just("slot"), slot),
        st.tuples(st.just("connector"), st.tuples(text, json_dicts, ints)),
    ), max_size=14)


def _write(path: Path, ops: list[tuple[str, Any]], **options: Any) -> None:
    seq = 0
    with TapeWriter(path, flush_interval_s=3600, **options) as w:
        for kind, arg in ops:
            if kind == "events":
                w.write_events(seq, arg)
                seq += len(arg)
            elif kind == "control":
                w.write_control(**arg)
            elif kind == "slot":
                w.write_slot(**arg)
            else:
                w.write_connector(*arg)


def _check_agrees(reader: TapeReader) -> None:
    for codes in (ALL, MARKET_CODES, ORDERS, frozenset()):
        assert canon(list(fast(reader, codes))) == canon(list(reference(reader, codes))), sorted(codes)
    ref_all = list(reference(reader, ALL))
    ref_market = list(reference(reader, MARKET_CODES))
    batches_ref = [EventsRecord(r[1], r[2]) for r in ref_all if r[0] == "events"]
    records_ref = [EventsRecord(r[1], r[2]) if r[0] == "events" else r[1] for r in ref_all]
    market_ref = [EventsRecord(r[1], r[2]) for r in ref_market if r[0] == "events" and r[2]]
    assert canon(list(reader)) == canon(records_ref)
    assert canon(list(reader.iter_batches())) == canon(batches_ref)
    assert canon(list(reader.iter_events())) == canon([e for b in batches_ref for e in b.events])
    assert canon(list(reader.iter_market_batches())) == canon(market_ref)
    assert canon(list(reader.order_batches())) == canon(order_batches_reference(reader))
    assert canon(reader.engine_records()) == canon([r[1] for r in ref_all if r[0] == "record"])


@PROPERTY
@given(ops=_ops(), compression=st.sampled_from([None, "zstd"]),
       flush_bytes=st.sampled_from([0, 300, 1 << 20]), segment_bytes=st.sampled_from([500, 1 << 26]))
def test_one_pass_decode_gives_what_the_reference_decode_gives(
    ops: list[tuple[str, Any]], compression: str | None, flush_bytes: int, segment_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t"
        _write(path, ops, compression=compression, flush_bytes=flush_bytes, segment_bytes=segment_bytes)
        _check_agrees(TapeReader(path))


@PROPERTY
@given(ops=_ops())
def test_frames_too_large_for_one_pass_are_decoded_the_reference_way_with_the_same_result(
    ops: list[tuple[str, Any]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        path = Path(tmp) / "t"
        _write(path, ops, flush_bytes=1 << 20)
        mp.setattr(tape_reader, "_ONE_PASS_MAX", 0)
        _check_agrees(TapeReader(path))


def test_a_recorded_batch_of_one_type_is_handed_over_as_decoded(tmp_path: Path) -> None:
    trades = make_trades(50)
    _write(tmp_path / "t", [("events", trades[:20]), ("events", trades[20:])], flush_bytes=1 << 20)
    got = list(TapeReader(tmp_path / "t").iter_market_batches())
    assert [(b.seq, len(b.events)) for b in got] == [(0, 20), (20, 30)]
    assert canon([e for b in got for e in b.events]) == canon(trades)


# --- crafted frames: the same records before the bad one, the same error ----------------------


def _one_frame_tape(path: Path, records: list[Any]) -> None:
    with TapeWriter(path, flush_interval_s=3600):
        pass
    payload = msgspec.msgpack.encode(records)
    seg = path / SEG0
    # Flagged as the writer flags a frame holding records besides event batches.
    flags = FLAG_RECORDS if any(r[0] != TAG_EVENTS for r in records) else 0
    seg.write_bytes(seg.read_bytes() + frame_header(payload, flags) + payload)


def _collect(it: Iterator[Any]) -> tuple[list[Any], str | None]:
    got = []
    try:
        for x in it:
            got.append(x)
    except (flox.TapeError, msgspec.DecodeError) as exc:
        return got, str(exc)
    return got, None


BAD_TRADE = ["X", "not a float", 1.0, "buy"]  # a trade is an array of its fields
GOOD = make_trades(3)
CRAFTED: dict[str, list[Any]] = {
    "an event the reference decodes only when asked": [
        (TAG_EVENTS, 0, ((0, GOOD),)), (TAG_CONNECTOR, "up", {}, 1), (TAG_EVENTS, 3, ((0, [BAD_TRADE]),)),
        (TAG_EVENTS, 4, ((0, GOOD),)),
    ],
    "an order run that is not an array": [(TAG_EVENTS, 0, ((0, GOOD), (3, 7)))],
    "an unknown event code": [(TAG_EVENTS, 0, ((0, GOOD),)), (TAG_EVENTS, 3, ((9, GOOD),))],
    "a run that is not a pair": [(TAG_EVENTS, 0, ((0, GOOD),)), (TAG_EVENTS, 3, ((0, GOOD, 1),))],
    "a run with no events": [(TAG_EVENTS, 0, ((0, GOOD),)), (TAG_EVENTS, 3, ((0,),))],
    "a record of an unknown kind": [(TAG_EVENTS, 0, ((0, GOOD),)), (42, 1, 2)],
}


@pytest.mark.parametrize("records", CRAFTED.values(), ids=list(CRAFTED))
def test_a_frame_the_one_pass_decode_refuses_reads_as_the_reference_reads_it(
    tmp_path: Path, records: list[Any]
) -> None:
    _one_frame_tape(tmp_path / "t", records)
    reader = TapeReader(tmp_path / "t")
    for codes in (ALL, MARKET_CODES):
        want, want_error = _collect(reference(reader, codes))
        got, got_error = _collect(fast(reader, codes))
        assert canon(got) == canon(want)
        assert (got_error is None) == (want_error is None)
        if got_error is not None:
            assert f"{SEG0} at byte" in got_error


def test_the_reference_decode_error_is_the_one_reported(tmp_path: Path) -> None:
    path = tmp_path / "t"
    _one_frame_tape(path, CRAFTED["an event the reference decodes only when asked"])
    offset = (path / SEG0).stat().st_size - len(msgspec.msgpack.encode(CRAFTED[
        "an event the reference decodes only when asked"])) - 16
    with pytest.raises(msgspec.ValidationError) as why:
        event_decoder(0, FORMAT_VERSION).decode(msgspec.msgpack.encode([BAD_TRADE]))
    expected = f"tape frame in {path / SEG0} at byte {offset} holds records this flox-trio cannot decode: {why.value}"
    reader = TapeReader(path)
    got, error = _collect(reader.iter_batches())
    # The batches before the bad one are read, then the error of the reference decode.
    assert [(b.seq, len(b.events)) for b in got] == [(0, 3)]
    assert error == expected
    records, error = _collect(iter(reader))
    assert canon(records) == canon([EventsRecord(0, GOOD), ConnectorRecord("up", {}, 1)])
    assert error == expected
    assert _collect(reader.iter_market_batches())[1] == expected
    # Orders only: the trades are counted, not decoded, so the bad one goes unseen.
    assert _collect(reader.order_batches()) == ([], None)
