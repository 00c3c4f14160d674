"""Execution: order intents become orders; orders become fills and positions."""

from .._core._orders import Order as Order
from .._core._orders import Position as Position
from ._executor import Executor as Executor
from ._outputs import first_divergence as first_divergence
from ._outputs import outputs_json as outputs_json
from ._outputs import run_outputs as run_outputs
from ._paper import PaperExecutor as PaperExecutor
from ._risk import Limits as Limits
from ._risk import RiskExecutor as RiskExecutor
from ._risk import RiskLimits as RiskLimits

__all__ = ["Executor", "Order", "Limits", "PaperExecutor", "Position", "RiskExecutor", "RiskLimits", "first_divergence", "outputs_json", "run_outputs"]
