"""flox-trio: a live trading engine on Trio with hot-swappable Python and JavaScript strategies.

The public API lives here, re-exported from private modules: the core
(``_core``: events, the runner, slots, swaps, strategies) and the parts that
plug into its ports. Subpackages: ``feeds``, ``connectors``, ``execution``,
``js``, ``tape``, ``replay``, ``report``, ``sim``, ``control``, ``config``,
``app``, ``cli``.
"""

from . import execution as execution
from . import feeds as feeds
from ._core._clock import EventClock as EventClock
from ._core._clock import TrioClock as TrioClock
from ._core._events import Bar as Bar
from ._core._events import Book as Book
from ._core._events import Fill as Fill
from ._core._events import Gap as Gap
from ._core._events import OrderUpdate as OrderUpdate
from ._core._events import Trade as Trade
from ._core._host import StrategyHost as StrategyHost
from ._core._market import BarAggregator as BarAggregator
from ._core._market import L2Book as L2Book
from ._core._runner import Runner as Runner
from ._core._runner import SlotRequests as SlotRequests
from ._core._slot import Slot as Slot
from ._core._states import SlotState as SlotState
from ._core._status import RunnerStatus as RunnerStatus
from ._core._status import SlotStatus as SlotStatus
from ._core._status import SwapReport as SwapReport
from ._core._strategy import Context as Context
from ._core._strategy import Strategy as Strategy
from ._core._swap import SwapHandle as SwapHandle
from ._errors import ConfigError as ConfigError
from ._errors import ConnectorError as ConnectorError
from ._errors import FeedError as FeedError
from ._errors import FloxError as FloxError
from ._errors import JSError as JSError
from ._errors import OrderError as OrderError
from ._errors import RequestRefusedError as RequestRefusedError
from ._errors import RunnerError as RunnerError
from ._errors import SandboxError as SandboxError
from ._errors import SlotError as SlotError
from ._errors import StrategyBuildError as StrategyBuildError
from ._errors import StrategyError as StrategyError
from ._errors import StrategyLoadError as StrategyLoadError
from ._errors import StrategyTypeError as StrategyTypeError
from ._errors import SwapError as SwapError
from ._errors import SymbolMismatchError as SymbolMismatchError
from ._errors import TapeError as TapeError
from ._errors import UnknownSlotError as UnknownSlotError
from ._runner import open_runner as open_runner
from ._version import __version__ as __version__
from .execution import PaperExecutor as PaperExecutor
from .execution import RiskExecutor as RiskExecutor


def __getattr__(name: str) -> object:
    # The JS host, connectors, simulator, replay and the application pull in heavier
    # dependencies; import them on first use so `import flox_trio` stays light.
    import importlib

    if name in ("js", "connectors", "sim", "tape", "replay", "report", "cli", "config", "control", "app"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'flox_trio' has no attribute {name!r}")
