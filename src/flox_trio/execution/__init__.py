"""Execution: order intents become orders; orders become fills and positions."""

from .._core._orders import Order as Order
from .._core._orders import Position as Position
from .._core._ports import Executor as Executor
from ._binance import BinanceAuthError as BinanceAuthError
from ._binance import BinanceExecutor as BinanceExecutor
from ._binance import BinanceSettings as BinanceSettings
from ._binance import BinanceStatus as BinanceStatus
from ._build import build_executor as build_executor
from ._bybit import BybitAuthError as BybitAuthError
from ._bybit import BybitExecutor as BybitExecutor
from ._bybit import BybitSettings as BybitSettings
from ._bybit import BybitStatus as BybitStatus
from ._outputs import first_divergence as first_divergence
from ._outputs import outputs_json as outputs_json
from ._outputs import run_outputs as run_outputs
from ._paper import PaperExecutor as PaperExecutor
from ._paper import PaperSettings as PaperSettings
from ._paper import PaperStatus as PaperStatus
from ._risk import Limits as Limits
from ._risk import RiskExecutor as RiskExecutor
from ._risk import RiskLimits as RiskLimits
from ._risk import RiskSettings as RiskSettings
from ._risk import RiskStatus as RiskStatus

__all__ = [
    "BinanceAuthError", "BinanceExecutor", "BinanceSettings", "BinanceStatus", "BybitAuthError", "BybitExecutor", "BybitSettings", "BybitStatus", "Executor", "Limits", "Order",
    "PaperExecutor", "PaperSettings", "PaperStatus", "Position", "RiskExecutor", "RiskLimits", "RiskSettings", "RiskStatus", "build_executor", "first_divergence", "outputs_json",
    "run_outputs",
]
