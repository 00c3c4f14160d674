"""The slot's state machine, the kinds of requests a slot serves, and the overflow policies of its queue."""

from __future__ import annotations

import enum

from .._errors import RunnerError


class SlotState(enum.StrEnum):
    """Where a slot is in its life. Only ``transition`` changes it."""

    STARTING = "starting"
    RUNNING = "running"
    SWAPPING = "swapping"
    QUARANTINED = "quarantined"
    REMOVED = "removed"
    CLOSED = "closed"


_ALLOWED: dict[SlotState, frozenset[SlotState]] = {
    SlotState.STARTING: frozenset({SlotState.RUNNING, SlotState.QUARANTINED, SlotState.REMOVED,
                                   SlotState.CLOSED}),
    SlotState.RUNNING: frozenset({SlotState.SWAPPING, SlotState.QUARANTINED, SlotState.REMOVED,
                                  SlotState.CLOSED}),
    # A swap ends running, or quarantined (the old strategy put back failed its
    # on_start again, or was quarantined before); the runner may close mid-swap.
    SlotState.SWAPPING: frozenset({SlotState.RUNNING, SlotState.QUARANTINED, SlotState.CLOSED}),
    SlotState.QUARANTINED: frozenset({SlotState.SWAPPING, SlotState.REMOVED, SlotState.CLOSED}),
    SlotState.REMOVED: frozenset(),
    SlotState.CLOSED: frozenset(),
}

#: States in which a slot still holds a strategy that may be called.
ACTIVE: frozenset[SlotState] = frozenset(
    {SlotState.STARTING, SlotState.RUNNING, SlotState.SWAPPING, SlotState.QUARANTINED})


def transition(current: SlotState, new: SlotState, slot: int) -> SlotState:
    """The one place a slot's state changes; an impossible change is a bug, said loudly."""
    if new is current:
        return new
    if new not in _ALLOWED[current]:
        raise RunnerError(f"slot {slot}: a slot that is {current} cannot become {new}")
    return new


class RequestKind(enum.Enum):
    SWAP = "swap"
    REMOVE = "remove"


class Overflow(enum.StrEnum):
    """What a slot's queue does when it is full: wait, or drop and count."""

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


def parse_overflow(value: str) -> Overflow:
    try:
        return Overflow(value)
    except ValueError:
        raise RunnerError(f"overflow must be one of {[o.value for o in Overflow]}, got {value!r}") from None
