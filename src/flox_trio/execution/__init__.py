"""Execution: order intents become orders; orders become fills and positions."""

from ._executor import Executor as Executor
from ._orders import Order as Order
from ._orders import Position as Position
from ._paper import PaperExecutor as PaperExecutor

__all__ = ["Executor", "Order", "PaperExecutor", "Position"]
