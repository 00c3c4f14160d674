"""The exception family. Every error the engine raises derives from FloxError."""

from __future__ import annotations


class FloxError(Exception):
    """Base class of every error flox-trio raises."""


class ConfigError(FloxError):
    """A configuration value is missing, misspelled or of the wrong type."""


class SlotError(FloxError):
    """A slot operation named a slot that does not exist or is gone."""


class UnknownSlotError(SlotError, LookupError):
    """The slot index was never handed out by this runner, or the slot was removed."""


class SymbolMismatchError(FloxError, ValueError):
    """A replacement strategy watches other symbols than the slot it replaces."""


class StrategyError(FloxError):
    """A strategy object is unusable, or failed while being built, started or stopped."""


class StrategyTypeError(StrategyError, TypeError):
    """The object given as a strategy is not one the engine can host."""


class StrategyLoadError(StrategyError):
    """A strategy source file failed to import or compile."""


class StrategyBuildError(StrategyLoadError):
    """A strategy file loaded, but constructing the strategy from it raised (a bad parameter, say)."""


class SwapError(StrategyError):
    """A swap did not take place; the old strategy is still in the slot."""


class JSError(StrategyError):
    """A JavaScript strategy threw, ran out of time or memory, or broke the sandbox."""


class SandboxError(JSError):
    """A script tried to leave its sandbox (for example a path out of its state directory)."""


class RequestRefusedError(FloxError, PermissionError):
    """A strategy asked for a swap or a new slot it is not allowed to make."""


class OrderError(FloxError, ValueError):
    """An order intent is malformed (non-positive quantity, bad price, unknown order id)."""


class RunnerError(FloxError, RuntimeError):
    """The runner is used outside its lifetime or in a way it does not allow."""


class FeedError(FloxError):
    """A market-data feed failed in a way it cannot recover from by itself."""


class ConnectorError(FeedError):
    """An exchange session failed: handshake refused, venue error reply, protocol violation."""


class TapeError(FloxError):
    """A tape or bundle is missing, corrupt, truncated or of an unsupported version."""


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of any exception, even one whose ``__str__`` raises or holds lone surrogates."""
    try:
        text = str(exc)
    except Exception as inner:  # a strategy's exception class with a broken __str__
        text = f"<unprintable: its __str__ raised {type(inner).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception inside (nested) exception groups."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def flox_error_in(group: BaseExceptionGroup[BaseException]) -> FloxError | None:
    """The first FloxError of a group whose every leaf is one (an engine task's user-facing failure,
    wrapped by its nursery); None when anything else is inside."""
    found = leaves(group)
    if found and all(isinstance(e, FloxError) for e in found):
        first = found[0]
        assert isinstance(first, FloxError)
        return first
    return None
