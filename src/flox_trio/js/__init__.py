"""JavaScript strategies in embedded QuickJS, swapped through the same path as Python ones.

    script = flox.js.load("js_strategies/ema.js", state_dir="state/")
    runner.add_strategy(script.registered)
    await runner.replace_strategy(0, script.call("makeStrategy", "v2"))
"""

from ._script import DEFAULT_MEMORY_LIMIT as DEFAULT_MEMORY_LIMIT
from ._script import DEFAULT_TIME_LIMIT as DEFAULT_TIME_LIMIT
from ._script import JsHost as JsHost
from ._script import JsStrategy as JsStrategy
from ._script import Script as Script
from ._script import load as load

__all__ = ["DEFAULT_MEMORY_LIMIT", "DEFAULT_TIME_LIMIT", "JsHost", "JsStrategy", "Script", "load"]
