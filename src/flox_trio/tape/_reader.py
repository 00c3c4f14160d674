"""Reading a tape back: ``TapeReader`` and ``tape_info``."""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, cast

import attrs
import msgspec
import zstandard

from .._core._events import Event, Fill, OrderUpdate, Trade
from .._errors import TapeError
from ._format import (
    EVENT_CLASSES,
    EVENT_CODES,
    FLAG_RECORDS,
    FLAG_ZSTD,
    FLAGGED_RECORDS_SINCE,
    FORMAT_VERSION,
    FRAME_DECODER,
    FRAME_HEADER,
    FRAME_MARKER,
    HEADER_DECODER,
    KNOWN_FRAME_FLAGS,
    MARKET_CODES,
    MAX_HEADER_MAP,
    MAX_READ_FRAME,
    READ_VERSIONS,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    HeaderMap,
    WireConnector,
    WireControl,
    WireError,
    WireEvents,
    WireRecord,
    WireSlot,
    WireSwap,
    event_decoder,
    frame_decoder,
    list_segments,
    upgrade,
)
from ._records import (
    ConnectorRecord,
    ControlRecord,
    ErrorRecord,
    EventsRecord,
    Record,
    SlotRecord,
    SwapRecord,
    TapeHeader,
    TornTail,
)

log = logging.getLogger("flox_trio.tape")

_ZERO_CHECK_CHUNK = 1 << 20
_INFLATE_CHUNK = 1 << 20
#: What decoding crafted msgpack can raise: malformed data, or nesting deeper than msgspec recurses.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)
#: A frame larger than this (decompressed) is decoded record by record, so that a reader holds
#: one recorded batch of events at a time rather than a whole frame's; the writer's frames
#: (``flush_bytes``, 64 KiB by default) are far smaller.
_ONE_PASS_MAX = 8 * 1024 * 1024
_ALL_CODES: frozenset[int] = frozenset(range(len(EVENT_CLASSES)))
_ORDER_CODES: frozenset[int] = frozenset({EVENT_CODES[OrderUpdate], EVENT_CODES[Fill]})
#: An event batch as ``TapeReader._decoded`` gives it: seq, the decoded events, how many were skipped.
_Batch = tuple[int, list[Event], int]


class _Torn(Exception):
    """Internal: the last segment ends in an unfinished write."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


class TapeReader:
    """Read a tape directory back, record by record, in the order written.

    Constructing a reader checks the tape's header (a missing, truncated or
    garbled header, or a format version this flox-trio does not read, raises
    ``TapeError``). Iterating reads the segments from disk each time and
    verifies every frame's checksums:

    - a damaged frame with data after it raises ``TapeError`` naming the
      segment file and byte offset;
    - an unfinished write at the very end of the last segment (a crash
      mid-write, ``kill -9``) ends the iteration with a logged warning after
      the last whole record, and sets ``torn_tail``.

    A reader holds no open files between iterations.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise TapeError(f"no tape at {self.path}: the directory does not exist")
        if not self.path.is_dir():
            raise TapeError(f"{self.path} is not a tape: a tape is a directory of seg-NNNNNN.tape files")
        found = list_segments(self.path)
        if not found:
            raise TapeError(f"{self.path} is not a tape: it has no segment files (seg-NNNNNN.tape)")
        for expected, (index, seg) in enumerate(found):
            if index != expected:
                raise TapeError(
                    f"tape {self.path} is missing segment {expected} (found {seg.name} next): "
                    "segments must be numbered from 0 without gaps"
                )
        self.segments: list[Path] = [p for _, p in found]
        with open(self.segments[0], "rb") as f:
            first = _read_segment_header(f, self.segments[0], 0, None, is_last=len(self.segments) == 1)
        assert first is not None  # segment 0 never reads as torn
        self._header_map = first[0]
        #: Every segment of a tape has its first segment's format (checked as each is read).
        self._version = first[2]
        self.header = TapeHeader(
            format_version=self._version,
            tape_id=first[0].tape_id,
            created_ns=first[0].created_ns,
            flox_trio_version=first[0].flox_trio_version,
            compression=first[0].compression,
            meta=first[0].meta,
        )
        #: Set once an iteration has reached a torn tail.
        self.torn_tail: TornTail | None = None
        self._decompressor = zstandard.ZstdDecompressor()

    @property
    def meta(self) -> dict[str, Any]:
        """The free-form metadata the writer was given (venue, config, ...)."""
        return self.header.meta

    def __repr__(self) -> str:
        return f"<TapeReader {str(self.path)!r} segments={len(self.segments)}>"

    # --- iteration ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        """Every record, in order, with events materialised."""
        for item in self._decoded(_ALL_CODES):
            if isinstance(item, tuple):
                yield EventsRecord(item[0], item[1])
            else:
                yield _convert(item)

    def records(self) -> Iterator[Record]:
        """The same as iterating the reader."""
        return iter(self)

    def iter_batches(self) -> Iterator[EventsRecord]:
        """The event batches only, each with the sequence number of its first event."""
        for item in self._decoded(_ALL_CODES):
            if isinstance(item, tuple):
                yield EventsRecord(item[0], item[1])

    def iter_events(self) -> Iterator[Event]:
        """Every event, in order (use ``iter_batches`` for their sequence numbers)."""
        for item in self._decoded(_ALL_CODES):
            if isinstance(item, tuple):
                yield from item[1]

    def iter_market_batches(self) -> Iterator[EventsRecord]:
        """The market events (Trade, Book, Bar, Gap) of each batch; order events are skipped undecoded.

        ``seq`` is the recorded sequence number of the batch's first event,
        whichever type it was; batches with no market event are left out.
        """
        for item in self._decoded(MARKET_CODES):
            if isinstance(item, tuple) and item[1]:
                yield EventsRecord(item[0], item[1])

    def order_batches(self) -> Iterator[tuple[int, list[OrderUpdate | Fill]]]:
        """The order updates and fills of each batch that has some, with the number of market
        events recorded before the batch; market events are counted, not decoded."""
        market = 0
        for item in self._decoded(_ORDER_CODES, count=True):
            if isinstance(item, tuple):
                _, orders, skipped = item
                if orders:
                    # Only the order codes were decoded: these are OrderUpdates and Fills.
                    yield market, cast("list[OrderUpdate | Fill]", orders)
                market += skipped

    def engine_records(self) -> list[Record]:
        """Every record that is not an event batch (slot changes, swaps, connector events, errors,
        halts and resumes), in order, from one pass over the tape; events are skipped undecoded."""
        return [_convert(r) for r, _ in self._wire(records_only=True) if type(r) is not WireEvents]

    def swaps(self) -> list[SwapRecord]:
        """Every recorded swap, in order. Events are skipped, not decoded."""
        return [_swap(r) for r, _ in self._wire(records_only=True) if isinstance(r, WireSwap)]

    def slot_records(self) -> list[SlotRecord]:
        """Every recorded slot add/remove, in order."""
        return [_slot(r) for r, _ in self._wire(records_only=True) if isinstance(r, WireSlot)]

    def connector_records(self) -> list[ConnectorRecord]:
        """Every recorded connector event, in order."""
        return [ConnectorRecord(r.kind, r.info, r.ts_ns) for r, _ in self._wire(records_only=True)
                if isinstance(r, WireConnector)]

    def control_records(self) -> list[ControlRecord]:
        """Every recorded halt and resume, in order."""
        return [_control(r) for r, _ in self._wire(records_only=True) if isinstance(r, WireControl)]

    def errors(self) -> list[ErrorRecord]:
        """Every recorded strategy error, in order."""
        return [ErrorRecord(r.seq, r.slot, r.message) for r, _ in self._wire(records_only=True)
                if isinstance(r, WireError)]

    # --- frames ---------------------------------------------------------------------------

    def _decoded(self, codes: frozenset[int], *, count: bool = False) -> Iterator[_Batch | WireRecord]:
        """Event batches as ``(seq, the events of codes, how many others were skipped)``, other records as
        on the wire; in order.

        A frame is decoded in one pass (``frame_decoder``), events included,
        unless it is larger than ``_ONE_PASS_MAX``: then, or when the one-pass
        decode refuses it, it is decoded the reference way, record by record
        (which also gives the records before a bad one, and the error the
        reference decode gives). ``skipped`` is counted only with ``count``.
        """
        version = self._version
        fast = frame_decoder(codes, version)
        decode, events_type, decoded, upgrades = fast.decoder.decode, fast.events_type, fast.decoded, fast.upgrades
        for seg, offset, payload, flagged in self._frames():
            where = (seg, offset)
            records: list[Any] | None = None
            if len(payload) <= _ONE_PASS_MAX:
                try:
                    records = decode(payload)
                except _DECODE_ERRORS:
                    records = None
            if records is None:
                for item in _decoded_reference(payload, where, codes, count, version):
                    if not flagged and not isinstance(item, tuple):
                        raise _unflagged(where, item)
                    yield item
                continue
            for rec in records:
                if type(rec) is not events_type:
                    if not flagged:
                        raise _unflagged(where, rec)
                    yield rec
                    continue
                runs = rec.runs
                if len(runs) == 1 and type(runs[0]) in decoded and not upgrades:
                    # The common case, one run of one type: its list is the batch, not copied.
                    yield rec.seq, runs[0].events, 0
                    continue
                events: list[Event] = []
                skipped = 0
                for run in runs:
                    if type(run) in decoded:
                        up = upgrades.get(type(run))
                        events += run.events if up is None else up(run.events)
                    elif count:
                        skipped += _raw_len(run.events, where)
                yield rec.seq, events, skipped

    def _wire(self, *, records_only: bool = False) -> Iterator[tuple[WireRecord, tuple[Path, int]]]:
        """Wire records with (segment, frame offset), events left encoded.

        ``records_only``: the caller wants no event batch, so frames that say they hold
        none (format 4) are skipped unread; what it gets may still include some.
        """
        decode = FRAME_DECODER.decode
        for seg, offset, payload, flagged in self._frames(records_only=records_only):
            try:
                records = decode(payload)
            except _DECODE_ERRORS as exc:
                raise _bad_record((seg, offset), exc) from exc
            where = (seg, offset)
            for rec in records:
                if not flagged and type(rec) is not WireEvents:
                    raise _unflagged(where, rec)
                yield rec, where

    def _frames(self, *, records_only: bool = False) -> Iterator[tuple[Path, int, bytes, bool]]:
        """Every frame's payload, verified and decompressed, in order, and whether it may hold
        records besides event batches (format 4 flags those; in older formats any may).

        ``records_only``: leave out, unread, the frames a format-4 tape flags as holding
        event batches alone.
        """
        # Measured (bench/replay.py): a thread reading and decompressing the next frames while
        # this one is decoded costs more in GIL hand-overs than the zstd time it takes off.
        skip_events = records_only and self._version >= FLAGGED_RECORDS_SINCE
        n = len(self.segments)
        for index, seg in enumerate(self.segments):
            is_last = index == n - 1
            try:
                yield from self._segment_frames(seg, index, is_last, skip_events)
            except _Torn as torn:
                self._torn(seg, torn)
                return

    def _segment_frames(self, seg: Path, index: int, is_last: bool,
                        skip_events: bool) -> Iterator[tuple[Path, int, bytes, bool]]:
        try:
            f = open(seg, "rb")  # noqa: SIM115 - closed in finally across yields
        except OSError as exc:
            raise TapeError(f"cannot open tape segment {seg}: {exc}") from exc
        flagged_only = self._version >= FLAGGED_RECORDS_SINCE
        try:
            size = os.fstat(f.fileno()).st_size
            head = _read_segment_header(f, seg, index, self._header_map, is_last=is_last, version=self._version)
            if head is None:  # torn while the writer was starting this segment
                raise _Torn(0, "the segment header was not completely written")
            pos = head[1]
            unpack = FRAME_HEADER.unpack
            hsize = FRAME_HEADER.size
            crc32 = zlib.crc32
            while pos < size:
                remaining = size - pos
                if remaining < hsize:
                    self._cut(seg, pos, is_last, f"the file ends {remaining} byte(s) into a frame header")
                hdr = f.read(hsize)
                plen, flags, marker, pcrc, hcrc = unpack(hdr)
                if marker != FRAME_MARKER or crc32(hdr[:12]) != hcrc:
                    if is_last and _rest_is_zero(f, pos + hsize, size) and not any(hdr):
                        raise _Torn(pos, "the file ends in zero bytes where a frame should be")
                    raise TapeError(f"corrupt tape frame in {seg} at byte {pos}: frame header checksum mismatch")
                if flags & ~KNOWN_FRAME_FLAGS:
                    raise TapeError(
                        f"tape frame in {seg} at byte {pos} has flags {flags:#x} this flox-trio "
                        "does not know: it was written by a newer version"
                    )
                if plen > MAX_READ_FRAME:
                    # No writer cuts a frame this large: the length field was
                    # damaged (or crafted) after its checksum was computed.
                    raise TapeError(
                        f"corrupt tape frame in {seg} at byte {pos}: its header claims {plen} bytes, more "
                        f"than a tape frame may hold ({MAX_READ_FRAME}); the length field is damaged"
                    )
                if plen > remaining - hsize:
                    after = _whole_frame_after(f, pos + hsize, size)
                    if after is not None:
                        raise TapeError(
                            f"corrupt tape frame in {seg} at byte {pos}: its header claims {plen} bytes, past "
                            f"the end of the file, but a whole frame follows at byte {after}; "
                            "the length field is damaged"
                        )
                    self._cut(seg, pos, is_last,
                              f"a frame of {plen} bytes is cut short after {remaining - hsize}")
                if skip_events and not flags & FLAG_RECORDS:
                    # Checked for damage by a reader that wants its events.
                    f.seek(plen, os.SEEK_CUR)
                    pos += hsize + plen
                    continue
                payload = f.read(plen)
                if crc32(payload) != pcrc:
                    if is_last and pos + hsize + plen == size:
                        raise _Torn(pos, "the last frame's checksum does not match: it was not completely written")
                    raise TapeError(f"corrupt tape frame in {seg} at byte {pos}: payload checksum mismatch")
                if flags & FLAG_ZSTD:
                    payload = self._decompress(payload, seg, pos)
                yield seg, pos, payload, not flagged_only or bool(flags & FLAG_RECORDS)
                pos += hsize + plen
        finally:
            f.close()

    def _decompress(self, payload: bytes, seg: Path, pos: int) -> bytes:
        """A zstd frame's content, never more than ``MAX_READ_FRAME`` bytes of it.

        The size a frame declares is checked before anything is allocated;
        a frame that declares none (the writer always declares it) is
        inflated in bounded steps, so it cannot take more memory either.
        """
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise TapeError(f"tape frame in {seg} at byte {pos} does not decompress: {exc}") from exc
        if declared > MAX_READ_FRAME:
            raise TapeError(
                f"corrupt tape frame in {seg} at byte {pos}: it declares {declared} bytes decompressed, "
                f"more than a tape frame may hold ({MAX_READ_FRAME})"
            )
        try:
            if declared >= 0:
                return self._decompressor.decompress(payload)
            return self._decompress_unsized(payload, seg, pos)
        except zstandard.ZstdError as exc:
            raise TapeError(f"tape frame in {seg} at byte {pos} does not decompress: {exc}") from exc

    def _decompress_unsized(self, payload: bytes, seg: Path, pos: int) -> bytes:
        out = bytearray()
        with self._decompressor.stream_reader(payload) as reader:
            while True:
                chunk = reader.read(_INFLATE_CHUNK)
                if not chunk:
                    return bytes(out)
                out += chunk
                if len(out) > MAX_READ_FRAME:
                    raise TapeError(
                        f"corrupt tape frame in {seg} at byte {pos}: it decompresses to more than a tape "
                        f"frame may hold ({MAX_READ_FRAME} bytes)"
                    )

    @staticmethod
    def _cut(seg: Path, pos: int, is_last: bool, why: str) -> None:
        if is_last:
            raise _Torn(pos, why)
        raise TapeError(f"tape segment {seg} is cut short at byte {pos} ({why}) but later segments follow")

    def _torn(self, seg: Path, torn: _Torn) -> None:
        try:
            dropped = seg.stat().st_size - torn.offset
        except OSError:
            dropped = 0
        first_time = self.torn_tail is None
        self.torn_tail = TornTail(seg, torn.offset, dropped, torn.reason)
        if first_time:
            log.warning(
                "tape %s: torn tail in %s at byte %d (%s); the %d byte(s) after the last whole "
                "record are ignored. This is what a crash mid-write leaves.",
                self.path, seg.name, torn.offset, torn.reason, dropped,
            )


# --- helpers ------------------------------------------------------------------------------


def _read_segment_header(
    f: BinaryIO, seg: Path, index: int, first: HeaderMap | None, *, is_last: bool, version: int | None = None
) -> tuple[HeaderMap, int, int] | None:
    """Parse a segment header: (header map, where the frames start, format version).

    None when it is torn and a torn tail is acceptable here. ``version``: the
    tape's (its first segment's), which every other segment must have.
    """
    # Only a segment that the writer was just starting can be torn; segment 0
    # carries the tape's header, without which nothing can be read.
    torn_ok = is_last and index > 0
    fixed = f.read(SEGMENT_HEADER.size)
    if len(fixed) < SEGMENT_HEADER.size:
        if torn_ok:
            return None
        if not fixed:
            raise TapeError(f"tape segment {seg} is empty: the header is missing at byte 0")
        raise TapeError(
            f"tape segment {seg} has a truncated header at byte 0 ({len(fixed)} of {SEGMENT_HEADER.size} bytes)"
        )
    magic, found, flags, body_len, body_crc = SEGMENT_HEADER.unpack(fixed)
    if magic != SEGMENT_MAGIC:
        raise TapeError(f"{seg} is not a flox-trio tape segment: bad magic {magic!r} at byte 0 (garbled header?)")
    if found not in READ_VERSIONS:
        if found > FORMAT_VERSION:
            raise TapeError(
                f"tape segment {seg} has format version {found}, newer than this flox-trio reads "
                f"(version {FORMAT_VERSION}): upgrade flox-trio to read it (the version is at byte 8)"
            )
        if found == 1:
            raise TapeError(f"tape segment {seg} has format version 1, written by an older flox-trio whose swap "
                            "records lack the session's market-event index (at byte 8): replay it with flox-trio 0.1, "
                            "or record the session again")
        raise TapeError(f"tape segment {seg} has unsupported format version {found} at byte 8")
    if version is not None and found != version:
        raise TapeError(f"tape segment {seg} has format version {found} (at byte 8) where segment 0 has {version}: "
                        "segments of different tapes mixed up")
    if flags:
        raise TapeError(f"tape segment {seg} has header flags {flags:#x} at byte 10 this flox-trio does not know")
    if body_len > MAX_HEADER_MAP:
        raise TapeError(f"tape segment {seg} has a garbled header: header length {body_len} at byte 12 "
                        f"(at most {MAX_HEADER_MAP})")
    body = f.read(body_len)
    if len(body) < body_len:
        if torn_ok:
            return None
        raise TapeError(f"tape segment {seg} has a truncated header at byte {SEGMENT_HEADER.size} "
                        f"({len(body)} of {body_len} bytes)")
    if zlib.crc32(body) != body_crc:
        raise TapeError(f"tape segment {seg} has a garbled header: checksum mismatch "
                        f"(header map at byte {SEGMENT_HEADER.size})")
    try:
        header = HEADER_DECODER.decode(body)
    except _DECODE_ERRORS as exc:
        raise TapeError(f"tape segment {seg} has a garbled header at byte {SEGMENT_HEADER.size}: {exc}") from exc
    if header.segment != index:
        raise TapeError(f"tape segment {seg} says it is segment {header.segment} (header map at byte "
                        f"{SEGMENT_HEADER.size}): files renamed or mixed up")
    if first is not None and header.tape_id != first.tape_id:
        raise TapeError(f"tape segment {seg} belongs to another tape ({header.tape_id}, not {first.tape_id}; "
                        f"header map at byte {SEGMENT_HEADER.size})")
    return header, SEGMENT_HEADER.size + body_len, found


def _rest_is_zero(f: BinaryIO, start: int, end: int) -> bool:
    f.seek(start)
    pos = start
    while pos < end:
        chunk = f.read(min(_ZERO_CHECK_CHUNK, end - pos))
        if not chunk or any(chunk):
            return False
        pos += len(chunk)
    return True


def _whole_frame_after(f: BinaryIO, start: int, end: int) -> int | None:
    """The offset of the first whole, checksummed frame in ``f[start:end]``, if any.

    A frame whose length runs past the end of the file is a torn tail only
    when nothing whole follows it; only called on that (rare) path.
    """
    f.seek(start)
    data = f.read(end - start)
    marker = FRAME_MARKER.to_bytes(2, "little")
    unpack = FRAME_HEADER.unpack_from
    hsize = FRAME_HEADER.size
    i = data.find(marker, 6)
    while i >= 0:
        head = i - 6
        if head + hsize <= len(data):
            plen, _flags, _marker, pcrc, hcrc = unpack(data, head)
            if (zlib.crc32(data[head:head + 12]) == hcrc and head + hsize + plen <= len(data)
                    and zlib.crc32(data[head + hsize:head + hsize + plen]) == pcrc):
                return start + head
        i = data.find(marker, i + 1)
    return None


def _unflagged(where: tuple[Path, int], rec: object) -> TapeError:
    # A writer flags every such frame (the flag is under the header's checksum): a tape without
    # it was altered, and a reader of the flagged frames alone (a replay's plan) would miss it.
    seg, offset = where
    kind = type(rec).__name__.removeprefix("Wire").lower()
    return TapeError(f"tape frame in {seg} at byte {offset} holds a {kind} record but is not flagged as "
                     "holding records besides events: the tape was altered after it was written; "
                     "record the session again")


def _bad_record(where: tuple[Path, int], exc: Exception) -> TapeError:
    seg, offset = where
    return TapeError(f"tape frame in {seg} at byte {offset} holds records this flox-trio cannot decode: {exc}")


def _decoded_reference(payload: bytes, where: tuple[Path, int], codes: frozenset[int],
                       count: bool, version: int) -> Iterator[_Batch | WireRecord]:
    """``TapeReader._decoded`` for one frame, the reference way: the records, then each run's events."""
    try:
        records = FRAME_DECODER.decode(payload)
    except _DECODE_ERRORS as exc:
        raise _bad_record(where, exc) from exc
    for rec in records:
        if type(rec) is not WireEvents:
            yield rec
            continue
        events: list[Event] = []
        skipped = 0
        try:
            for code, raw in rec.runs:
                if code in codes:
                    got = event_decoder(code, version).decode(raw)
                    up = upgrade(code, version)
                    events += got if up is None else up(got)
                elif count:
                    skipped += _raw_len(raw, where)
        except _DECODE_ERRORS as exc:
            raise _bad_record(where, exc) from exc
        yield rec.seq, events, skipped


def _raw_len(raw: msgspec.Raw, where: tuple[Path, int]) -> int:
    """The number of events in an encoded run, read from its msgpack array header."""
    head = bytes(memoryview(raw)[:5])
    tag = head[0] if head else 0
    if tag & 0xF0 == 0x90:
        return tag & 0x0F
    if tag == 0xDC and len(head) >= 3:
        return int.from_bytes(head[1:3], "big")
    if tag == 0xDD and len(head) == 5:
        return int.from_bytes(head[1:5], "big")
    raise _bad_record(where, msgspec.DecodeError(f"an event run is not an array (msgpack type {tag:#x})"))


def _swap(rec: WireSwap) -> SwapRecord:
    return SwapRecord(rec.seq, rec.slot, rec.at_market_event, rec.slot_market_event, rec.old_hash, rec.new_hash,
                      rec.old_language, rec.new_language, rec.params, rec.old_source, rec.new_source,
                      rec.old_spec, rec.new_spec)


def _slot(rec: WireSlot) -> SlotRecord:
    return SlotRecord(rec.seq, rec.slot, rec.action, rec.hash, rec.language, rec.params, rec.source, rec.spec)


def _control(rec: WireControl) -> ControlRecord:
    return ControlRecord(rec.seq, rec.at_market_event, rec.action, rec.reason, rec.ts_ns)


def _convert(rec: WireRecord) -> Record:
    if isinstance(rec, WireSwap):
        return _swap(rec)
    if isinstance(rec, WireSlot):
        return _slot(rec)
    if isinstance(rec, WireConnector):
        return ConnectorRecord(rec.kind, rec.info, rec.ts_ns)
    if isinstance(rec, WireError):
        return ErrorRecord(rec.seq, rec.slot, rec.message)
    if isinstance(rec, WireControl):
        return _control(rec)
    raise AssertionError(f"unexpected wire record {rec!r}")  # pragma: no cover


# --- tape info ----------------------------------------------------------------------------


class _Peek(msgspec.Struct):
    """The fields of any event that ``tape_info`` needs; msgspec skips the rest."""

    symbol: str = ""
    recv_ts_ns: int | float = 0
    exchange_ts_ns: int | float = 0
    end_ts_ns: int | float = 0
    ts_ns: int | float = 0


class _TradePeek(msgspec.Struct, array_like=True):
    """The same of a trade stored as an array (format 3): its fields in ``Trade``'s order."""

    symbol: str = ""
    price: Any = None
    qty: Any = None
    side: Any = None
    trade_id: Any = None
    exchange_ts_ns: int | float = 0
    recv_ts_ns: int | float = 0
    end_ts_ns: ClassVar[int] = 0
    ts_ns: ClassVar[int] = 0


_PEEK_DECODER = msgspec.msgpack.Decoder(list[_Peek])
_TRADE_PEEK_DECODER = msgspec.msgpack.Decoder(list[_TradePeek])


@attrs.frozen(slots=True)
class TapeInfo:
    """A summary of a tape, for ``flox-trio tape info``.

    ``first_ts_ns``/``last_ts_ns`` span the events' own times (receive time,
    else exchange time; a bar's end; an order event's time); ``None`` when no
    event carries one.
    """

    path: Path
    header: TapeHeader
    segments: int
    bytes: int
    records: dict[str, int]
    events: int
    event_types: dict[str, int]
    symbols: dict[str, int]
    first_seq: int | None
    last_seq: int | None
    first_ts_ns: int | None
    last_ts_ns: int | None
    swaps: list[SwapRecord]
    slots: list[SlotRecord]
    connector_events: dict[str, int]
    errors: int
    torn_tail: TornTail | None

    @property
    def duration_s(self) -> float:
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return 0.0
        return (self.last_ts_ns - self.first_ts_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (sources left out of swaps and slots: they can be long)."""
        return {
            "path": str(self.path),
            "format_version": self.header.format_version,
            "tape_id": self.header.tape_id,
            "created_ns": self.header.created_ns,
            "flox_trio_version": self.header.flox_trio_version,
            "compression": self.header.compression,
            "meta": self.header.meta,
            "segments": self.segments,
            "bytes": self.bytes,
            "records": self.records,
            "events": self.events,
            "event_types": self.event_types,
            "symbols": self.symbols,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_ts_ns": self.first_ts_ns,
            "last_ts_ns": self.last_ts_ns,
            "duration_s": self.duration_s,
            "swaps": [
                {"seq": s.seq, "slot": s.slot, "at_market_event": s.at_market_event,
                 "slot_market_event": s.slot_market_event, "old_hash": s.old_hash, "new_hash": s.new_hash,
                 "old_language": s.old_language, "new_language": s.new_language,
                 "old_spec": s.old_spec, "new_spec": s.new_spec, "params": s.params}
                for s in self.swaps
            ],
            "slots": [
                {"seq": s.seq, "slot": s.slot, "action": s.action, "hash": s.hash,
                 "language": s.language, "spec": s.spec, "params": s.params}
                for s in self.slots
            ],
            "connector_events": self.connector_events,
            "errors": self.errors,
            "torn_tail": None if self.torn_tail is None else {
                "segment": str(self.torn_tail.segment), "offset": self.torn_tail.offset,
                "dropped_bytes": self.torn_tail.dropped_bytes, "reason": self.torn_tail.reason,
            },
        }


_RECORD_NAMES = {WireEvents: "events", WireSwap: "swap", WireSlot: "slot", WireConnector: "connector",
                 WireError: "error", WireControl: "control"}


def tape_info(path: str | os.PathLike[str]) -> TapeInfo:
    """Count what a tape holds: records per kind, events per type and symbol, time span, swaps.

    Events are not materialised: only their symbol and times are decoded.
    """
    reader = TapeReader(path)
    records: Counter[str] = Counter()
    types: Counter[int] = Counter()
    symbols: Counter[str] = Counter()
    connectors: Counter[str] = Counter()
    swaps: list[SwapRecord] = []
    slots: list[SlotRecord] = []
    errors = 0
    events = 0
    first_seq: int | None = None
    last_seq: int | None = None
    lo: int | None = None
    hi: int | None = None
    trade_code = EVENT_CODES[Trade]
    peek_trades = _PEEK_DECODER.decode if upgrade(trade_code, reader._version) else _TRADE_PEEK_DECODER.decode
    for rec, where in reader._wire():
        records[_RECORD_NAMES[type(rec)]] += 1
        if isinstance(rec, WireEvents):
            n = 0
            for code, raw in rec.runs:
                try:
                    peeks: list[Any] = (peek_trades if code == trade_code else _PEEK_DECODER.decode)(raw)
                except _DECODE_ERRORS as exc:
                    raise _bad_record(where, exc) from exc
                n += len(peeks)
                types[code] += len(peeks)
                symbols.update([p.symbol for p in peeks])
                stamps = [t for p in peeks if (t := p.recv_ts_ns or p.exchange_ts_ns or p.end_ts_ns or p.ts_ns)]
                if stamps:
                    a, b = int(min(stamps)), int(max(stamps))
                    lo = a if lo is None else min(lo, a)
                    hi = b if hi is None else max(hi, b)
            if n:
                first_seq = rec.seq if first_seq is None else min(first_seq, rec.seq)
                last_seq = rec.seq + n - 1 if last_seq is None else max(last_seq, rec.seq + n - 1)
                events += n
        elif isinstance(rec, WireSwap):
            swaps.append(_swap(rec))
        elif isinstance(rec, WireSlot):
            slots.append(_slot(rec))
        elif isinstance(rec, WireConnector):
            connectors[rec.kind] += 1
        elif isinstance(rec, WireError):
            errors += 1
    size = 0
    for seg in reader.segments:
        try:
            size += seg.stat().st_size
        except OSError:
            pass
    return TapeInfo(
        path=reader.path,
        header=reader.header,
        segments=len(reader.segments),
        bytes=size,
        records=dict(records),
        events=events,
        event_types={EVENT_CLASSES[c].__name__: k for c, k in sorted(types.items())},
        symbols=dict(symbols.most_common()),
        first_seq=first_seq,
        last_seq=last_seq,
        first_ts_ns=lo,
        last_ts_ns=hi,
        swaps=swaps,
        slots=slots,
        connector_events=dict(connectors),
        errors=errors,
        torn_tail=reader.torn_tail,
    )

