"""Publishing a session's batches into the engine, in production order, from a task of its own."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import trio

from .._core._events import Event, Gap, Trade
from .._errors import ConnectorError
from ._report import Reporter

log = logging.getLogger("flox_trio.connectors")

PublishFn = Callable[[Sequence[Event]], Awaitable[None]]
PublishNowaitFn = Callable[[Sequence[Event]], bool]
WallFn = Callable[[], int]

# Batches published back to back before the publishing task yields once: a publish that
# finds room in every slot never yields, and a long backlog must not starve the reader.
_YIELD_EVERY = 256
# What waits is published as one batch, up to this many events: at a high rate most frames
# carry one trade each, and a publish costs more than dispatching its events (bench/live.py:
# the engine's CPU at 50k trades/s over 200 symbols went from 74-79 % to 51-55 %). Small, as
# the batch being published is out of the backlog's bound.
_MERGE_MAX = 64


async def _detached(events: Sequence[Event]) -> None:
    raise ConnectorError("the session is not running: there is no engine to publish into")


class _Dropped:
    """What the backlog dropped of one symbol since the last batch published."""

    __slots__ = ("exchange_ts_ns", "first_id", "last_id", "n")

    def __init__(self, exchange_ts_ns: int) -> None:
        self.n = 0
        self.first_id = ""
        self.last_id = ""
        self.exchange_ts_ns = exchange_ts_ns


class Publisher:
    """Batches reach ``FeedHub.publish`` whole and in production order, those waiting merged into one.

    The reader of a connection and a venue's background work (a Binance REST
    snapshot sync) both produce batches. They ``queue`` them in production
    order and return at once; only ``run``, a task of the session's own,
    publishes. So a slow strategy under the ``block`` policy holds up that
    task alone: the socket keeps being read and the venue's pings answered,
    a late book snapshot never overtakes a newer delta, no batch is published
    twice or half, and a connection that ends never cancels a publish.

    What waits is bounded by ``limit`` events (and the batch being published by
    ``_MERGE_MAX``, or by its frame's events when one frame holds more). Beyond it the oldest batches
    are dropped, counted per symbol and told to the strategies as a ``Gap``
    (reason "dropped", with the first and last trade id dropped) in front of
    the next batch published; a ``Gap`` inside a dropped batch is kept and
    published in front of it too.
    """

    __slots__ = ("_carried", "_drops", "_nowait", "_out", "_parked", "_publish", "_reporter", "_shedding",
                 "_wall_ns", "dropped", "inline", "limit", "pending", "published", "venue")

    def __init__(self, venue: str, limit: int, reporter: Reporter) -> None:
        self.venue = venue
        self.limit = limit
        self._reporter = reporter
        self._publish: PublishFn = _detached
        self._nowait: PublishNowaitFn | None = None
        self._wall_ns: WallFn = lambda: 0
        # (batch, the wall-clock ns it was produced at)
        self._out: deque[tuple[list[Event], int]] = deque()
        # The publishing task while it waits for a batch: woken with the lowest-level reschedule,
        # since the reader wakes it for nearly every frame.
        self._parked: trio.lowlevel.Task | None = None
        self._carried: list[Event] = []
        self._drops: dict[str, _Dropped] = {}
        self._shedding = False
        #: Events handed to the engine so far.
        self.published = 0
        #: Batches of them the engine took in the reader's call (``offer``), not from ``run``.
        self.inline = 0
        #: Events waiting to be published.
        self.pending = 0
        #: Events the backlog dropped, per symbol.
        self.dropped: dict[str, int] = {}

    def attach(self, publish: PublishFn, wall_ns: WallFn, publish_nowait: PublishNowaitFn | None = None) -> None:
        self._publish = publish
        self._nowait = publish_nowait
        self._wall_ns = wall_ns

    @property
    def backlog_age(self) -> float | None:
        """Seconds the oldest waiting batch has waited, None when nothing waits."""
        out = self._out
        if not out:
            return None
        try:
            return max(0.0, (self._wall_ns() - out[0][1]) / 1e9)
        except RuntimeError:  # asked from outside Trio
            return None

    def offer(self, events: list[Event], produced_ns: int) -> None:
        """``queue``, or publish here and now when that keeps the order and waits for nothing.

        Only when this publisher is idle (nothing waits, nothing is being published,
        no drop to tell) and the engine takes the batch in the call (``publish_nowait``):
        then the reader's frame reaches the strategy without a switch to ``run``.
        """
        nowait = self._nowait
        if (nowait is not None and self._parked is not None and not self._out and not self._drops
                and not self._carried and nowait(events)):
            self.published += len(events)
            self.inline += 1
            return
        self.queue(events, produced_ns)

    def queue(self, events: list[Event], produced_ns: int) -> None:
        """Take a batch in production order; ``run`` publishes it after every batch queued before."""
        self._out.append((events, produced_ns))
        self.pending += len(events)
        if self.pending > self.limit:
            self._shed()
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish queued batches for as long as the session runs."""
        out = self._out
        task_status.started()
        streak = 0
        while True:
            if not out:
                if self._shedding:
                    self._shedding = False
                    log.info("%s: publishing caught up with the venue", self.venue)
                self._parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._unpark)
                streak = 0
                continue
            events, _ = out.popleft()
            if out and len(events) + len(out[0][0]) <= _MERGE_MAX:
                events = [*events]
                while out and len(events) + len(out[0][0]) <= _MERGE_MAX:
                    events += out.popleft()[0]
            self.pending -= len(events)
            if self._drops or self._carried:
                events = [*self._notices(), *events]
            await self._publish(events)
            self.published += len(events)
            streak += 1
            if streak == _YIELD_EVERY:
                streak = 0
                await trio.lowlevel.checkpoint()

    def _unpark(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    # --- overflow ----------------------------------------------------------------------------

    def _shed(self) -> None:
        out = self._out
        # The newest batch always stays: it is what the strategies will see next.
        while self.pending > self.limit and len(out) > 1:
            events, _ = out.popleft()
            self.pending -= len(events)
            self._drop(events)
        if not self._shedding:
            self._shedding = True
            self._reporter.error(
                "publish backlog full",
                f"{self.limit} events wait for the slots, which take them slower than the venue sends them; "
                "dropping the oldest, counted per symbol and told to the strategies as gaps",
                limit=self.limit)

    def _drop(self, events: list[Event]) -> None:
        drops, dropped = self._drops, self.dropped
        for ev in events:
            if type(ev) is Gap:
                # Already a notice of something missed: it goes out with the next batch.
                self._carried.append(ev)
                continue
            sym = ev.symbol
            d = drops.get(sym)
            if d is None:
                d = drops[sym] = _Dropped(getattr(ev, "exchange_ts_ns", 0))
            d.n += 1
            if type(ev) is Trade:
                if not d.first_id:
                    d.first_id = ev.trade_id
                d.last_id = ev.trade_id
            dropped[sym] = dropped.get(sym, 0) + 1

    def _notices(self) -> list[Event]:
        now = self._wall_ns()
        notices = self._carried
        self._carried = []
        notices.extend(Gap(sym, "dropped", d.n, d.first_id, d.last_id, d.exchange_ts_ns, now, self.venue)
                       for sym, d in self._drops.items())
        self._drops = {}
        return notices
