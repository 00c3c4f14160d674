"""What a feed is: something that publishes batches of events into a runner.

A feed's ``run(hub)`` is started by the runner in its nursery once the body
of ``async with open_runner(...)`` first awaits, and is cancelled when the
runner closes. Connectors, the simulator client, ``ListFeed`` and
``TapeFeed`` are all feeds.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Protocol

from .._events import Event


class FeedHub(Protocol):
    """The runner as a feed sees it."""

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
    """Base class of every feed."""

    #: A finite feed (a list, a tape) is played to its end when the runner's
    #: body exits normally; a live feed is simply stopped.
    finite: bool = False

    #: Symbols the feed serves whether or not a slot watches them.
    symbols: tuple[str, ...] = ()

    @property
    def pending(self) -> int:
        """Events the feed has accepted but not yet published (``wait_idle`` waits for them)."""
        return 0

    @abc.abstractmethod
    async def run(self, hub: FeedHub) -> None:
        """Publish events into ``hub`` until the data ends or the task is cancelled."""

    def status(self) -> dict[str, Any]:
        """What ``flox-trio status`` shows for this feed."""
        return {"feed": type(self).__name__}
