"""Frozen snapshots of what the engine and its parts are doing, for status, metrics and dashboards.

Each part returns its own snapshot class; feeds and executors derive theirs
from ``FeedStatus`` and ``ExecutorStatus``, so ``RunnerStatus`` holds any of
them while staying typed. ``flox_trio._core._convert.converter`` turns a
snapshot into JSON (with a ``kind`` tag for the subclass) and back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs


@attrs.frozen
class FeedStatus:
    """What every feed reports; feeds add their own fields in a subclass."""

    #: The feed's class name, e.g. "Binance", "ListFeed".
    feed: str
    #: Market events published into the engine so far.
    published: int = 0


@attrs.frozen
class ExecutorStatus:
    """What every executor reports; executors add their own fields in a subclass."""

    #: The executor's class name, e.g. "PaperExecutor".
    executor: str
    orders: int = 0
    open_orders: int = 0
    fills: int = 0


@attrs.frozen
class SwapStatus:
    """The last swap of a slot, as ``status`` shows it."""

    at_event: int
    at_market_event: int
    pause_s: float
    stop_error: str | None = None


@attrs.frozen
class SlotStatus:
    index: int
    state: str
    language: str
    strategy: str
    spec: str
    source_hash: str
    symbols: tuple[str, ...]
    params: dict[str, Any]
    dispatched: int
    queue_depth: int
    dropped: int
    errors: int
    last_error: str | None
    quarantine_reason: str | None
    swaps: int
    #: Smoothed receive-to-dispatch latency in microseconds; None when the feed's
    #: events are not stamped by this engine's clock (lists, tapes).
    latency_us: float | None
    last_swap: SwapStatus | None
    open_orders: int
    position: dict[str, Decimal]
    realized_pnl: Decimal
    unrealized_pnl: Decimal

    @property
    def quarantined(self) -> bool:
        return self.state == "quarantined"


@attrs.frozen
class RunnerStatus:
    #: Events (market and order) that went through the engine so far.
    published: int
    feed: FeedStatus
    executor: ExecutorStatus
    slots: tuple[SlotStatus, ...]
    connector_events: dict[str, int]
    strategy_errors: int = 0
