"""The tuning knobs of a session, and how a venue's defaults meet the caller's keywords."""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Literal

import attrs

from .._errors import ConfigError

log = logging.getLogger("flox_trio.connectors")

_MESSAGE_QUEUE_SIZE = 256

_Check = Callable[[object, object, Any], None]


def _positive(name: str) -> _Check:
    def check(_inst: object, _attr: object, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"connector option {name} must be a number > 0, got {value!r}")
    return check


def _non_negative(name: str) -> _Check:
    def check(_inst: object, _attr: object, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"connector option {name} must be a number >= 0, got {value!r}")
    return check


def _optional_positive(name: str) -> _Check:
    positive = _positive(name)

    def check(inst: object, attr: object, value: Any) -> None:
        if value is not None:
            positive(inst, attr, value)
    return check


@attrs.define(kw_only=True)
class SessionOptions:
    """Tuning knobs of a connector, passed as keyword arguments (``Binance(..., stale_timeout=10)``).

    Times are seconds on the Trio clock.
    """

    #: Reconnect backoff: ``min(backoff_cap, backoff_base * 2**n)`` times a jitter factor in ``[1-j, 1]``.
    backoff_base: float = attrs.field(default=0.5, validator=_positive("backoff_base"))
    backoff_cap: float = attrs.field(default=30.0, validator=_positive("backoff_cap"))
    backoff_jitter: float = attrs.field(default=0.5, validator=_non_negative("backoff_jitter"))
    #: A connection that lived this long resets the backoff.
    healthy_after: float = attrs.field(default=30.0, validator=_non_negative("healthy_after"))
    #: Give up (raise) after this many consecutive failed attempts; None retries forever.
    max_retries: int | None = attrs.field(default=None, validator=_optional_positive("max_retries"))
    #: Before any connection succeeded: give up after this many failed attempts (a venue that
    #: cannot be reached at start is a wrong URL or no network, not an outage to wait out); None: max_retries.
    initial_retries: int | None = attrs.field(default=4, validator=_optional_positive("initial_retries"))
    #: Watchdog: no message for this long while subscriptions are live → reconnect.
    stale_timeout: float = attrs.field(default=30.0, validator=_positive("stale_timeout"))
    #: Keepalive pings (0 = none); a ping unanswered for pong_timeout → reconnect.
    ping_interval: float = attrs.field(default=0.0, validator=_non_negative("ping_interval"))
    pong_timeout: float = attrs.field(default=10.0, validator=_positive("pong_timeout"))
    connect_timeout: float = attrs.field(default=10.0, validator=_positive("connect_timeout"))
    disconnect_timeout: float = attrs.field(default=5.0, validator=_positive("disconnect_timeout"))
    #: Planned (make-before-break) reconnect after this long; None = never.
    max_connection_age: float | None = attrs.field(default=None, validator=_optional_positive("max_connection_age"))
    #: During a planned reconnect the old connection is read this long after the new one is up.
    handover_overlap: float = attrs.field(default=2.0, validator=_non_negative("handover_overlap"))
    #: A SUBSCRIBE/UNSUBSCRIBE (or REST snapshot) without an answer after this long has failed.
    request_timeout: float = attrs.field(default=10.0, validator=_positive("request_timeout"))
    #: Retry of a rejected subscription: capped exponential backoff.
    resubscribe_base: float = attrs.field(default=1.0, validator=_positive("resubscribe_base"))
    resubscribe_cap: float = attrs.field(default=300.0, validator=_positive("resubscribe_cap"))
    #: Minimum spacing of control messages on one connection (venue rate limits).
    control_interval: float = attrs.field(default=0.0, validator=_non_negative("control_interval"))
    #: Levels per side in published Book events.
    book_depth: int = attrs.field(default=20, validator=_positive("book_depth"))
    #: Binance: levels requested in the REST depth snapshot.
    snapshot_limit: int = attrs.field(default=1000, validator=_positive("snapshot_limit"))
    #: Binance: REST request weight the depth snapshots may spend a minute. The venue allows 6000
    #: a minute per IP (and bans IPs that go on past it); the rest is left for other clients.
    rest_weight_budget: int = attrs.field(default=2400, validator=_positive("rest_weight_budget"))
    #: Events read but not yet published kept while the slots are slower than the venue; beyond
    #: it the oldest are dropped, counted per symbol and told to the strategies as gaps.
    max_backlog: int = attrs.field(default=50_000, validator=_positive("max_backlog"))
    #: Binance: "ms" or "us" (the timeUnit=MICROSECOND stream parameter).
    time_unit: Literal["ms", "us"] = "ms"
    #: Streams (one per symbol and channel) one connection carries; more symbols are sharded over
    #: more connections. None: the venue's limit (Binance 1024, Bybit 2000); never more than it.
    max_streams_per_connection: int | None = attrs.field(
        default=None, validator=_optional_positive("max_streams_per_connection"))
    #: WebSocket connection attempts in any 5 minutes, all of the session's connections together.
    #: None: the venue's limit (Binance 300 per IP, Bybit 500 per domain); never more than it.
    connect_budget: int | None = attrs.field(default=None, validator=_optional_positive("connect_budget"))
    #: Unused by the connectors since they read frames themselves (no message queue); still
    #: accepted so configurations that set it keep working, with a warning that it does nothing.
    message_queue_size: int = attrs.field(default=_MESSAGE_QUEUE_SIZE, validator=_positive("message_queue_size"))
    #: A message longer than this closes the connection (1009), which then reconnects.
    max_message_size: int = attrs.field(default=4 * 2**20, validator=_positive("max_message_size"))
    #: Bytes read from the socket at once; the messages one read completes are decoded back to back.
    receive_buffer_size: int = attrs.field(default=64 * 2**10, validator=_positive("receive_buffer_size"))
    ssl_context: ssl.SSLContext | None = None
    #: Source of jitter; pass random.Random(seed) for reproducible delays.
    rng: random.Random | None = None

    def __attrs_post_init__(self) -> None:
        if self.backoff_cap < self.backoff_base:
            raise ConfigError(
                f"connector option backoff_cap ({self.backoff_cap}) must be >= backoff_base ({self.backoff_base})"
            )
        if self.backoff_jitter > 1:
            raise ConfigError(f"connector option backoff_jitter must be within [0, 1], got {self.backoff_jitter}")
        if self.message_queue_size != _MESSAGE_QUEUE_SIZE:
            log.warning("connector option message_queue_size has no effect any more (frames are read without a "
                        "message queue); remove it")
        if self.time_unit not in ("ms", "us"):
            raise ConfigError(f"connector option time_unit must be 'ms' or 'us', got {self.time_unit!r}")
        for name in ("book_depth", "snapshot_limit", "rest_weight_budget", "max_backlog", "message_queue_size",
                     "max_message_size", "receive_buffer_size", "max_streams_per_connection", "connect_budget"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, int):
                raise ConfigError(f"connector option {name} must be an int, got {value!r}")


_OPTION_NAMES = frozenset(a.name for a in attrs.fields(SessionOptions))
# Options only one venue understands; the others refuse them by name.
_VENUE_ONLY = frozenset({"snapshot_limit", "rest_weight_budget", "time_unit"})


def make_options(feed: str, given: dict[str, Any], defaults: dict[str, Any],
                 venue_only: Iterable[str] = ()) -> SessionOptions:
    """Build options from a venue's defaults and the caller's keywords, refusing typos by name."""
    others = _VENUE_ONLY - set(venue_only)
    unknown = sorted(k for k in given if k not in _OPTION_NAMES or k in others)
    if unknown:
        valid = ", ".join(sorted(_OPTION_NAMES - others))
        raise ConfigError(f"{feed} connector: unknown option(s) {', '.join(unknown)}; valid options are {valid}")
    return SessionOptions(**{**defaults, **given})
