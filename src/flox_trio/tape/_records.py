"""What a tape holds, as the reader hands it out: one frozen attrs class per record kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

import attrs

from .._core._events import Event


@attrs.frozen(slots=True)
class EventsRecord:
    """A batch of events as the engine published it.

    ``seq`` is the global sequence number of ``events[0]``; event ``i`` of the
    batch has sequence number ``seq + i``. Batch boundaries are kept because
    they are what the engine saw: a replay publishes the same batches.
    """

    seq: int
    events: list[Event]


@attrs.frozen(slots=True)
class SwapRecord:
    """A strategy swap in a slot.

    ``seq`` is the session's sequence number at the swap (every event before
    it), ``at_market_event`` the session's market-event count then (where a
    report draws it), ``slot_market_event`` the slot's own market-event count
    (where a replay performs it: the slot's events are the same in a replay,
    the other symbols' interleaving need not be). The sources are stored
    (when the runner had them) so that a replay can rebuild both strategies
    without the files they came from.
    """

    seq: int
    slot: int
    at_market_event: int
    slot_market_event: int
    old_hash: str
    new_hash: str
    old_language: str
    new_language: str
    params: dict[str, Any] = attrs.Factory(dict)
    old_source: str | None = None
    new_source: str | None = None
    old_spec: str | None = None
    new_spec: str | None = None


@attrs.frozen(slots=True)
class SlotRecord:
    """A slot added (``action="add"``) or removed (``action="remove"``) at event ``seq``."""

    seq: int
    slot: int
    action: str
    hash: str
    language: str
    params: dict[str, Any] = attrs.Factory(dict)
    source: str | None = None
    spec: str | None = None


@attrs.frozen(slots=True)
class ConnectorRecord:
    """A session event of a connector: "connect", "disconnect", "gap", "resync", "error", ..."""

    kind: str
    info: dict[str, Any]
    ts_ns: int


@attrs.frozen(slots=True)
class ErrorRecord:
    """A strategy raised while handling event ``seq`` (or around it) in ``slot``."""

    seq: int
    slot: int
    message: str


@attrs.frozen(slots=True)
class ControlRecord:
    """An operator's ``halt`` or ``resume`` after ``at_market_event`` market events (a replay does it again)."""

    seq: int
    at_market_event: int
    action: str
    reason: str
    ts_ns: int


Record: TypeAlias = EventsRecord | SwapRecord | SlotRecord | ConnectorRecord | ErrorRecord | ControlRecord


@attrs.frozen(slots=True)
class TapeHeader:
    """The tape's metadata, written at the start of every segment."""

    format_version: int
    tape_id: str
    created_ns: int
    flox_trio_version: str
    compression: str | None
    meta: dict[str, Any]


@attrs.frozen(slots=True)
class TornTail:
    """Where a tape stops being readable because the writer died mid-write.

    Everything before ``offset`` in ``segment`` was read; ``dropped_bytes``
    after it were not.
    """

    segment: Path
    offset: int
    dropped_bytes: int
    reason: str
