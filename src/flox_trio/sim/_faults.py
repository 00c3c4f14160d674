"""Fault injection: what a test asks to go wrong, and what the venues consult when it might.

The injecting methods act through each connection's own public methods
(``drop``, ``close``, ``stall``, ``push``); the ``take_*`` methods are how the
server and the venues learn, one request at a time, whether to misbehave.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Protocol

import trio

from . import _binance, _bybit
from ._connection import SimConnection, Venue


class FaultHost(Protocol):
    """What faults need of the simulator."""

    def open_connections(self, venue: Venue | None = None) -> list[SimConnection]: ...

    def now_ms(self) -> int: ...


class Faults:
    """Fault injection. Each call acts on the open connections of ``venue`` (None = both)
    and returns how many it touched."""

    def __init__(self, sim: FaultHost) -> None:
        self._sim = sim
        self._reject: dict[Venue, deque[tuple[int, str]]] = {"binance": deque(), "bybit": deque()}
        self._refuse: deque[int] = deque()
        self._rest_errors: deque[tuple[int, float | None]] = deque()
        self._gaps: Counter[tuple[Venue, str]] = Counter()
        # (venue, symbol) → [until (Trio time), every, updates seen]
        self._storms: dict[tuple[Venue, str], list[float]] = {}
        #: REST depth snapshots still to be served stale.
        self.stale_snapshots = 0
        #: Seconds every REST request waits before it is answered.
        self.rest_delay = 0.0

    # --- injecting ----------------------------------------------------------------------------

    def drop(self, venue: Venue | None = None) -> int:
        """End the TCP connection without a WebSocket close frame (the client sees code 1006).

        Frames already queued are sent first, then the socket is half-closed, so
        every frame counted as sent can be read by the client.
        """
        conns = self._sim.open_connections(venue)
        for c in conns:
            c.drop()
        return len(conns)

    def close(self, code: int = 1000, reason: str = "", venue: Venue | None = None) -> int:
        """Close with a WebSocket close frame carrying ``code``."""
        conns = self._sim.open_connections(venue)
        for c in conns:
            c.close(code, reason)
        return len(conns)

    def stall(self, seconds: float, venue: Venue | None = None) -> int:
        """Send nothing for ``seconds``: no data, no pongs, no pings."""
        conns = self._sim.open_connections(venue)
        for c in conns:
            c.stall(seconds)
        return len(conns)

    def malformed(self, venue: Venue | None = None, text: str | None = None) -> int:
        """Send a frame that is not valid JSON (or ``text``)."""
        conns = self._sim.open_connections(venue)
        for c in conns:
            c.push(text if text is not None else
                   _binance.MALFORMED_FRAME if c.venue == "binance" else _bybit.MALFORMED_FRAME)
        return len(conns)

    def send_raw(self, text: str, venue: Venue | None = None) -> int:
        """Send ``text`` as is (an unknown frame, a crafted error)."""
        return self.malformed(venue, text)

    def gap(self, symbol: str, venue: Venue = "binance", count: int = 1) -> None:
        """Withhold the next ``count`` depth updates of ``symbol`` (the venue's book moves on)."""
        self._gaps[(venue, symbol.upper())] += count

    def gap_storm(self, symbol: str, seconds: float, venue: Venue = "binance", every: int = 2) -> None:
        """For ``seconds``, withhold every ``every``-th depth update of ``symbol``: gap after gap."""
        if every < 1:
            raise ValueError(f"gap_storm every must be >= 1, got {every}")
        self._storms[(venue, symbol.upper())] = [trio.current_time() + seconds, float(every), 0.0]

    def server_shutdown(self, grace: float = 5.0) -> int:
        """Binance ``serverShutdown``: announce, keep streaming for ``grace`` s, then close (1001)."""
        conns = self._sim.open_connections("binance")
        frame = _binance.server_shutdown_frame(self._sim.now_ms())
        for c in conns:
            c.push(frame)
            c.close(1001, "server shutdown", delay=grace)
        return len(conns)

    def reject_subscribe(self, venue: Venue, times: int = 1, *, code: int = 2,
                         msg: str = "Invalid request: service temporarily unavailable") -> None:
        """Answer the next ``times`` SUBSCRIBE requests with a venue error."""
        for _ in range(times):
            self._reject[venue].append((code, msg))

    def refuse(self, times: int = 1, status: int = 503) -> None:
        """Refuse the next ``times`` WebSocket handshakes with HTTP ``status``."""
        self._refuse.extend([status] * times)

    def stale_snapshot(self, times: int = 1) -> None:
        """Serve the next ``times`` REST depth snapshots from the oldest kept history (seconds old)."""
        self.stale_snapshots += times

    def rest_error(self, status: int = 503, times: int = 1, retry_after: float | None = None) -> None:
        """Fail the next ``times`` REST requests with HTTP ``status`` (and a Retry-After header, if given)."""
        self._rest_errors.extend([(status, retry_after)] * times)

    # --- consulted by the server and the venues ------------------------------------------------

    def take_refusal(self) -> int | None:
        """The HTTP status to refuse this WebSocket handshake with, if one is due."""
        return self._refuse.popleft() if self._refuse else None

    def take_subscribe_rejection(self, venue: Venue) -> tuple[int, str] | None:
        """The (code, message) to reject this subscription with, if one is due."""
        queue = self._reject[venue]
        return queue.popleft() if queue else None

    def take_gap(self, venue: Venue, symbol: str) -> bool:
        """Whether to withhold this depth update of ``symbol``."""
        key = (venue, symbol)
        if self._gaps[key] > 0:
            self._gaps[key] -= 1
            return True
        storm = self._storms.get(key)
        if storm is not None:
            if trio.current_time() >= storm[0]:
                del self._storms[key]
                return False
            storm[2] += 1
            return storm[2] % storm[1] == 0
        return False

    def take_rest_error(self) -> int | None:
        """The HTTP status to fail this REST request with, if one is due."""
        failure = self.take_rest_failure()
        return failure[0] if failure is not None else None

    def take_rest_failure(self) -> tuple[int, float | None] | None:
        """(HTTP status, Retry-After seconds or None) to fail this REST request with, if one is due."""
        return self._rest_errors.popleft() if self._rest_errors else None

    def take_stale_snapshot(self) -> bool:
        """Whether to serve this depth snapshot stale."""
        if self.stale_snapshots > 0:
            self.stale_snapshots -= 1
            return True
        return False
