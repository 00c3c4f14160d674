"""Sweeps and A/B tests: many variants of a strategy, live through one slot or offline over tapes."""

from ._ab import AbResult as AbResult
from ._ab import AbSide as AbSide
from ._ab import bootstrap_ci as bootstrap_ci
from ._ab import run_ab as run_ab
from ._backtest import BacktestJob as BacktestJob
from ._backtest import BacktestRow as BacktestRow
from ._backtest import StrategySource as StrategySource
from ._backtest import backtest as backtest
from ._backtest import run_one as run_one
from ._backtest import sort_rows as sort_rows
from ._grid import Variant as Variant
from ._grid import expand as expand
from ._grid import parse_grid as parse_grid
from ._grid import schedule as schedule
from ._live import AbSpec as AbSpec
from ._live import SweepRun as SweepRun
from ._live import ab_config as ab_config
from ._live import ab_rows as ab_rows
from ._live import sweep_config as sweep_config
from ._live import write_ab as write_ab
from ._live import write_sweep as write_sweep
from ._metrics import WindowStats as WindowStats
from ._metrics import measure as measure
from ._results import default_out_dir as default_out_dir
from ._results import result_row as result_row
from ._results import results_table as results_table
from ._results import write_results as write_results

__all__ = [
    "AbResult",
    "AbSide",
    "AbSpec",
    "BacktestJob",
    "BacktestRow",
    "StrategySource",
    "SweepRun",
    "Variant",
    "WindowStats",
    "ab_config",
    "ab_rows",
    "backtest",
    "bootstrap_ci",
    "default_out_dir",
    "expand",
    "measure",
    "parse_grid",
    "result_row",
    "results_table",
    "run_ab",
    "run_one",
    "schedule",
    "sort_rows",
    "sweep_config",
    "write_ab",
    "write_results",
    "write_sweep",
]
