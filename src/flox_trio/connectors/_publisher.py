"""Publishing a session's batches into the engine in the order they were produced."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import trio

from .._core._events import Event
from .._errors import ConnectorError

PublishFn = Callable[[Sequence[Event]], Awaitable[None]]


async def _detached(events: Sequence[Event]) -> None:
    raise ConnectorError("the session is not running: there is no engine to publish into")


class Publisher:
    """One frame's events are one batch; batches reach ``FeedHub.publish`` in production order.

    The reader and a venue's background work (a Binance REST snapshot sync)
    both produce batches. Those queue in production order and whoever holds
    the flush publishes them, so a late book snapshot can never overtake a
    newer delta, and no batch is published twice or half.
    """

    __slots__ = ("_done", "_flushing", "_out", "_publish", "_waiters", "published")

    def __init__(self) -> None:
        self._publish: PublishFn = _detached
        self._out: deque[list[Event]] = deque()
        self._flushing = False
        self._waiters = 0
        self._done = trio.Event()
        #: Events handed to the engine so far.
        self.published = 0

    def attach(self, publish: PublishFn) -> None:
        self._publish = publish

    async def emit(self, events: list[Event]) -> None:
        """Publish ``events`` after every batch produced before them."""
        if not self._flushing and not self._out:
            # Fast path, the usual case: nobody else is publishing.
            self._flushing = True
            try:
                await self._publish(events)
                self.published += len(events)
            finally:
                self._flushing = False
                if self._waiters or self._out:
                    done, self._done = self._done, trio.Event()
                    done.set()
            if self._out:
                await self.flush()
            return
        self._out.append(events)
        await self.flush()

    def queue(self, events: list[Event]) -> None:
        """Take a batch in production order now; the producer publishes it with ``flush()``."""
        self._out.append(events)

    async def flush(self) -> None:
        """Publish every queued batch (or wait while another task is doing so)."""
        while self._flushing:
            self._waiters += 1
            try:
                await self._done.wait()
            finally:
                self._waiters -= 1
        if not self._out:
            return
        self._flushing = True
        out, publish = self._out, self._publish
        try:
            while out:
                batch = out.popleft()
                await publish(batch)
                self.published += len(batch)
        finally:
            self._flushing = False
            if self._waiters:
                done, self._done = self._done, trio.Event()
                done.set()
