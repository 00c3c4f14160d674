"""What a venue is to a session, and the narrow ways a venue talks back.

A session (``_session.py``) is the same for every exchange: it supervises
connections, keeps subscriptions in step and publishes in order. What differs
is the wire format, and that is all a ``Venue`` knows: the connect URL, the
topics of a symbol, the text of subscribe/unsubscribe/ping messages, how a
frame decodes into events and control replies, and how a book stays in sync.
The session holds its venue and calls it through ``Venue``; the venue calls
back only through ``SessionPort`` (session-wide) and ``Link`` (the connection
a frame came on), never into the session itself.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson
import trio

from .._core._events import Event, Level
from .._core._market import L2Book
from .._errors import ConfigError
from ._backoff import Backoff

#: The operations a subscription request asks of the venue.
WireOp = Literal["subscribe", "unsubscribe"]


class Link(Protocol):
    """The connection a frame came on, as its venue may use it."""

    @property
    def id(self) -> int: ...

    @property
    def symbols(self) -> Container[str]:
        """The symbols this connection carries: a frame of any other is late (it moved, or was dropped)."""

    def reply(self, req_id: str | None, ok: bool, error: str, *, op_hint: WireOp | None = None) -> None:
        """The venue answered a request sent on this connection (matched by id, else the oldest ``op_hint``)."""

    def pong(self) -> None:
        """The venue answered the keepalive ping."""

    def request_planned(self, reason: str) -> None:
        """Move to a new connection before this one goes (make before break)."""


class SessionPort(Protocol):
    """The session as its venue sees it."""

    @property
    def wanted(self) -> frozenset[str]:
        """The symbols the session subscribes now (its own and what the slots watch)."""

    @property
    def connection_id(self) -> int | None:
        """The connection serving data (the first connection's, with several)."""

    def connection_for(self, symbol: str) -> int | None:
        """The connection carrying ``symbol`` now, for reports."""

    def wall_ns(self) -> int:
        """Receive time for events that do not come from a frame (``FeedHub.clock``)."""

    def backoff(self) -> Backoff:
        """A fresh reconnect-style backoff (the session's base, cap, jitter and random source)."""

    def error(self, what: str, detail: str = "", *, connection_id: int | None = None, **info: Any) -> None:
        """Count and report an error; the session carries on."""

    def frame_error(self, link: Link, what: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        """A frame that cannot be used: reported with an excerpt and skipped."""

    def gap(self, symbol: str, channel: str, expected: int, got: int) -> None:
        """A book's sequence jumped: ``expected`` was next, ``got`` came."""

    def resynced(self, symbol: str, channel: str, seq: int) -> None:
        """A book is whole again after a gap (or the venue started it over)."""

    def late_frame(self) -> None:
        """A frame of a symbol unsubscribed a moment ago arrived; it was dropped."""

    def refused(self, link: Link, msg: str | bytes, refusal: RefusedValue) -> None:
        """Values no market could mean: counted per reason, reported with an excerpt, never published."""

    def trade_gap(self, symbol: str, channel: str, expected: int, got: int) -> None:
        """The venue's consecutive trade ids jumped: ``expected`` was next, ``got`` came."""

    def request_resync(self, symbol: str) -> None:
        """Subscribe ``symbol``'s ``resync_topics`` again so the venue sends a fresh snapshot."""

    def queue(self, events: list[Event]) -> None:
        """Publish a batch after everything produced before it (this returns at once)."""


class BookState(Protocol):
    """A venue's maintained book of one symbol."""

    @property
    def book(self) -> L2Book: ...

    @property
    def synced(self) -> bool:
        """True while the book is in step with the venue."""


class Venue(Protocol):
    """One exchange's wire format, composed into a ``Session``."""

    @property
    def name(self) -> str:
        """The venue's id in symbols and events ("binance")."""

    @property
    def ws_url(self) -> str:
        """The WebSocket base URL the connect URL is built on."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    @property
    def max_topics_per_request(self) -> int: ...

    @property
    def max_topics_per_connection(self) -> int:
        """Streams one connection may carry: the default and the bound of ``max_streams_per_connection``."""

    @property
    def connects_per_window(self) -> int:
        """Connection attempts the venue allows in 5 minutes: the default and bound of ``connect_budget``."""

    @property
    def books(self) -> Mapping[str, BookState]:
        """The books the venue maintains, by symbol."""

    def bind(self, port: SessionPort) -> None:
        """Called once by the session that holds this venue."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Venue-wide work for as long as the session runs (Binance: REST snapshots)."""

    def connect_url(self, symbols: frozenset[str]) -> tuple[str, frozenset[str]]:
        """The URL to open for ``symbols``, and those of them the URL subscribes by itself."""

    def topics(self, symbol: str) -> list[str]:
        """The venue's stream names of one symbol, one per channel."""

    def resync_topics(self, symbol: str) -> list[str]:
        """Topics to subscribe again for a fresh book snapshot (none if books resync otherwise)."""

    def request_text(self, op: WireOp, req_id: str, topics: Sequence[str]) -> str: ...

    def ping_text(self, n: int) -> str | None:
        """The ``n``-th keepalive message; None when keepalive is the WebSocket ping frame."""

    def decode(self, link: Link, msg: str | bytes, recv_ns: int) -> list[Event] | None:
        """The events of one frame (control frames answer through ``link``)."""

    def symbols_changed(self, added: frozenset[str], removed: frozenset[str]) -> None:
        """Build per-symbol state for ``added``, drop it for ``removed``."""

    def subscribed(self, symbols: Sequence[str]) -> None:
        """The venue confirmed ``symbols``."""

    def connection_lost(self, symbols: frozenset[str]) -> None:
        """The connection serving ``symbols`` is gone; the next one subscribes them afresh."""

    def handover(self, symbols: frozenset[str]) -> None:
        """A planned successor takes ``symbols`` over; it repeats a little of what its predecessor delivered."""


def check_ws_url(feed: str, url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"{feed} ws_url must start with ws:// or wss://, got {url!r}")
    return url.rstrip("/")


def load_object(port: SessionPort, link: Link, msg: str | bytes) -> dict[str, Any] | None:
    """A frame decoded as a JSON object, or None after reporting why it is not one."""
    try:
        frame = orjson.loads(msg)
    except orjson.JSONDecodeError as exc:
        port.frame_error(link, "malformed frame (not JSON)", msg, exc)
        return None
    if type(frame) is not dict:
        port.frame_error(link, "unknown frame (not a JSON object)", msg)
        return None
    return frame


#: A price or quantity in a typed wire struct: venues send decimal strings, and a JSON number is
#: read the same way (``float()`` of either; the range check comes after).
Num = str | float

#: The largest price or quantity taken from a venue. Prices span about 1e-8 (a satoshi) to
#: 1e6 and one trade or level holds at most ~1e12 units of the cheapest tokens; anything
#: past 1e15 is a broken frame, and it would overflow what strategies compute from it.
MAX_VALUE = 1e15
#: Kline volumes sum a whole interval: a month of a meme token can reach 1e16 units.
MAX_VOLUME = 1e20


class RefusedValue(ValueError):
    """A market value no venue could mean (NaN, inf, <= 0, beyond ``MAX_VALUE``): refused, not published.

    ``counts`` holds how many values of a frame were refused, per reason
    ("trade price", "level quantity", ...); ``reason`` is the first of them.
    ``outcome`` says what became of the frame, for the report.
    """

    def __init__(self, reason: str, value: object, counts: dict[str, int] | None = None,
                 outcome: str = "frame skipped, session continues", note: str = "") -> None:
        self.reason = reason
        self.value = value
        self.counts = counts if counts is not None else {reason: 1}
        self.outcome = outcome
        low = ">= 0" if reason in ("level quantity", "kline price", "kline volume") else "> 0"
        high = MAX_VOLUME if reason == "kline volume" else MAX_VALUE
        super().__init__(f"{reason} {value!r} is not a market value: it must be finite, {low} and at most "
                         f"{high:g}{note}")


def levels(raw: Any) -> list[Level]:
    """``[["price", "qty"], ...]`` as floats, each checked; anything else raises (the frame is then malformed).

    A price must be in (0, MAX_VALUE], a quantity in [0, MAX_VALUE] (0 deletes the level).
    NaN fails every comparison, so two chained comparisons per value refuse it with the rest.
    """
    out = [(float(p), float(q)) for p, q in raw]
    for p, q in out:
        if not (0.0 < p <= MAX_VALUE and 0.0 <= q <= MAX_VALUE):
            if not 0.0 < p <= MAX_VALUE:
                raise RefusedValue("level price", p)
            raise RefusedValue("level quantity", q)
    return out


def trade_values(price: float, qty: float) -> None:
    """Refuse a trade's price or quantity unless both are in (0, MAX_VALUE]."""
    if not 0.0 < price <= MAX_VALUE:
        raise RefusedValue("trade price", price)
    if not 0.0 < qty <= MAX_VALUE:
        raise RefusedValue("trade quantity", qty)


def bar_values(o: float, h: float, lo: float, c: float, v: float) -> None:
    """Refuse a kline unless its prices are in [0, MAX_VALUE] and its volume in [0, MAX_VOLUME]."""
    for x in (o, h, lo, c):
        if not 0.0 <= x <= MAX_VALUE:
            raise RefusedValue("kline price", x)
    if not 0.0 <= v <= MAX_VOLUME:
        raise RefusedValue("kline volume", v)


def as_int(value: Any, name: str) -> int:
    # bool is an int subclass and str * int is repetition: insist on real ints.
    if type(value) is not int:
        raise TypeError(f"field {name!r} must be an integer, got {value!r}")
    return value
