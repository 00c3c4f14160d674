"""Parse and validate a run configuration with the project's one cattrs converter.

Every problem becomes a ``ConfigError`` of one line that names the file, the
line and the dotted key path (``config.toml:12: risk.global.max_position: ...``)
and says what to write instead. Every value is checked here, before the
engine starts: a number that must be finite or positive, a port, a path, a
symbol, a strategy's parameters (JSON-like, bounded in depth and size, and
numbers within a sane range), so that no config can fail later, at the first
fill or in the middle of a run.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from .._core._convert import converter
from .._errors import ConfigError
from ._schema import (
    Config,
    ExecutorConfig,
    LimitsConfig,
    LogConfig,
    RiskConfig,
    SlotConfig,
    VenueConfig,
)

PathPart = str | int

#: A config file larger than this is not a config (and would take long to scan).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: How deep strategy params (and JavaScript args) may nest, and how many values they may hold.
MAX_PARAM_DEPTH = 32
MAX_PARAM_ITEMS = 10_000
#: The longest string a parameter may be.
MAX_PARAM_STRING = 64 * 1024
#: A number in params (a float, or a string that reads as a decimal number) must lie within
#: +-PARAM_NUMBER_LIMIT and, as a decimal string, have at most PARAM_DECIMAL_PLACES places:
#: anything beyond that would overflow exact money arithmetic at the first fill.
PARAM_NUMBER_LIMIT = Decimal("1e30")
PARAM_DECIMAL_PLACES = 30
#: Money settings (risk limits) share that range; fees are a fraction in [0, 1).
MONEY_LIMIT = Decimal("1e30")
#: The simulator's tick rate, in ticks per second.
MAX_SIM_RATE = 100_000.0
#: Streams per connection each venue allows (Binance: 1024; the simulator speaks Binance).
MAX_STREAMS_PER_CONNECTION = {"sim": 1024, "binance": 1024, "bybit": 2000}
#: The paper executor's acknowledgement latency, in seconds.
MAX_LATENCY = 3600.0

_NUMERIC = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")
_SYMBOL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_-]{0,31}:)?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


# --- the converter ---------------------------------------------------------------


_TABLES = {
    "Config": "a TOML document of keys and tables",
    "VenueConfig": "a table: a [venue] section, or venue = { name = \"sim\" }",
    "ExecutorConfig": "a table: an [executor] section",
    "RiskConfig": "a table: [risk.slot] and [risk.global] sections",
    "LimitsConfig": "a table of limits, e.g. { max_order_qty = \"0.5\" }",
    "SlotConfig": "a table: a [[slots]] section with strategy = \"file.py:ClassName\"",
    "LogConfig": "a table: a [log] section",
}


def _table(cls: type, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``fn``, after checking the value is a table at all (cattrs would fail on it obscurely)."""
    label = _TABLES.get(cls.__name__, "a table")

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected {label}, got {_short(value)}")
        return fn(value, type_)

    return structure


def _register(conv: cattrs.Converter) -> None:
    """The config tables on the project converter: unknown keys refused, ``global`` spelled as in TOML."""
    for cls in (VenueConfig, LimitsConfig, ExecutorConfig, SlotConfig, LogConfig):
        conv.register_structure_hook(
            cls, _table(cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)))
    conv.register_structure_hook(
        RiskConfig,
        _table(RiskConfig, make_dict_structure_fn(RiskConfig, conv, _cattrs_forbid_extra_keys=True,
                                                  global_=override(rename="global"))),
    )
    conv.register_unstructure_hook(
        RiskConfig,
        cattrs.gen.make_dict_unstructure_fn(RiskConfig, conv, global_=override(rename="global")),
    )
    conv.register_structure_hook(
        Config,
        _table(Config, make_dict_structure_fn(Config, conv, _cattrs_forbid_extra_keys=True,
                                              base_dir=override(omit=True), file=override(omit=True))),
    )
    conv.register_unstructure_hook(
        Config, cattrs.gen.make_dict_unstructure_fn(Config, conv, base_dir=override(omit=True),
                                                    file=override(omit=True)),
    )


_register(converter)


# --- loading -------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a TOML run configuration.

    Raises:
        ConfigError: the file is missing, is not a regular file, is too large,
            is not UTF-8 or not TOML, or has a misspelled key or a value of the
            wrong type or out of range; the message (one line) names the line and key.
    """
    path = Path(path)
    raw = _read_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: the file is not UTF-8 text: byte {raw[exc.start]:#04x} at offset "
                          f"{exc.start} ({exc.reason}); save it as UTF-8") from None
    return parse_config(text, path)


def _read_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"cannot read config file {path!r}: {exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"cannot read config file {path}: it is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"cannot read config file {path}: it is {st.st_size} bytes, "
                              f"a config is at most {MAX_CONFIG_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"cannot read config file {path}: it is larger than {MAX_CONFIG_BYTES} bytes")
    return data


def parse_config(text: str, path: str | Path = "<config>") -> Config:
    """Parse TOML ``text`` (``path`` names it in errors and anchors relative paths)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    except RecursionError:
        line = _deepest_line(text)
        raise ConfigError(f"{path}:{line}: arrays or tables nested too deep to parse; "
                          f"params may nest at most {MAX_PARAM_DEPTH} levels") from None
    try:
        config = converter.structure(data, Config)
    except RecursionError:
        raise ConfigError(f"{path}:{_deepest_line(text)}: values nested too deep") from None
    except Exception as exc:  # cattrs raises ExceptionGroups of anything the hooks raise
        problems = list(_leaves(exc, ()))
        raise ConfigError(_describe(problems, data, text, path)) from None
    config = attrs.evolve(config, base_dir=path.resolve().parent, file=path.resolve())
    _check_semantics(config, text, path)
    if config.name is None:
        config = attrs.evolve(config, name=_default_name(path))
    return config


def where(config: Config, *key_path: PathPart) -> str:
    """``"examples/sim_ema.toml:37: slots[0].strategy"``: a key of a loaded config, for an error message."""
    dotted = _dotted(key_path)
    if config.file is None:
        return dotted
    try:
        lines = _key_lines(config.file.read_text(encoding="utf-8"))
    except (OSError, UnicodeError):
        return f"{config.file}: {dotted}"
    return f"{config.file}:{_line_of(lines, key_path)}: {dotted}"


def _check_executor(config: Config, fail: Fail) -> None:
    ex = config.executor
    venue_keys = ("testnet", "api_key_env", "secret_env", "key_file", "ws_api_url", "rest_url", "trade_url",
                  "private_url")
    if ex.kind == "paper":
        for key in venue_keys:
            if getattr(ex, key) not in (None, False):
                fail(("executor", key), 'is for a venue executor; set kind = "binance" or "bybit", or leave it out')
        if ex.category != "spot":
            fail(("executor", "category"), 'is for the bybit executor')
        return
    only = {"binance": ("trade_url", "private_url"), "bybit": ("ws_api_url", "key_file")}[ex.kind]
    for key in only:
        if getattr(ex, key) is not None:
            fail(("executor", key), f'is not a key of kind = "{ex.kind}"')
    if ex.kind == "binance" and ex.category != "spot":
        fail(("executor", "category"), "Binance orders are spot orders here; category is for bybit")
    if ex.secret_env is not None and ex.key_file is not None:
        fail(("executor", "key_file"), "give secret_env (an HMAC secret) or key_file (an Ed25519 key), not both")
    if config.venue.name != "sim":
        if ex.api_key_env is None:
            fail(("executor",), f'kind = "{ex.kind}" needs api_key_env: the environment variable holding the API key')
        elif ex.secret_env is None and ex.key_file is None:
            fail(("executor",), f'kind = "{ex.kind}" needs secret_env (an HMAC secret) or key_file (an Ed25519 key)')
    elif ex.api_key_env is not None and ex.secret_env is None:
        fail(("executor", "secret_env"), "on the simulator a named key needs its HMAC secret in secret_env")
    for key in ("api_key_env", "secret_env"):
        value = getattr(ex, key)
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value):
            fail(("executor", key), f"must name an environment variable, got {value!r}")
    for key in ("ws_api_url", "rest_url", "trade_url", "private_url"):
        value = getattr(ex, key)
        web = key == "rest_url"
        if value is not None and not value.startswith(("http://", "https://") if web else ("ws://", "wss://")):
            fail(("executor", key), f"must be a {'http(s)' if web else 'ws(s)'}:// URL, got {value!r}")


def _default_name(path: Path) -> str:
    """The run's name when the config gives none: its file's stem, made a valid name."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip(".-")[:64]
    return stem or "flox"


def _check_semantics(config: Config, text: str, path: Path) -> None:
    lines = _key_lines(text)

    def fail(key_path: tuple[PathPart, ...], msg: str) -> None:
        raise ConfigError(f"{path}:{_line_of(lines, key_path)}: {_dotted(key_path)}: {msg}")

    if not config.symbols:
        fail(("symbols",), 'list at least one symbol, e.g. symbols = ["BTCUSDT"]')
    _check_symbols(config.symbols, ("symbols",), fail)
    _check_venue(config, fail)
    _check_executor(config, fail)
    latency = config.executor.latency
    if not (math.isfinite(latency) and 0 <= latency <= MAX_LATENCY):
        fail(("executor", "latency"), f"must be a finite number of seconds >= 0 (at most {MAX_LATENCY:g}), "
             f"got {latency!r}")
    for name in ("taker_fee", "maker_fee"):
        fee = getattr(config.executor, name)
        if not (fee.is_finite() and 0 <= fee < 1):
            fail(("executor", name), f'must be a fraction of the notional in [0, 1), e.g. "0.0004", got "{fee}"; '
                 "rebates (negative fees) are not modelled")
        if not _places_ok(fee):
            fail(("executor", name), f"has more than {PARAM_DECIMAL_PLACES} decimal places")
    if config.tape is not None:
        _check_path(config.tape, ("tape",), fail, "leave tape out to record nothing")
    if config.run_dir is not None:
        _check_path(config.run_dir, ("run_dir",), fail, "leave run_dir out for the per-user default")
    if config.name is not None and not _RUN_NAME.match(config.name):
        fail(("name",), f"must be 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-', "
             f"got {config.name!r}")
    _check_path(config.state_dir, ("state_dir",), fail, 'the default is "state"')
    if config.max_errors < 0:
        fail(("max_errors",), f"must be >= 0 (0: quarantine at the first error), got {config.max_errors}")
    if config.metrics_port is not None and not 0 <= config.metrics_port <= 65535:
        fail(("metrics_port",), f"must be a TCP port in 0..65535 (0: any free port), got {config.metrics_port}; "
             "leave it out for no metrics")
    for i, slot in enumerate(config.slots):
        spec = slot.strategy
        if not spec.strip() or "\x00" in spec:
            fail(("slots", i, "strategy"), 'must name a strategy: "file.py:ClassName" or "file.js"')
        file, _, name = spec.partition(":") if not spec.endswith(".js") else (spec, "", "")
        if file.endswith(".py"):
            if not name:
                fail(("slots", i, "strategy"), f'name the class: "{file}:ClassName"')
            if slot.factory is not None or slot.args:
                fail(("slots", i, "factory"), "factory and args are for JavaScript strategies; "
                     "a Python strategy takes params")
        elif file.endswith(".js"):
            if slot.args and slot.factory is None:
                fail(("slots", i, "args"), "args are passed to a factory: set factory = \"makeStrategy\"")
        else:
            fail(("slots", i, "strategy"),
                 f'{spec!r} is neither "file.py:ClassName" nor "file.js"')
        if slot.symbols is not None and not slot.symbols:
            fail(("slots", i, "symbols"), "a slot must watch at least one symbol")
        if slot.symbols is not None:
            _check_symbols(slot.symbols, ("slots", i, "symbols"), fail)
        if slot.factory is not None and not _IDENTIFIER.match(slot.factory):
            fail(("slots", i, "factory"), f"must be the name of a JavaScript function, got {slot.factory!r}")
        if slot.max_errors is not None and slot.max_errors < 0:
            fail(("slots", i, "max_errors"), f"must be >= 0, got {slot.max_errors}")
        budget = [MAX_PARAM_ITEMS]
        _check_json(slot.params, ("slots", i, "params"), 1, budget, fail)
        _check_json(list(slot.args), ("slots", i, "args"), 1, budget, fail)
    for key_path, limits in _all_limits(config):
        for name in ("max_order_qty", "max_position", "max_orders_per_second"):
            value = getattr(limits, name)
            if value is not None and value <= 0:
                fail((*key_path, name), f"must be > 0, got {value}; leave it out for no limit")
            if isinstance(value, Decimal) and (value > MONEY_LIMIT or not _places_ok(value)):
                fail((*key_path, name), f"must be at most {MONEY_LIMIT} with at most {PARAM_DECIMAL_PLACES} "
                     f"decimal places, got {value}")


Fail = Callable[[tuple[PathPart, ...], str], None]


def _check_symbols(symbols: tuple[str, ...], key_path: tuple[PathPart, ...], fail: Fail) -> None:
    for j, symbol in enumerate(symbols):
        if not _SYMBOL.match(symbol):
            fail((*key_path, j), f"{_short(symbol)} is not a symbol: write it like \"BTCUSDT\" "
                 "(letters, digits, '-', '_', '.'), optionally with a venue, \"binance:BTCUSDT\"")


def _check_venue(config: Config, fail: Fail) -> None:
    venue = config.venue
    rate = venue.sim_rate
    if not (math.isfinite(rate) and 0 < rate <= MAX_SIM_RATE):
        fail(("venue", "sim_rate"), f"must be a finite number of ticks per second, > 0 and at most "
             f"{MAX_SIM_RATE:g}, got {rate!r}")
    for name, schemes in (("ws_url", ("ws://", "wss://")), ("rest_url", ("http://", "https://"))):
        url = getattr(venue, name)
        if url is None:
            continue
        if not url.startswith(schemes) or len(url) <= len(url.split("//", 1)[0]) + 2 or any(
                c.isspace() or ord(c) < 32 for c in url):
            fail(("venue", name), f"must be a URL starting with {' or '.join(schemes)}, got {_short(url)}")
    streams = venue.max_streams_per_connection
    if streams is not None:
        # Binance's limit (the simulator is reached through a Binance connector), Bybit's as the connector uses.
        limit = MAX_STREAMS_PER_CONNECTION[venue.name]
        if not 0 < streams <= limit:
            fail(("venue", "max_streams_per_connection"), f"must be an integer > 0 and at most {limit} "
                 f"(the {venue.name} venue's streams per connection), got {streams!r}")
    if venue.channels is not None:
        if not venue.channels:
            fail(("venue", "channels"), "list at least one channel, or leave it out for the venue's default")
        for j, channel in enumerate(venue.channels):
            if not channel.strip() or any(c.isspace() or ord(c) < 32 for c in channel):
                fail(("venue", "channels", j), f"{_short(channel)} is not a channel name")


def _places_ok(number: Decimal) -> bool:
    """At most PARAM_DECIMAL_PLACES decimal places (a finite Decimal's exponent is an int)."""
    exponent = number.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -PARAM_DECIMAL_PLACES


def _check_path(value: str, key_path: tuple[PathPart, ...], fail: Fail, hint: str) -> None:
    if not value.strip():
        fail(key_path, f"must be a path, got an empty string; {hint}")
    if "\x00" in value:
        fail(key_path, "must not contain a NUL character")


def _check_json(value: Any, key_path: tuple[PathPart, ...], depth: int, budget: list[int], fail: Fail) -> None:
    """Strategy params and args: JSON-like, at most MAX_PARAM_DEPTH deep and MAX_PARAM_ITEMS values in all."""
    budget[0] -= 1
    if budget[0] < 0:
        fail(key_path[:3], f"holds more than {MAX_PARAM_ITEMS} values; pass large data as a file path")
    if isinstance(value, dict | list):
        if depth > MAX_PARAM_DEPTH:
            fail(key_path[:4], f"nests deeper than {MAX_PARAM_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            _check_json(v, (*key_path, k), depth + 1, budget, fail)
        return
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > PARAM_NUMBER_LIMIT:
            fail(key_path, f"must be a finite number within +-{PARAM_NUMBER_LIMIT}, got {value!r}")
        return
    if isinstance(value, str):
        if len(value) > MAX_PARAM_STRING:
            fail(key_path, f"is a string of {len(value)} characters, at most {MAX_PARAM_STRING}")
        if _NUMERIC.match(value):
            _check_decimal_string(value, key_path, fail)
        return
    fail(key_path, f"must be JSON-like (a string, number, boolean, array or table), got a "
         f"{type(value).__name__}: {_short(value)}")


def _check_decimal_string(value: str, key_path: tuple[PathPart, ...], fail: Fail) -> None:
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimal numbers through
        return
    if abs(number) > PARAM_NUMBER_LIMIT or not _places_ok(number):
        fail(key_path, f"{_short(value)} is out of range: a number must be within +-{PARAM_NUMBER_LIMIT} "
             f"with at most {PARAM_DECIMAL_PLACES} decimal places")


def _all_limits(config: Config) -> Iterator[tuple[tuple[PathPart, ...], LimitsConfig]]:
    yield ("risk", "slot"), config.risk.slot
    yield ("risk", "global"), config.risk.global_
    for i, slot in enumerate(config.slots):
        if slot.risk is not None:
            yield ("slots", i, "risk"), slot.risk


# --- error reporting -----------------------------------------------------------------------


def _leaves(exc: BaseException, path: tuple[PathPart, ...]) -> Iterator[tuple[tuple[PathPart, ...], BaseException]]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", ()):
                name = getattr(note, "name", None)
                index = getattr(note, "index", None)
                if isinstance(name, str):
                    sub_path = (*sub_path, name.rstrip("_") if name == "global_" else name)
                elif isinstance(index, int | str):
                    sub_path = (*sub_path, index)
            yield from _leaves(sub, sub_path)
    else:
        yield path, exc


def _lookup(data: Any, path: tuple[PathPart, ...]) -> Any:
    for part in path:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_dict or in_list):
            return None
        data = data[part]
    return data


def _describe(problems: list[tuple[tuple[PathPart, ...], BaseException]], data: Any, text: str, path: Path) -> str:
    lines = _key_lines(text)
    messages: list[tuple[int, str]] = []
    for key_path, exc in problems:
        if isinstance(exc, ForbiddenExtraKeysError):
            allowed = sorted(_allowed_keys(exc.cl))
            for extra in sorted(exc.extra_fields):
                full = (*key_path, extra)
                close = difflib.get_close_matches(extra, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                line = _line_of(lines, full)
                messages.append((line, f"{path}:{line}: {_dotted(full)}: unknown key; {hint}"
                                       f"allowed here: {', '.join(allowed)}"))
        elif isinstance(exc, KeyError):
            missing = exc.args[0] if exc.args else "?"
            full = (*key_path, missing) if key_path[-1:] != (missing,) else key_path
            where = _line_of(lines, full[:-1]) if len(full) > 1 else 1
            messages.append((where, f"{path}:{where}: {_dotted(full)}: required key is missing; add it"))
        else:
            value = _lookup(data, key_path)
            detail = _one_line(str(exc) or type(exc).__name__)
            if "not in literal" in detail:
                detail = f"{value!r} is not one of {detail.split('Literal', 1)[-1].strip('[]')}"
            line = _line_of(lines, key_path)
            messages.append((line, f"{path}:{line}: {_dotted(key_path)}: {detail}"))
    if not messages:  # pragma: no cover - cattrs always reports at least one leaf
        return f"{path}: invalid configuration"
    texts = [m for _, m in sorted(messages, key=lambda lm: lm[0])]
    return texts[0] if len(texts) == 1 else f"{len(texts)} problems: " + "; ".join(texts)


def _one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _deepest_line(text: str) -> int:
    """The line where bracket nesting first gets deep (for a parser that ran out of stack)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for c in line:
            if c in "[{":
                depth += 1
                if depth > MAX_PARAM_DEPTH:
                    return number
            elif c in "]}":
                depth = max(0, depth - 1)
    return 1


def _allowed_keys(cl: type) -> set[str]:
    names = {a.name for a in attrs.fields(cl) if a.init and a.name not in ("base_dir", "file")}
    return {"global" if n == "global_" else n for n in names}


def _dotted(path: tuple[PathPart, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=""")


def _split_key(key: str) -> tuple[str, ...]:
    parts = re.findall(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""", key)
    return tuple(a or b or c for a, b, c in parts)


def _key_lines(text: str) -> dict[tuple[PathPart, ...], int]:
    """Map each key path (tables, array-of-table indexes, keys) to its first line number.

    A line scanner, not a parser: it understands ``[table]``, ``[[array]]`` and
    ``dotted.key = value`` lines, which is where every key of a config lives
    (keys inside inline tables are found through their enclosing key's line).
    """
    lines: dict[tuple[PathPart, ...], int] = {}
    table: tuple[PathPart, ...] = ()
    counts: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in raw:
                in_multiline = None
            continue
        header = _HEADER.match(raw)
        if header:
            names = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = counts.get(names, 0)
                counts[names] = index + 1
                table = (*names, index)
                lines.setdefault(names, number)
            else:
                table = names
            lines.setdefault(table, number)
            continue
        key = _KEY.match(raw)
        if key:
            full = (*table, *_split_key(key.group(1)))
            lines.setdefault(full, number)
            rest = raw[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return lines


def _line_of(lines: dict[tuple[PathPart, ...], int], path: tuple[PathPart, ...]) -> int:
    for n in range(len(path), 0, -1):
        line = lines.get(path[:n])
        if line is not None:
            return line
    return 1
