"""The shape of ``flox-trio run CONFIG.toml``: frozen attrs classes, one per table.

Example::

    symbols = ["BTCUSDT"]
    tape = "tapes/session.tape"

    [venue]
    name = "sim"                      # sim | binance | bybit

    [executor]
    latency = 0.02

    [risk.slot]                       # every slot, unless the slot overrides it
    max_order_qty = "0.5"
    [risk.global]                     # all slots together
    max_position = "2"

    [[slots]]
    strategy = "py_strategies/ema.py:EmaStrategy"
    params = { fast = 12, slow = 26, qty = 0.01 }
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import attrs

VenueName = Literal["sim", "binance", "bybit"]
LogFormat = Literal["human", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


@attrs.frozen
class VenueConfig:
    """``[venue]``: where market data comes from. URLs default to the venue's public endpoints."""

    name: VenueName
    ws_url: str | None = None
    rest_url: str | None = None
    channels: tuple[str, ...] | None = None
    #: Market ticks per second of the embedded simulator (venue "sim" only): > 0, at most 100,000.
    sim_rate: float = 50.0
    #: Streams one connection carries; more symbols open more connections. Not set: the venue's limit.
    max_streams_per_connection: int | None = None


@attrs.frozen
class LimitsConfig:
    """A set of risk limits; a missing limit is not enforced."""

    #: Largest quantity of one order.
    max_order_qty: Decimal | None = None
    #: Largest absolute position per symbol, counting open orders on the side that grows it.
    max_position: Decimal | None = None
    #: Most orders accepted in any one-second window (Trio clock).
    max_orders_per_second: int | None = None


@attrs.frozen
class RiskConfig:
    """``[risk]``: ``slot`` limits apply to each slot, ``global`` to all slots together."""

    slot: LimitsConfig = LimitsConfig()
    global_: LimitsConfig = LimitsConfig()  # the TOML key is "global"


@attrs.frozen
class ExecutorConfig:
    """``[executor]``: where orders go. ``paper`` (the default) simulates fills; ``binance``/``bybit`` send them.

    With ``venue.name = "sim"`` a venue executor trades on the simulator's own
    private API, with an account made for the run (or the key the environment
    names). Secrets come from the environment variables named here or a key
    file only readable by you; they are never written anywhere.
    """

    kind: Literal["paper", "binance", "bybit"] = "paper"
    #: paper: seconds, finite, 0..3600.
    latency: float = 0.005
    #: paper: fractions of the notional in [0, 1), e.g. "0.0004" (rebates are not modelled).
    taker_fee: Decimal = Decimal(0)
    maker_fee: Decimal = Decimal(0)
    #: binance: the venue's test network instead of the live one.
    testnet: bool = False
    #: binance: the environment variable holding the API key.
    api_key_env: str | None = None
    #: binance: the environment variable holding the HMAC secret ...
    secret_env: str | None = None
    #: binance: ... or an Ed25519 private key file (PEM, mode 0600).
    key_file: str | None = None
    #: binance: the WebSocket API URL; both: the REST URL, when not the venue's (or testnet's) own.
    ws_api_url: str | None = None
    rest_url: str | None = None
    #: bybit: the trade and private WebSocket URLs, likewise, and the product category.
    trade_url: str | None = None
    private_url: str | None = None
    category: Literal["spot", "linear"] = "spot"


@attrs.frozen
class SlotConfig:
    """One ``[[slots]]`` entry.

    ``strategy`` is ``"path/to/file.py:ClassName"`` (built as
    ``ClassName(symbols, **params)``) or ``"path/to/file.js"`` (the object the
    script registers, or, with ``factory``, ``factory(*args)``).
    """

    strategy: str
    symbols: tuple[str, ...] | None = None
    #: JSON-like, at most 32 levels deep and 10,000 values; a number (or a string that reads as
    #: one) finite, within +-1e30 and with at most 30 decimal places.
    params: dict[str, Any] = attrs.Factory(dict)
    factory: str | None = None
    args: tuple[Any, ...] = ()
    max_errors: int | None = None
    risk: LimitsConfig | None = None


@attrs.frozen
class LogConfig:
    """``[log]``: ``human`` lines or one JSON object per line."""

    format: LogFormat = "human"
    level: LogLevel = "info"


@attrs.frozen
class Config:
    """A whole run configuration. Relative paths are resolved against ``base_dir``."""

    venue: VenueConfig
    symbols: tuple[str, ...]
    slots: tuple[SlotConfig, ...] = ()
    executor: ExecutorConfig = ExecutorConfig()
    risk: RiskConfig = RiskConfig()
    tape: str | None = None
    #: The run's name: control commands find the engine by it (``--run NAME``); default the config
    #: file's stem. Letters, digits, ``.``, ``_``, ``-``.
    name: str | None = None
    #: Where the control socket lives; default a per-user runtime directory for the run's name
    #: (see ``flox_trio.control``). Created 0700 if missing; refused if another user owns it or can
    #: write to it (someone could answer for the engine there).
    run_dir: str | None = None
    state_dir: str = "state"
    #: Errors before a slot is quarantined: >= 0.
    max_errors: int = 10
    log: LogConfig = LogConfig()
    #: Serve Prometheus metrics on 127.0.0.1 at this port, 0..65535 (0: any free port); None: off.
    metrics_port: int | None = None
    #: The directory of the config file (not a TOML key).
    base_dir: Path = attrs.field(default=Path("."), kw_only=True)
    #: The config file itself, when it came from one (not a TOML key).
    file: Path | None = attrs.field(default=None, kw_only=True)

    @property
    def run_name(self) -> str:
        return self.name or "flox"

    def path(self, value: str) -> Path:
        """``value`` resolved against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def slot_symbols(self, slot: SlotConfig) -> tuple[str, ...]:
        return slot.symbols if slot.symbols is not None else self.symbols
