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
