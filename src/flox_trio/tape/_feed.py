"""Replaying a tape into a runner: ``TapeFeed``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._core._events import Event, event_time_ns
from .._core._ports import Feed, FeedHub
from .._core._status import FeedStatus
from .._errors import FeedError
from ._format import MARKET_CODES
from ._reader import TapeInfo, TapeReader, _convert, tape_info
from ._records import Record, SlotRecord, SwapRecord


@attrs.frozen(kw_only=True)
class TapeFeedStatus(FeedStatus):
    path: str
    speed: float | None
    #: The recorded sequence number of the first event of the last batch published.
    position: int | None


class TapeFeed(Feed):
    """Publish a tape's market events (Trade, Book, Bar) into a runner, batch by recorded batch.

    Order updates and fills on the tape are what the engine produced, not
    what it was fed, so they are not published: the executor makes them
    again. Each recorded batch is published in one ``hub.publish`` call, so
    the engine sees the batches it saw when recording.

    Args:
        path: The tape directory.
        speed: ``None`` publishes as fast as the slots take events. A number
            paces publication at ``speed`` times real time, by the events' own
            times (receive time, else exchange time; a bar's end), with
            ``trio.sleep_until`` on the runner's Trio clock: under a
            ``MockClock`` a replay runs in deterministic virtual time.
        on_batch: Called with each batch just before it is published (a
            replay advances its clock and its progress bar with it).
        on_end: Called after the last batch was published.
        on_record: Called with each record of the tape that is not an event
            batch (a swap, a slot change, a halt, ...) where it was written:
            after the batches recorded before it, before the next one's
            ``on_batch`` (a replay repeats the operator's halts this way).

    ``swaps`` and ``slot_records`` are the recorded swaps and slot changes
    with the event sequence numbers at which they took effect, for a runner
    that reproduces them. The tape's header is checked when the feed is
    built; its records are scanned on first use of ``swaps``, ``slot_records``,
    ``symbols`` or ``info``.
    """

    finite = True

    def __init__(self, path: str | os.PathLike[str], *, speed: float | None = None,
                 on_batch: Callable[[list[Event]], None] | None = None,
                 on_end: Callable[[], None] | None = None,
                 on_record: Callable[[Record], None] | None = None) -> None:
        if speed is not None and (
            not isinstance(speed, int | float) or not math.isfinite(speed) or speed <= 0
        ):
            raise FeedError(f"TapeFeed speed must be a number > 0 (or None for as fast as possible), got {speed!r}")
        self.reader = TapeReader(path)
        self._on_batch = on_batch
        self._on_end = on_end
        self._on_record = on_record
        self.path = self.reader.path
        self.speed = None if speed is None else float(speed)
        #: Market events and batches published so far.
        self.published = 0
        self.batches_published = 0
        #: The recorded sequence number of the first event of the last batch published.
        self.position: int | None = None
        self._info: TapeInfo | None = None

    @property
    def info(self) -> TapeInfo:
        """``tape_info`` of the tape (computed once)."""
        if self._info is None:
            self._info = tape_info(self.path)
        return self._info

    @property
    def swaps(self) -> list[SwapRecord]:
        """The recorded swaps, in order."""
        return self.info.swaps

    @property
    def slot_records(self) -> list[SlotRecord]:
        """The recorded slot additions and removals, in order."""
        return self.info.slots

    @property
    def symbols(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.info.symbols)

    async def run(self, hub: FeedHub) -> None:
        # Frames are read from disk in this task: a frame is at most
        # flush_bytes (64 KiB by default), a short blocking read from the
        # page cache, and decoding it is CPU work a thread would not overlap.
        # The reader decodes a frame's events in one pass and hands each recorded
        # batch over as the list it decoded: published as it is, with no record
        # object around it (this loop runs once per batch, and batches can be small).
        speed = self.speed
        on_batch, on_record = self._on_batch, self._on_record
        publish = hub.publish
        start = 0.0
        t0: int | None = None
        for item in self.reader._decoded(MARKET_CODES):
            if not isinstance(item, tuple):
                if on_record is not None:
                    on_record(_convert(item))
                continue
            seq, batch, _ = item
            if not batch:
                continue  # only order events: the executor makes them again
            if speed is not None:
                ts = _batch_time_ns(batch)
                if ts:
                    if t0 is None:
                        t0, start = ts, trio.current_time()
                    await trio.sleep_until(start + (ts - t0) / 1e9 / speed)
            if on_batch is not None:
                on_batch(batch)
            await publish(batch)
            self.published += len(batch)
            self.batches_published += 1
            self.position = seq
        if self._on_end is not None:
            self._on_end()

    def status(self) -> TapeFeedStatus:
        return TapeFeedStatus(feed="TapeFeed", published=self.published, path=str(self.path), speed=self.speed,
                              position=self.position)


def _batch_time_ns(batch: list[Any]) -> int:
    # A batch is complete when its last event arrived: pace by the last one
    # that carries a time.
    for ev in reversed(batch):
        ts = event_time_ns(ev)
        if ts:
            return ts
    return 0
