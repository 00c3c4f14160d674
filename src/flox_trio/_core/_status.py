"""Frozen records of what the engine and its parts are and did: status snapshots, swap reports, strategy identities.

Each part returns its own snapshot class; feeds and executors derive theirs
from ``FeedStatus`` and ``ExecutorStatus``, so ``RunnerStatus`` holds any of
them while staying typed. An executor describes how it was built with an
``ExecutorSettings`` subclass (recorded on a tape, so a replay rebuilds the
same stack). ``flox_trio._core._convert.converter`` turns any of these into
JSON (with a ``kind`` tag naming the subclass) and back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from ._states import SlotState


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
class ExecutorSettings:
    """How an executor was configured; each executor has a subclass (``PaperSettings``, ...)."""


@attrs.frozen
class StrategyInfo:
    """Who a strategy is: what the tape records at every add and swap, and what rebuilds it.

    ``params`` are JSON-friendly (the symbols included), ``source`` the text it
    was built from when known.
    """

    language: str
    spec: str
    name: str
    source_hash: str
    params: dict[str, Any]
    source: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(slots=True)
class SwapReport:
    """What a completed swap did.

    ``at_event`` and ``at_market_event`` count the slot's own deliveries (all
    events, market events only) at the swap point; the latter is what a
    replay pins the swap to, since it does not depend on when order events
    arrived. ``global_seq`` and ``global_market_event`` place the swap in the
    whole session (every event, market events) for reports across symbols.
    """

    slot: int
    at_event: int
    at_market_event: int
    global_seq: int
    global_market_event: int
    old_hash: str
    new_hash: str
    old_language: str
    new_language: str
    pause_s: float
    stop_error: str | None = None
    #: What changed, for people: "EmaStrategy fast=5→8 slow=12→21".
    label: str = ""


def change_label(old_name: str, old_params: dict[str, Any], new_name: str, new_params: dict[str, Any],
                 old_hash: str = "", new_hash: str = "") -> str:
    """What a swap changed, in a few words: the strategy's name, its changed parameters, or its code."""
    if old_name != new_name:
        return f"{old_name} → {new_name}"
    changed = [f"{k}={_short(old_params.get(k, _MISSING))}→{_short(new_params.get(k, _MISSING))}"
               for k in sorted(set(old_params) | set(new_params), key=str)
               if k != "symbols" and old_params.get(k, _MISSING) != new_params.get(k, _MISSING)]
    if changed:
        return f"{new_name} {' '.join(changed)}"
    if old_hash != new_hash:
        return f"{new_name} new code {old_hash[:8]}→{new_hash[:8]}"
    return f"{new_name} (same code and parameters)"


_MISSING = object()


def _short(value: Any) -> str:
    if value is _MISSING:
        return "∅"
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


@attrs.frozen
class SlotStatus:
    index: int
    state: SlotState
    language: str
    strategy: str
    spec: str
    source_hash: str
    symbols: tuple[str, ...]
    params: dict[str, Any]
    dispatched: int
    queue_depth: int
    #: Events the overflow policy dropped, in all and per symbol.
    dropped: int
    dropped_by_symbol: dict[str, int]
    #: Events the venue said were missed before they reached the engine (trade-id gaps), per symbol.
    missed: dict[str, int]
    errors: int
    last_error: str | None
    quarantine_reason: str | None
    swaps: int
    #: Smoothed receive-to-dispatch latency in microseconds; None when the feed's
    #: events are not stamped by this engine's clock (lists, tapes).
    latency_us: float | None
    last_swap: SwapReport | None
    open_orders: int
    position: dict[str, Decimal]
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    #: Why the slot receives nothing though it runs, e.g. "no data: subscribe refused by venue (...)".
    note: str | None = None

    @property
    def quarantined(self) -> bool:
        return self.state is SlotState.QUARANTINED


@attrs.frozen
class RunnerStatus:
    #: Events (market and order) that went through the engine so far.
    published: int
    #: Market events published so far.
    market_events: int
    feed: FeedStatus
    executor: ExecutorStatus
    slots: tuple[SlotStatus, ...]
    connector_events: dict[str, int]
    strategy_errors: int
    #: Order events no strategy received, per slot index: a slot removed or quarantined, or one this
    #: run does not have (an order adopted from a previous run names its slot). The executor has them.
    undelivered_order_events: dict[int, int] = attrs.field(factory=dict)
