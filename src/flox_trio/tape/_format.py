"""The on-disk layout of a tape, shared by the writer and the reader.

A tape is a directory of append-only segment files ``seg-000000.tape``,
``seg-000001.tape``, ... Each segment is::

    segment header   8s magic "FLXTAPE\\0", u16 format version, u16 flags (0),
                     u32 length and u32 CRC32 of the header map that follows
    header map       msgpack: tape_id, segment, created_ns, flox_trio_version,
                     compression, meta
    frame*           u32 payload length, u16 flags, u16 marker, u32 payload CRC32,
                     u32 CRC32 of the previous 12 bytes; then the payload

Frame flags: bit 0, the payload is zstd-compressed; bit 1 (format 4), the
frame holds a record other than an event batch. A session's tape is almost all
event batches, so what a replay plans from (its slots and swaps) is found in a
few frames, the others skipped by their length without being read.

All integers are little-endian. A frame's payload (zstd-compressed when flag
bit 0 is set) is one msgpack array of records, so a frame is decoded in a
single call. Records are msgspec array-like structs tagged by an int:

    [1, seq, [[event_code, [event, ...]], ...]]     a batch of events
    [2, seq, slot, at_market_event, slot_market_event, old_hash, ...]   a swap
    [3, seq, slot, action, hash, language, ...]      a slot added or removed
    [4, kind, info, ts_ns]                           a connector event
    [5, seq, slot, message]                          a strategy error

An event batch is split into runs of one event type. A trade (the bulk of
any tape) is a msgpack array of its fields in order, which msgspec encodes
from, and decodes straight into, the ``Trade`` struct in C; a field added to
``Trade`` goes last, with a default, so that shorter arrays still read. The
other events are msgpack maps keyed by attrs field name, decoded straight into
the frozen attrs classes; keying by name keeps old tapes readable when an event
class gains a defaulted field. Format 2 wrote trades as maps too: it is still
read (``READ_VERSIONS``), its trades upgraded as they are decoded.

The frame header has its own CRC so that a damaged length field is told apart
from a write that stopped half-way: only the latter, at the very end of the
last segment, is a torn tail. A length the writer cannot have written (more
than ``MAX_READ_FRAME``), or one that runs past the end of the file while
whole frames follow it, is damage too, never a torn tail.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, Union

import attrs
import msgspec

from .._core._events import Bar, Book, Fill, Gap, OrderUpdate, Trade
from .._errors import TapeError

#: 2: swap records carry the session's market-event index and the slot's own count.
#: 3: trades are arrays (half the bytes of a map, and a third less time to decode).
#: 4: a frame that holds any record besides event batches says so in its flags (``FLAG_RECORDS``).
FORMAT_VERSION: Final = 4
#: The versions this flox-trio reads.
READ_VERSIONS: Final = frozenset({2, 3, 4})
#: The first version whose frames carry ``FLAG_RECORDS``: in older tapes every frame must be read to find them.
FLAGGED_RECORDS_SINCE: Final = 4

SEGMENT_MAGIC: Final = b"FLXTAPE\x00"
SEGMENT_HEADER = struct.Struct("<8sHHII")
#: A header map larger than this is not a header: refuse it rather than allocate.
MAX_HEADER_MAP = 16 * 1024 * 1024

FRAME_HEADER = struct.Struct("<IHHII")
FRAME_MARKER: Final = 0x5446  # "FT"
FLAG_ZSTD: Final = 1
#: The frame holds a record other than an event batch (a slot, a swap, a connector event, an error,
#: a halt): a reader after those alone (a replay's plan, ``tape swaps``) skips the other frames unread.
FLAG_RECORDS: Final = 2
KNOWN_FRAME_FLAGS: Final = FLAG_ZSTD | FLAG_RECORDS
#: The largest frame the writer cuts, before compression: a record that would
#: make the buffer larger is put in a frame of its own, and an event batch that
#: does not fit in one frame is split into several records.
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
#: The largest frame the reader accepts, stored or decompressed: a few times
#: what any writer cuts. A frame header that claims more, or a zstd frame that
#: declares or inflates to more, is damage (or a crafted file), and is refused
#: before anything is allocated for it.
MAX_READ_FRAME: Final = 4 * MAX_FRAME_BYTES

#: Bytes reserved at the start of a frame's record buffer for the msgpack
#: array32 header, filled in with the record count when the frame is cut.
ARRAY32_PREFIX: Final = b"\xdd\x00\x00\x00\x00"

COMPRESSIONS: Final = (None, "zstd")

_SEGMENT_RE = re.compile(r"^seg-(\d{6,})\.tape$")

TAG_EVENTS: Final = 1
TAG_SWAP: Final = 2
TAG_SLOT: Final = 3
TAG_CONNECTOR: Final = 4
TAG_ERROR: Final = 5
TAG_CONTROL: Final = 6

EVENT_CLASSES: Final[tuple[type, ...]] = (Trade, Book, Bar, OrderUpdate, Fill, Gap)
EVENT_CODES: Final[dict[type, int]] = {cls: code for code, cls in enumerate(EVENT_CLASSES)}
MARKET_CODES: Final = frozenset({EVENT_CODES[Trade], EVENT_CODES[Book], EVENT_CODES[Bar], EVENT_CODES[Gap]})


# A trade as format 2 wrote it: a map keyed by field name (``Trade``'s fields, as a map).
_MapTrade: Final = msgspec.defstruct(
    "_MapTrade",
    [(f.name, f.type) if f.default is msgspec.NODEFAULT else (f.name, f.type, f.default)
     for f in msgspec.structs.fields(Trade)],
    frozen=True, gc=False,
)


def _upgrade_trades(events: list[Any]) -> list[Any]:
    astuple = msgspec.structs.astuple
    return [Trade(*astuple(e)) for e in events]


#: The class a format decodes each event code into when it is not the event class itself,
#: and what turns a list of those into events.
_LEGACY: Final[dict[int, dict[int, tuple[type, Any]]]] = {2: {EVENT_CODES[Trade]: (_MapTrade, _upgrade_trades)}}


def _wire_class(code: int, version: int) -> type:
    legacy = _LEGACY.get(version, {}).get(code)
    return EVENT_CLASSES[code] if legacy is None else legacy[0]


def upgrade(code: int, version: int) -> Any:
    """What turns the decoded events of ``code`` in a ``version`` tape into events; None when they are."""
    legacy = _LEGACY.get(version, {}).get(code)
    return None if legacy is None else legacy[1]


# msgspec builds attrs instances without calling __init__ (frozen or not),
# which is what makes reading back ~1 M events/s possible at all.
@functools.cache
def event_decoder(code: int, version: int) -> msgspec.msgpack.Decoder[Any]:
    """The decoder of one encoded run of ``code`` events in a ``version`` tape (see ``upgrade``)."""
    return msgspec.msgpack.Decoder(list[_wire_class(code, version)])  # type: ignore[misc]


# --- wire records ----------------------------------------------------------------


class WireEvents(msgspec.Struct, array_like=True, tag=TAG_EVENTS, frozen=True):
    seq: int
    # A Literal, so an event code this version does not know fails the frame's decode.
    runs: list[tuple[Literal[0, 1, 2, 3, 4, 5], msgspec.Raw]]


class WireSwap(msgspec.Struct, array_like=True, tag=TAG_SWAP, frozen=True):
    seq: int
    slot: int
    at_market_event: int
    slot_market_event: int
    old_hash: str
    new_hash: str
    old_language: str
    new_language: str
    params: dict[str, Any]
    old_source: str | None
    new_source: str | None
    old_spec: str | None
    new_spec: str | None


class WireSlot(msgspec.Struct, array_like=True, tag=TAG_SLOT, frozen=True):
    seq: int
    slot: int
    action: str
    hash: str
    language: str
    params: dict[str, Any]
    source: str | None
    spec: str | None


class WireConnector(msgspec.Struct, array_like=True, tag=TAG_CONNECTOR, frozen=True):
    kind: str
    info: dict[str, Any]
    ts_ns: int


class WireError(msgspec.Struct, array_like=True, tag=TAG_ERROR, frozen=True):
    seq: int
    slot: int
    message: str


class WireControl(msgspec.Struct, array_like=True, tag=TAG_CONTROL, frozen=True):
    seq: int
    at_market_event: int
    action: str
    reason: str
    ts_ns: int


WireRecord = WireEvents | WireSwap | WireSlot | WireConnector | WireError | WireControl

#: The reference decode of a frame: records, each event run left encoded for a second decode.
FRAME_DECODER: Final = msgspec.msgpack.Decoder(list[WireRecord])


# --- decoding a frame in one pass -------------------------------------------------------
#
# The same bytes as above, read by msgspec in a single call: an event run
# ``[code, [event, ...]]`` is an array-like struct tagged by its code, so the
# events of the codes asked for are decoded straight into the attrs classes
# while the frame is parsed (the reference decode walks every event twice: once
# to skip it as Raw, once to decode it); the runs of other codes stay Raw.


@attrs.frozen(slots=True)
class FrameDecoder:
    """A one-pass decoder of frames, and the types of what it gives.

    ``decoder`` gives a frame's records: ``WireSwap`` ... ``WireControl`` as
    ``FRAME_DECODER`` does, and for an event batch an ``events_type`` struct
    (``seq``, ``runs``) whose runs each have ``events``: a list of events when
    the run's type is in ``decoded``, its Raw bytes otherwise.
    """

    decoder: msgspec.msgpack.Decoder[list[Any]]
    #: A msgspec Struct type built at run time (``seq``, ``runs``): Any, as mypy cannot see its fields.
    events_type: type[Any]
    decoded: frozenset[type[msgspec.Struct]]
    #: Run types whose events are an older format's, and what turns them into events.
    upgrades: dict[type[msgspec.Struct], Any]


def _run_type(code: int, decode: bool, version: int) -> type[msgspec.Struct]:
    cls = EVENT_CLASSES[code]
    events: Any = list[_wire_class(code, version)] if decode else msgspec.Raw  # type: ignore[misc]
    # forbid_unknown_fields: a run is a pair, as the reference's tuple says; an array-like
    # struct would otherwise ignore what follows its fields.
    return msgspec.defstruct(f"{cls.__name__}{'Run' if decode else 'RawRun'}", [("events", events)],
                             array_like=True, tag=code, frozen=True, forbid_unknown_fields=True)


@functools.cache
def frame_decoder(codes: frozenset[int], version: int = FORMAT_VERSION) -> FrameDecoder:
    """The one-pass frame decoder of a ``version`` tape that decodes the events of ``codes`` (indices into
    ``EVENT_CLASSES``).

    It reads what ``FRAME_DECODER`` reads and refuses what it refuses (an
    unknown event code, a malformed record): a reader that gets an error from
    it decodes the frame again the reference way, which gives the records
    before the bad one and the error message the reference gives.
    """
    runs = tuple(_run_type(code, code in codes, version) for code in range(len(EVENT_CLASSES)))
    # A union built at run time from the codes: a tagged union of array-like structs,
    # told apart by their first element, the event code.
    run_union: Any = Union[runs]  # noqa: UP007
    events = msgspec.defstruct("DecodedEvents", [("seq", int), ("runs", list[run_union])],
                               array_like=True, tag=TAG_EVENTS, frozen=True)
    record: Any = Union[events, WireSwap, WireSlot, WireConnector, WireError, WireControl]  # noqa: UP007
    upgrades = {t: upgrade(code, version) for code, t in enumerate(runs) if code in codes}
    return FrameDecoder(msgspec.msgpack.Decoder(list[record]), events,
                        frozenset(t for code, t in enumerate(runs) if code in codes),
                        {t: fn for t, fn in upgrades.items() if fn is not None})


class HeaderMap(msgspec.Struct, frozen=True):
    tape_id: str
    segment: int
    created_ns: int
    flox_trio_version: str
    compression: str | None
    meta: dict[str, Any]


HEADER_DECODER: Final = msgspec.msgpack.Decoder(HeaderMap)


# --- segments ----------------------------------------------------------------------


def segment_name(index: int) -> str:
    return f"seg-{index:06d}.tape"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of a tape directory, in order."""
    found: list[tuple[int, Path]] = []
    for p in directory.iterdir():
        m = _SEGMENT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    found.sort()
    return found


def encode_segment_header(header: HeaderMap) -> bytes:
    body = msgspec.msgpack.encode(header)
    fixed = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, len(body), zlib.crc32(body))
    return fixed + body


def frame_header(payload: bytes | bytearray, flags: int) -> bytes:
    head = struct.pack("<IHHI", len(payload), flags, FRAME_MARKER, zlib.crc32(payload))
    return head + zlib.crc32(head).to_bytes(4, "little")


# --- what may be written ----------------------------------------------------------------

# Whole words (after splitting snake_case, kebab-case and camelCase) that name
# a credential, and fragments that do so wherever they appear.
_SECRET_WORDS: Final = frozenset({"key", "keys", "pwd", "pass", "auth", "authorization", "cookie"})
_SECRET_FRAGMENTS: Final = (
    "secret", "token", "passw", "passphrase", "apikey", "privkey", "privatekey",
    "accesskey", "listenkey", "credential", "signature",
)
_WORD_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def looks_secret(key: str) -> bool:
    """Whether a dict key names a credential (``api_key``, ``apiSecret``, ``token``, ...)."""
    words = [w.lower() for w in _WORD_RE.findall(key)]
    joined = "".join(words)
    return any(w in _SECRET_WORDS for w in words) or any(f in joined for f in _SECRET_FRAGMENTS)


def check_meta(meta: object, where: str = "meta") -> None:
    """Refuse meta data that holds a credential or that would not read back as written."""
    if isinstance(meta, dict):
        for k, v in meta.items():
            if not isinstance(k, str):
                raise TapeError(f"tape {where} keys must be strings, got {k!r}")
            if looks_secret(k):
                raise TapeError(
                    f"refusing to write {where}[{k!r}] to a tape: it looks like a credential "
                    "(key/secret/token/password/passphrase); tapes are shared, credentials never go on them"
                )
            check_meta(v, f"{where}[{k!r}]")
    elif isinstance(meta, list | tuple):
        for i, v in enumerate(meta):
            check_meta(v, f"{where}[{i}]")
    else:
        check_plain(meta, where)


def check_plain(value: object, where: str) -> None:
    """Refuse a scalar that msgpack would silently turn into something else."""
    if value is None or isinstance(value, bool | str | float):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise TapeError(f"{where} = {value} does not fit in 64 bits")
        return
    raise TapeError(
        f"{where} must be JSON-like data (str, int, float, bool, None, list, dict), "
        f"got {type(value).__name__}: {value!r}"
    )


def clean_params(value: Any, where: str) -> Any:
    """JSON-like ``value`` with credential-looking keys redacted, for swap/slot/connector records.

    These come from the engine's hot path (a swap that already happened, a
    connector that reconnected), so a secret is blanked out rather than
    refused; ``meta`` is refused instead, because its author is at hand.
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            out[key] = "<redacted>" if looks_secret(key) else clean_params(v, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [clean_params(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Decimal):
        # Exact as text; a float would round it.
        return str(value)
    check_plain(value, where)
    return value
