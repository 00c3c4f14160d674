"""Offline feeds: a list of events, or events pushed in by the caller."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import trio

from .._core._events import Event, event_time_ns
from .._core._ports import Feed, FeedHub
from .._core._status import FeedStatus
from .._errors import FeedError


@attrs.frozen(kw_only=True)
class ListFeedStatus(FeedStatus):
    #: Events the list holds.
    events: int


class ListFeed(Feed):
    """Publish a fixed sequence of events, ``batch_size`` at a time, as fast as the slots take them.

    With ``pace=True`` the feed sleeps (on the runner's Trio clock) so that
    events are published at the spacing of their ``recv_ts_ns``; under a
    ``MockClock`` that gives timers (order acknowledgement latency, bars)
    deterministic virtual time.
    """

    finite = True

    def __init__(self, events: Iterable[Event], *, batch_size: int = 1024, pace: bool = False) -> None:
        if batch_size < 1:
            raise FeedError(f"ListFeed batch_size must be >= 1, got {batch_size}")
        self.events: list[Event] = list(events)
        self.batch_size = batch_size
        self.pace = pace
        self.published = 0
        self.symbols = tuple(dict.fromkeys(getattr(e, "symbol", "") for e in self.events[:10_000]))

    async def run(self, hub: FeedHub) -> None:
        events, size = self.events, self.batch_size
        if not self.pace:
            for i in range(0, len(events), size):
                chunk = events[i : i + size]
                await hub.publish(chunk)
                self.published += len(chunk)
            return
        start_clock = trio.current_time()
        t0: int | None = None
        batch: list[Event] = []
        batch_ts = 0
        for ev in events:
            ts = event_time_ns(ev)
            if t0 is None:
                t0, batch_ts = ts, ts
            if ts != batch_ts or len(batch) >= size:
                await hub.publish(batch)
                self.published += len(batch)
                batch = []
                batch_ts = ts
                await trio.sleep_until(start_clock + (ts - t0) / 1e9)
            batch.append(ev)
        if batch:
            await hub.publish(batch)
            self.published += len(batch)

    def status(self) -> ListFeedStatus:
        return ListFeedStatus(feed="ListFeed", published=self.published, events=len(self.events))


class PushFeed(Feed):
    """A feed the caller drives: ``await feed.push(events)`` publishes them.

    Useful to embed the engine behind your own data source and in tests that
    want to interleave publishing with swaps. ``close()`` ends the feed, which
    makes it finite from then on.
    """

    def __init__(self, symbols: Sequence[str] = (), *, buffer: int = 64) -> None:
        self.symbols = tuple(symbols)
        self._send, self._recv = trio.open_memory_channel[Sequence[Event]](buffer)
        self.published = 0
        self.pushed = 0

    @property
    def pending(self) -> int:
        return self.pushed - self.published

    @property
    def finite(self) -> bool:  # type: ignore[override]
        return self._send._closed

    async def push(self, events: Sequence[Event] | Event) -> None:
        """Publish one event or a batch; waits while the engine applies backpressure."""
        batch = list(events) if isinstance(events, Sequence) else [events]
        if batch:
            await self._send.send(batch)
            self.pushed += len(batch)

    def push_nowait(self, events: Sequence[Event] | Event) -> None:
        """Publish without waiting; raises ``trio.WouldBlock`` when the buffer is full."""
        batch = list(events) if isinstance(events, Sequence) else [events]
        if batch:
            self._send.send_nowait(batch)
            self.pushed += len(batch)

    def close(self) -> None:
        """No more events: the runner drains what was pushed and the feed ends."""
        self._send.close()

    async def run(self, hub: FeedHub) -> None:
        async for batch in self._recv:
            await hub.publish(batch)
            self.published += len(batch)

    def status(self) -> FeedStatus:
        return FeedStatus("PushFeed", self.published)


