"""The application layer: an engine built from a run config, and the demo.

    config = flox.config.load_config("examples/sim_ema.toml")
    async with flox.app.open_engine(config, reload=True) as engine:
        await engine.stopped()

``flox-trio run``, ``flox-trio demo``, ``py_strategies/run_ema.py``, the tests
and the benchmarks build engines through here; the command line only parses
arguments and prints.
"""

from ._demo import STRATEGIES as STRATEGIES
from ._demo import DemoResult as DemoResult
from ._demo import run_demo as run_demo
from ._engine import Binding as Binding
from ._engine import Engine as Engine
from ._engine import EngineSummary as EngineSummary
from ._engine import executor_settings as executor_settings
from ._engine import open_engine as open_engine
from ._engine import open_venue_feed as open_venue_feed
from ._engine import record as record

__all__ = ["STRATEGIES", "Binding", "DemoResult", "Engine", "EngineSummary", "executor_settings", "open_engine",
           "open_venue_feed", "record", "run_demo"]
