"""Capped exponential backoff with jitter, shared by reconnects and re-subscriptions."""

from __future__ import annotations

import random

from .._errors import ConfigError


class Backoff:
    """Delays for successive retries: ``min(cap, base * 2**n)``, shrunk by a random jitter.

    With ``jitter=j`` each delay is multiplied by a factor drawn uniformly
    from ``[1 - j, 1]``: ``j=0`` gives exact, predictable delays (what the
    tests use), ``j=0.5`` is "equal jitter", which spreads a crowd of clients
    that lost the same server so they do not all come back in the same
    instant. ``reset()`` starts over after a success.
    """

    __slots__ = ("_rng", "base", "cap", "failures", "jitter")

    def __init__(self, base: float, cap: float, jitter: float = 0.0, rng: random.Random | None = None) -> None:
        if not base > 0:
            raise ConfigError(f"backoff base must be > 0 seconds, got {base!r}")
        if not cap >= base:
            raise ConfigError(f"backoff cap must be >= base ({base}), got {cap!r}")
        if not 0 <= jitter <= 1:
            raise ConfigError(f"backoff jitter must be within [0, 1], got {jitter!r}")
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = float(jitter)
        self.failures = 0
        self._rng = rng if rng is not None else random.Random()

    def peek(self) -> float:
        """The undisturbed delay the next ``next_delay()`` starts from (no jitter, no state change)."""
        # Past 2**64 the cap has long been reached; bounding the exponent keeps it a float op.
        return min(self.cap, self.base * 2.0 ** min(self.failures, 64))

    def next_delay(self) -> float:
        delay = self.peek()
        self.failures += 1
        if self.jitter:
            delay *= 1.0 - self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        self.failures = 0
