"""flox-trio: a live trading engine on Trio with hot-swappable Python and JavaScript strategies.

The public API lives here; implementation modules are private (``_runner``,
``_slot``, ...). Subpackages: ``feeds``, ``connectors``, ``execution``,
``js``, ``tape``, ``sim``, ``cli``.
"""

from . import execution as execution
from . import feeds as feeds
from ._core._events import Bar as Bar
from ._core._events import Book as Book
from ._core._events import Fill as Fill
from ._core._events import OrderUpdate as OrderUpdate
from ._core._events import Trade as Trade
from ._core._market import BarAggregator as BarAggregator
from ._core._market import L2Book as L2Book
from ._errors import ConfigError as ConfigError
from ._errors import ConnectorError as ConnectorError
from ._errors import FeedError as FeedError
from ._errors import FloxError as FloxError
from ._errors import JSError as JSError
from ._errors import OrderError as OrderError
from ._errors import RunnerError as RunnerError
from ._errors import SandboxError as SandboxError
from ._errors import SlotError as SlotError
from ._errors import StrategyError as StrategyError
from ._errors import StrategyLoadError as StrategyLoadError
from ._errors import StrategyTypeError as StrategyTypeError
from ._errors import SwapError as SwapError
from ._errors import SymbolMismatchError as SymbolMismatchError
from ._errors import TapeError as TapeError
from ._errors import UnknownSlotError as UnknownSlotError
from ._host import StrategyHost as StrategyHost
from ._runner import Runner as Runner
from ._runner import open_runner as open_runner
from ._slot import Slot as Slot
from ._slot import SwapHandle as SwapHandle
from ._slot import SwapReport as SwapReport
from ._strategy import Context as Context
from ._strategy import Strategy as Strategy
from ._version import __version__ as __version__
from .execution import PaperExecutor as PaperExecutor
from .execution import RiskExecutor as RiskExecutor


def __getattr__(name: str) -> object:
    # The JS host, connectors, simulator and tape pull in heavier dependencies;
    # import them on first use so `import flox_trio` stays light.
    import importlib

    if name in ("js", "connectors", "sim", "tape", "cli", "config", "control"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'flox_trio' has no attribute {name!r}")
