"""Run configuration: ``flox-trio run CONFIG.toml``."""

from .._core._convert import converter as converter
from ._load import load_config as load_config
from ._load import parse_config as parse_config
from ._load import where as where
from ._schema import Config as Config
from ._schema import ExecutorConfig as ExecutorConfig
from ._schema import LimitsConfig as LimitsConfig
from ._schema import LogConfig as LogConfig
from ._schema import RiskConfig as RiskConfig
from ._schema import SlotConfig as SlotConfig
from ._schema import VenueConfig as VenueConfig

__all__ = [
    "Config", "ExecutorConfig", "LimitsConfig", "LogConfig", "RiskConfig", "SlotConfig",
    "VenueConfig", "converter", "load_config", "parse_config", "where",
]
