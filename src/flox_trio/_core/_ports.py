"""The ports of the core: what the engine needs from the parts plugged into it, and what it offers them.

Nothing here imports an implementation. A feed sees the engine as a
``FeedHub``; the engine sees a feed as a ``Feed``, reads time from a
``Clock`` and writes what happened to a ``Recorder`` (a tape).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Protocol

from ._events import Event
from ._status import FeedStatus


class Clock(Protocol):
    """The engine's clock (see ``_core/_clock.py``): one for scheduling, one wall-clock source."""

    def now(self) -> float:
        """Seconds on the Trio clock: timers, timeouts, rate windows."""

    def wall_ns(self) -> int:
        """Wall-clock nanoseconds for timestamps (receive times, order update times)."""


class FeedHub(Protocol):
    """The runner as a feed sees it."""

    @property
    def clock(self) -> Clock:
        """Stamp receive times with ``clock.wall_ns()``: latency is measured against it."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Hand a batch of events to the engine, in order.

        Lossless: waits while a slot that uses backpressure is full. Batches
        are the unit of the hot path: publish everything one frame (or one
        chunk of a file) decoded in one call.
        """

    @property
    def watched_symbols(self) -> frozenset[str]:
        """The plain symbols (``"BTCUSDT"``) that the slots watch right now."""

    async def wait_watch_changed(self) -> None:
        """Return when ``watched_symbols`` changes (a slot was added or removed)."""

    def connector_event(self, kind: str, **info: Any) -> None:
        """Report a session event ("connect", "disconnect", "gap", "resync", "error", ...).

        It is logged, counted in status and recorded on the tape.
        """


class Feed(abc.ABC):
    """Where events come from: ``run(hub)`` publishes batches into the engine.

    The runner starts ``run`` in its nursery once the body of
    ``async with open_runner(...)`` first awaits, and cancels it when the
    runner closes. Connectors, ``ListFeed``, ``PushFeed`` and ``TapeFeed``
    are feeds.
    """

    #: A finite feed (a list, a tape) is played to its end when the runner's
    #: body exits normally; a live feed is simply stopped.
    finite: bool = False

    #: True when the feed stamps ``recv_ts_ns`` with ``hub.clock.wall_ns()`` as
    #: events arrive (connectors): only then is receive-to-dispatch latency real.
    stamps_receive_time: bool = False

    #: Symbols the feed serves whether or not a slot watches them.
    symbols: tuple[str, ...] = ()

    @property
    def pending(self) -> int:
        """Events the feed has accepted but not yet published (``wait_idle`` waits for them)."""
        return 0

    @abc.abstractmethod
    async def run(self, hub: FeedHub) -> None:
        """Publish events into ``hub`` until the data ends or the task is cancelled."""

    def status(self) -> FeedStatus:
        """What ``flox-trio status`` shows for this feed."""
        return FeedStatus(type(self).__name__)


class Recorder(Protocol):
    """Where the runner records what happened (a ``TapeWriter``)."""

    def write_events(self, seq: int, events: Sequence[Event]) -> None: ...

    def write_swap(
        self, *, seq: int, slot: int, at_market_event: int, slot_market_event: int, old_hash: str,
        new_hash: str, old_language: str, new_language: str, params: dict[str, Any] | None = None,
        old_source: str | None = None, new_source: str | None = None, old_spec: str | None = None,
        new_spec: str | None = None,
    ) -> None: ...

    def write_slot(
        self, *, seq: int, slot: int, action: str, hash: str, language: str,
        params: dict[str, Any] | None = None, source: str | None = None, spec: str | None = None,
    ) -> None: ...

    def write_connector(self, kind: str, info: dict[str, Any], ts_ns: int) -> None: ...

    def write_error(self, *, seq: int, slot: int, message: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
