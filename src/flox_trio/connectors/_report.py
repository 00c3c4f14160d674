"""Where a session's parts say what happened: counted for status, logged, and handed to the engine."""

from __future__ import annotations

import logging
from typing import Any

import trio

from .._core._ports import FeedHub

log = logging.getLogger("flox_trio.connectors")

# Enough of a bad frame to recognise it in a log without flooding it.
_FRAME_EXCERPT = 200
# Errors of one kind are reported in a burst of this many, then at most one a second, with
# how many were held back: a venue sending garbage at thousands of frames a second must not
# flood the log and the tape. Every one is counted all the same.
_BURST = 20.0


class Reporter:
    """The session's counters and its line to ``FeedHub.connector_event``."""

    __slots__ = ("_hub", "_quota", "errors", "feed", "gaps", "last_error", "late_frames", "missed", "refused",
                 "resyncs", "venue")

    def __init__(self, feed: str, venue: str) -> None:
        #: The connector's class name ("Binance") and the venue it speaks to ("binance").
        self.feed = feed
        self.venue = venue
        self.errors = 0
        self.last_error: str | None = None
        self.gaps = 0
        self.resyncs = 0
        #: Frames of symbols unsubscribed a moment ago, still on the wire: dropped, counted.
        self.late_frames = 0
        #: Market values refused at the boundary (NaN, inf, <= 0, huge), per reason.
        self.refused: dict[str, int] = {}
        #: Trade ids the venue's consecutive sequence skipped, per symbol.
        self.missed: dict[str, int] = {}
        self._hub: FeedHub | None = None
        # what → [reports allowed now, Trio time of the last refill, reports held back]
        self._quota: dict[str, list[float]] = {}

    def attach(self, hub: FeedHub) -> None:
        self._hub = hub

    def event(self, kind: str, **info: Any) -> None:
        if self._hub is not None:
            self._hub.connector_event(kind, venue=self.venue, **info)

    def error(self, what: str, detail: str = "", *, connection_id: int | None = None, **info: Any) -> None:
        self.errors += 1
        self.last_error = f"{what}: {detail}" if detail else what
        held = self._held_back(what)
        if held is None:
            return
        if held:
            info["held_back"] = held
            detail = f"{detail} ({held} more like it since the last report)"
        log.warning("%s connection %s: %s%s", self.venue, connection_id, what, f" ({detail})" if detail else "")
        self.event("error", what=what, detail=detail, connection_id=connection_id, **info)

    def _held_back(self, what: str) -> int | None:
        """How many reports of ``what`` were held back before this one; None to hold this one back too."""
        try:
            now = trio.current_time()
        except RuntimeError:  # outside Trio: nothing to pace against
            return 0
        quota = self._quota.get(what)
        if quota is None:
            quota = self._quota[what] = [_BURST, now, 0.0]
        quota[0] = min(_BURST, quota[0] + (now - quota[1]))
        quota[1] = now
        if quota[0] < 1.0:
            quota[2] += 1
            return None
        quota[0] -= 1.0
        held, quota[2] = int(quota[2]), 0.0
        return held

    def frame_error(self, connection_id: int, what: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        excerpt = _excerpt(msg)
        detail = f"{type(exc).__name__}: {exc}; " if exc is not None else ""
        self.error(what, f"{detail}frame {excerpt!r}; frame skipped, session continues",
                   connection_id=connection_id, frame=excerpt)

    def refuse(self, connection_id: int, counts: dict[str, int], msg: str | bytes, detail: str,
               outcome: str) -> None:
        refused = self.refused
        for reason, n in counts.items():
            refused[reason] = refused.get(reason, 0) + n
        excerpt = _excerpt(msg)
        self.error(f"refused {next(iter(counts))}", f"{detail}; frame {excerpt!r}; {outcome}",
                   connection_id=connection_id, frame=excerpt, refused=dict(counts))

    def trade_gap(self, symbol: str, channel: str, expected: int, got: int, connection_id: int | None) -> None:
        missing = got - expected
        self.gaps += 1
        self.missed[symbol] = self.missed.get(symbol, 0) + missing
        log.warning("%s connection %s: %s %s trade ids %d..%d never arrived", self.venue, connection_id, symbol,
                    channel, expected, got - 1)
        self.event("gap", symbol=symbol, channel=channel, expected=expected, got=got, missing=missing,
                   connection_id=connection_id)

    def gap(self, symbol: str, channel: str, expected: int, got: int, connection_id: int | None) -> None:
        self.gaps += 1
        self.event("gap", symbol=symbol, channel=channel, expected=expected, got=got, connection_id=connection_id)

    def resync(self, symbol: str, channel: str, seq: int, connection_id: int | None) -> None:
        self.resyncs += 1
        self.event("resync", symbol=symbol, channel=channel, seq=seq, connection_id=connection_id)


def _excerpt(msg: str | bytes) -> str:
    text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
    return text if len(text) <= _FRAME_EXCERPT else text[:_FRAME_EXCERPT] + "…"
