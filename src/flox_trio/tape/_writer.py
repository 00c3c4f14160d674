"""Recording a tape: ``TapeWriter`` and ``open_tape_writer``."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final

import msgspec
import trio
import zstandard

from .._core._clock import real_seconds, unix_time_ns
from .._core._events import Event
from .._errors import TapeError
from ._format import (
    ARRAY32_PREFIX,
    COMPRESSIONS,
    EVENT_CODES,
    FLAG_RECORDS,
    FLAG_ZSTD,
    MAX_FRAME_BYTES,
    TAG_CONNECTOR,
    TAG_CONTROL,
    TAG_ERROR,
    TAG_EVENTS,
    TAG_SLOT,
    TAG_SWAP,
    HeaderMap,
    check_meta,
    check_plain,
    clean_params,
    encode_segment_header,
    frame_header,
    list_segments,
    segment_name,
)

log = logging.getLogger("flox_trio.tape")

# Errors msgspec raises for a value it cannot put in msgpack: an int beyond
# 64 bits, a str with lone surrogates, an object of an unknown type.
_ENCODE_ERRORS = (msgspec.EncodeError, OverflowError, TypeError, ValueError, UnicodeError)


class _Oversize(Exception):
    """Internal: one record alone is larger than a frame may be."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


#: A frame's size before compression, by default: about a thousand trades. A reader decodes a
#: frame in one call, and what it decodes is dispatched soon after; frames this small stay in
#: the CPU's cache between the two (bench/replay.py: 64 KiB replays ~10 % faster than 512 KiB;
#: bench/tape.py: 3 % more bytes per event).
FLUSH_BYTES: Final = 64 * 1024


class TapeWriter:
    """Record events and engine actions to a tape directory.

    Args:
        path: The tape directory. It is created if needed and must not already
            hold a tape.
        compression: ``"zstd"`` to compress each frame, or ``None``.
        flush_bytes: Cut a frame and hand it to the OS once this many encoded
            bytes are buffered. A frame never exceeds ``MAX_FRAME_BYTES``
            (64 MiB) whatever this says: an event batch larger than that is
            recorded as several consecutive batches.
        flush_interval_s: ... or once this long has passed since the last
            flush, checked at each write. With ``open_tape_writer`` a
            background task also flushes an idle writer on this interval.
        segment_bytes: Start a new segment file once the current one is this
            large (frames are never split, so a segment may exceed it by one
            frame).
        meta: Free-form JSON-like data stored in the header (venue, config,
            ...). Keys that look like credentials are refused.
        fsync: ``fsync`` after every flush. Without it a flushed frame survives
            a crash of the process (``kill -9``) but not of the machine.
        zstd_level: The zstd compression level.

    The writer is built for the engine's publish path: ``write_events`` only
    encodes into an in-memory buffer (msgspec, in C) and touches the disk when
    a flush is due. What a crash can lose is bounded by ``flush_bytes`` and
    ``flush_interval_s``; a swap or a slot change is flushed at once.

    A writer is not thread-safe; use it from the thread that runs the engine.
    It never takes credentials, and nothing it writes can hold one: keys that
    look secret are refused in ``meta`` and redacted in params and connector
    info.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str | None = None,
        flush_bytes: int = FLUSH_BYTES,
        flush_interval_s: float = 0.5,
        segment_bytes: int = 64 * 1024 * 1024,
        meta: dict[str, Any] | None = None,
        fsync: bool = False,
        zstd_level: int = 1,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise TapeError(f"unknown tape compression {compression!r}: use 'zstd' or None")
        if not isinstance(flush_bytes, int) or flush_bytes < 0:
            raise TapeError(f"flush_bytes must be an int >= 0, got {flush_bytes!r}")
        if not isinstance(segment_bytes, int) or segment_bytes < 1:
            raise TapeError(f"segment_bytes must be an int >= 1, got {segment_bytes!r}")
        if not isinstance(flush_interval_s, int | float) or not flush_interval_s >= 0:
            raise TapeError(f"flush_interval_s must be a number >= 0, got {flush_interval_s!r}")
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise TapeError(f"tape meta must be a dict, got {type(meta).__name__}")
        check_meta(meta)

        self.path = Path(path)
        self.compression = compression
        self.flush_bytes = flush_bytes
        self.flush_interval_s = float(flush_interval_s)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.meta: dict[str, Any] = meta

        #: Counters: what was handed to the writer, and what reached the OS.
        self.records_written = 0
        self.events_written = 0
        self.events_flushed = 0
        self.records_flushed = 0
        self.frames_written = 0
        self.bytes_written = 0

        self._encoder = msgspec.msgpack.Encoder()
        self._compressor = zstandard.ZstdCompressor(level=zstd_level) if compression else None
        self._buf = bytearray(ARRAY32_PREFIX)
        self._buf_records = 0
        self._buf_events = 0
        #: Whether the buffer holds a record other than an event batch (the frame's FLAG_RECORDS).
        self._buf_other = False
        self._last_flush = real_seconds()
        self._closed = False
        self._file: BinaryIO | None = None
        self._segment_index = -1
        self._segment_size = 0
        self._segments: list[Path] = []

        from .._version import __version__

        self._tape_id = uuid.uuid4().hex
        self._created_ns = unix_time_ns()
        self._version = __version__
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if list_segments(self.path):
                raise TapeError(f"{self.path} already holds a tape: record to a new directory")
        except OSError as exc:
            raise TapeError(f"cannot create tape directory {self.path}: {exc}") from exc
        self._open_segment()

    # --- records ---------------------------------------------------------------------

    def write_events(self, seq: int, events: Sequence[Event]) -> None:
        """Record a batch of events; ``seq`` is the sequence number of ``events[0]``."""
        n = len(events)
        if not n:
            return
        if self._closed:
            raise TapeError(f"tape {self.path} is closed")
        if type(seq) is not int:
            # Caught here: msgpack would take a float, and the tape would not read back.
            raise TapeError(f"write_events: seq must be an int, got {seq!r}")
        first = type(events[0])
        code = EVENT_CODES.get(first)
        runs: Any
        if code is not None and (n == 1 or len(set(map(type, events))) == 1):
            runs = ((code, events if type(events) in (list, tuple) else list(events)),)
        else:
            runs = tuple((self._code(cls), list(group)) for cls, group in itertools.groupby(events, type))
        try:
            self._append((TAG_EVENTS, seq, runs), f"events at seq {seq}", splittable=True)
        except _Oversize as big:
            if n == 1:
                raise TapeError(f"cannot record the event at seq {seq} on tape {self.path}: it encodes to "
                                f"{big.size} bytes, more than a tape frame holds ({MAX_FRAME_BYTES})") from None
            # A batch too large for one frame goes in as several records, each its own frame.
            half = n // 2
            events = list(events)
            self.write_events(seq, events[:half])
            self.write_events(seq + half, events[half:])
            return
        self._buf_events += n
        self.events_written += n
        if len(self._buf) >= self.flush_bytes or real_seconds() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def write_swap(
        self,
        *,
        seq: int,
        slot: int,
        at_market_event: int,
        slot_market_event: int,
        old_hash: str,
        new_hash: str,
        old_language: str,
        new_language: str,
        params: dict[str, Any] | None = None,
        old_source: str | None = None,
        new_source: str | None = None,
        old_spec: str | None = None,
        new_spec: str | None = None,
    ) -> None:
        """Record a swap in ``slot`` (see ``SwapRecord`` for the three positions). Flushed at once."""
        self._check_ints(seq=seq, slot=slot, at_market_event=at_market_event, slot_market_event=slot_market_event)
        self._check_strs(old_hash=old_hash, new_hash=new_hash, old_language=old_language,
                         new_language=new_language)
        self._check_strs(none_ok=True, old_source=old_source, new_source=new_source,
                         old_spec=old_spec, new_spec=new_spec)
        rec = (TAG_SWAP, seq, slot, at_market_event, slot_market_event, old_hash, new_hash, old_language, new_language,
               clean_params(params or {}, "swap params"), old_source, new_source, old_spec, new_spec)
        self._append(rec, f"swap at seq {seq}")
        self.flush()

    def write_slot(
        self,
        *,
        seq: int,
        slot: int,
        action: str,
        hash: str,
        language: str,
        params: dict[str, Any] | None = None,
        source: str | None = None,
        spec: str | None = None,
    ) -> None:
        """Record a slot added (``action="add"``) or removed (``"remove"``). Flushed at once."""
        self._check_ints(seq=seq, slot=slot)
        self._check_strs(action=action, hash=hash, language=language)
        self._check_strs(none_ok=True, source=source, spec=spec)
        rec = (TAG_SLOT, seq, slot, action, hash, language, clean_params(params or {}, "slot params"),
               source, spec)
        self._append(rec, f"slot {action} at seq {seq}")
        self.flush()

    def write_connector(self, kind: str, info: dict[str, Any], ts_ns: int) -> None:
        """Record a connector session event (connect, disconnect, gap, resync, error, ...)."""
        self._check_strs(kind=kind)
        self._check_ints(ts_ns=ts_ns)
        self._append((TAG_CONNECTOR, kind, clean_params(info or {}, "connector info"), ts_ns),
                     f"connector {kind}")
        self._maybe_flush()

    def write_error(self, *, seq: int, slot: int, message: str) -> None:
        """Record a strategy error in ``slot`` around event ``seq``."""
        self._check_ints(seq=seq, slot=slot)
        self._check_strs(message=message)
        self._append((TAG_ERROR, seq, slot, message), f"error at seq {seq}")
        self._maybe_flush()

    def write_control(self, *, seq: int, at_market_event: int, action: str, reason: str, ts_ns: int) -> None:
        """Record an operator's ``halt`` or ``resume`` after ``at_market_event`` market events."""
        self._check_ints(seq=seq, at_market_event=at_market_event, ts_ns=ts_ns)
        self._check_strs(action=action, reason=reason)
        self._append((TAG_CONTROL, seq, at_market_event, action, reason, ts_ns), f"{action} at seq {seq}")
        self._maybe_flush()

    # --- flushing -----------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Encoded bytes buffered in memory, not yet handed to the OS."""
        return len(self._buf) - len(ARRAY32_PREFIX) if self._buf_records else 0

    def flush(self) -> None:
        """Write everything buffered as one frame (no-op when nothing is buffered)."""
        self._last_flush = real_seconds()
        if not self._buf_records:
            return
        if self._closed or self._file is None:
            raise TapeError(f"tape {self.path} is closed")
        buf = self._buf
        buf[1:5] = self._buf_records.to_bytes(4, "big")
        payload: bytes | bytearray = buf
        flags = FLAG_RECORDS if self._buf_other else 0
        if self._compressor is not None:
            packed = self._compressor.compress(buf)
            # Store the frame as is when compression does not pay (tiny frames).
            if len(packed) < len(buf):
                payload, flags = packed, flags | FLAG_ZSTD
        frame = frame_header(payload, flags) + payload
        self._write(frame)
        self.frames_written += 1
        self.events_flushed += self._buf_events
        self.records_flushed += self._buf_records
        self._buf = bytearray(ARRAY32_PREFIX)
        self._buf_records = 0
        self._buf_events = 0
        self._buf_other = False
        if self._segment_size >= self.segment_bytes:
            self._rotate()

    def close(self) -> None:
        """Flush, sync to disk and close. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
            if self._file is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._file.fileno())
        finally:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
        log.info("tape %s closed: %d events, %d records, %d frames, %d bytes in %d segment(s)",
                 self.path, self.events_flushed, self.records_flushed, self.frames_written,
                 self.bytes_written, len(self._segments))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def segments(self) -> list[Path]:
        """The segment files written so far."""
        return list(self._segments)

    def __enter__(self) -> TapeWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TapeWriter {str(self.path)!r} events={self.events_written} closed={self._closed}>"

    # --- internals ------------------------------------------------------------------------

    def _append(self, record: tuple[Any, ...], what: str, *, splittable: bool = False) -> None:
        if self._closed:
            raise TapeError(f"tape {self.path} is closed")
        buf = self._buf
        mark = len(buf)
        try:
            self._encoder.encode_into(record, buf, -1)
        except _ENCODE_ERRORS as exc:
            # encode_into may have appended part of the record before failing.
            del buf[mark:]
            raise TapeError(f"cannot record {what} on tape {self.path}: {exc}") from exc
        if len(buf) > MAX_FRAME_BYTES:
            self._make_room(mark, what, splittable)
        # After _make_room: the flag goes with the frame the record is in.
        if record[0] != TAG_EVENTS:
            self._buf_other = True
        self._buf_records += 1
        self.records_written += 1

    def _make_room(self, mark: int, what: str, splittable: bool) -> None:
        """The record just encoded at ``mark`` overfills the frame: flush what came before it.

        The frame reader refuses frames beyond ``MAX_READ_FRAME``, so no frame
        may grow past ``MAX_FRAME_BYTES``, whatever ``flush_bytes`` says.

        Raises:
            _Oversize: the record alone is larger than a frame may be and ``splittable``
                (it is not buffered; the caller splits it).
            TapeError: the same, for a record that cannot be split.
        """
        buf = self._buf
        size = len(buf) - mark
        if size + len(ARRAY32_PREFIX) > MAX_FRAME_BYTES:
            del buf[mark:]
            if splittable:
                raise _Oversize(size)
            raise TapeError(f"cannot record {what} on tape {self.path}: it encodes to {size} bytes, "
                            f"more than a tape frame holds ({MAX_FRAME_BYTES})")
        record = bytes(buf[mark:])
        del buf[mark:]
        self.flush()
        self._buf += record

    def _maybe_flush(self) -> None:
        if len(self._buf) >= self.flush_bytes or real_seconds() - self._last_flush >= self.flush_interval_s:
            self.flush()

    @staticmethod
    def _code(cls: type) -> int:
        code = EVENT_CODES.get(cls)
        if code is None:
            raise TapeError(
                f"cannot record a {cls.__module__}.{cls.__qualname__} on a tape: "
                "only Trade, Book, Bar, Gap, OrderUpdate and Fill events are recorded"
            )
        return code

    @staticmethod
    def _check_ints(**values: object) -> None:
        for name, v in values.items():
            if type(v) is not int:
                raise TapeError(f"tape record field {name} must be an int, got {v!r}")
            check_plain(v, name)

    @staticmethod
    def _check_strs(*, none_ok: bool = False, **values: object) -> None:
        for name, v in values.items():
            if not (isinstance(v, str) or (none_ok and v is None)):
                raise TapeError(f"tape record field {name} must be a str, got {v!r}")

    def _write(self, data: bytes) -> None:
        f = self._file
        assert f is not None
        try:
            view = memoryview(data)
            while view:
                n = f.write(view)
                view = view[n:]
            if self.fsync:
                os.fsync(f.fileno())
        except OSError as exc:
            # Cut the partial frame off so the tape stays readable and a later
            # flush (after space is freed) continues cleanly; keep the buffer.
            with contextlib.suppress(OSError):
                f.truncate(self._segment_size)
                f.seek(self._segment_size)
            raise TapeError(f"cannot write to tape segment {self._segments[-1]}: {exc}") from exc
        self._segment_size += len(data)
        self.bytes_written += len(data)

    def _open_segment(self) -> None:
        index = self._segment_index + 1
        path = self.path / segment_name(index)
        header = encode_segment_header(HeaderMap(
            tape_id=self._tape_id, segment=index, created_ns=self._created_ns,
            flox_trio_version=self._version, compression=self.compression, meta=self.meta,
        ))
        try:
            # Unbuffered: a frame goes to the OS in one write, so a crash of the
            # process leaves whole frames and at most one torn one at the end.
            f: BinaryIO = open(path, "xb", buffering=0)  # noqa: SIM115 - kept open across calls
        except FileExistsError as exc:
            raise TapeError(f"tape segment {path} already exists: is another writer recording here?") from exc
        except OSError as exc:
            raise TapeError(f"cannot create tape segment {path}: {exc}") from exc
        self._file = f
        self._segment_index = index
        self._segment_size = 0
        self._segments.append(path)
        self._write(header)

    def _rotate(self) -> None:
        f = self._file
        assert f is not None
        try:
            if self.fsync:
                os.fsync(f.fileno())
        finally:
            f.close()
            self._file = None
        self._open_segment()
        log.debug("tape %s: rotated to %s", self.path, self._segments[-1].name)


@contextlib.asynccontextmanager
async def open_tape_writer(path: str | os.PathLike[str], **options: Any) -> AsyncIterator[TapeWriter]:
    """A ``TapeWriter`` that is also flushed by a background task when idle.

    The plain writer checks ``flush_interval_s`` only when something is
    written, so after the last write of a burst the buffered tail waits for
    the next write. Here a task flushes it after ``flush_interval_s`` (on the
    Trio clock), which bounds loss by time even when the market goes quiet.
    The writer is closed (flushed and synced) on exit.
    """
    writer = TapeWriter(path, **options)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flush_idle, writer)
            yield writer
            nursery.cancel_scope.cancel(reason="tape writer closing")
    finally:
        writer.close()


async def _flush_idle(writer: TapeWriter) -> None:
    interval = writer.flush_interval_s or 0.05
    while True:
        await trio.sleep(interval)
        if writer.pending_bytes and not writer.closed:
            writer.flush()
