"""Where a session's parts say what happened: counted for status, logged, and handed to the engine."""

from __future__ import annotations

import logging
from typing import Any

from .._core._ports import FeedHub

log = logging.getLogger("flox_trio.connectors")

# Enough of a bad frame to recognise it in a log without flooding it.
_FRAME_EXCERPT = 200


class Reporter:
    """The session's counters and its line to ``FeedHub.connector_event``."""

    __slots__ = ("_hub", "errors", "feed", "gaps", "last_error", "late_frames", "resyncs", "venue")

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
        self._hub: FeedHub | None = None

    def attach(self, hub: FeedHub) -> None:
        self._hub = hub

    def event(self, kind: str, **info: Any) -> None:
        if self._hub is not None:
            self._hub.connector_event(kind, venue=self.venue, **info)

    def error(self, what: str, detail: str = "", *, connection_id: int | None = None, **info: Any) -> None:
        self.errors += 1
        self.last_error = f"{what}: {detail}" if detail else what
        log.warning("%s connection %s: %s%s", self.venue, connection_id, what, f" ({detail})" if detail else "")
        self.event("error", what=what, detail=detail, connection_id=connection_id, **info)

    def frame_error(self, connection_id: int, what: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
        excerpt = text if len(text) <= _FRAME_EXCERPT else text[:_FRAME_EXCERPT] + "…"
        detail = f"{type(exc).__name__}: {exc}; " if exc is not None else ""
        self.error(what, f"{detail}frame {excerpt!r}; frame skipped, session continues",
                   connection_id=connection_id, frame=excerpt)

    def gap(self, symbol: str, channel: str, expected: int, got: int, connection_id: int | None) -> None:
        self.gaps += 1
        self.event("gap", symbol=symbol, channel=channel, expected=expected, got=got, connection_id=connection_id)

    def resync(self, symbol: str, channel: str, seq: int, connection_id: int | None) -> None:
        self.resyncs += 1
        self.event("resync", symbol=symbol, channel=channel, seq=seq, connection_id=connection_id)
