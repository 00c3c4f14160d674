"""An executor stack built from its settings: what a replay rebuilds from a tape, and an app from a config."""

from __future__ import annotations

from .._core._ports import Executor
from .._core._status import ExecutorSettings
from .._errors import ConfigError
from ._binance import BinanceSettings
from ._paper import PaperClock, PaperExecutor, PaperSettings
from ._risk import RiskExecutor, RiskSettings


def build_executor(settings: ExecutorSettings, *, ack_clock: PaperClock = "trio",
                   history: int | None = 10_000) -> Executor:
    """The executor (and whatever it wraps) that ``settings`` describe.

    ``ack_clock`` and ``history`` are how the paper executor runs, not what it
    is: a replay passes ``"events"`` and ``None`` (see ``PaperExecutor``).
    """
    if isinstance(settings, PaperSettings):
        return PaperExecutor(latency=settings.latency, taker_fee=settings.taker_fee,
                             maker_fee=settings.maker_fee, clock=ack_clock, history=history)
    if isinstance(settings, RiskSettings):
        return RiskExecutor(build_executor(settings.inner, ack_clock=ack_clock, history=history), settings.limits,
                            history=history)
    if isinstance(settings, BinanceSettings):
        # Refused, not replaced by a paper executor: a replay that quietly re-simulated the
        # venue's fills would not reproduce the live session, and the settings hold no key.
        raise ConfigError(
            f"cannot rebuild the BinanceExecutor of {settings.ws_api_url} from recorded settings: a replay never "
            "sends orders to a venue (and recorded settings hold no key); replay the session with a paper "
            "executor instead")
    raise ConfigError(f"cannot build an executor from {settings!r}: this flox-trio knows paper and risk executors")
