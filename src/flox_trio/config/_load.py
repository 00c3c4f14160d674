"""Parse and validate a run configuration with the project's one cattrs converter.

Every problem becomes a ``ConfigError`` that names the file, the line and the
dotted key path (``config.toml:12: risk.global.max_position: ...``) and says
what to write instead.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Iterator
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


# --- the converter ---------------------------------------------------------------


def _register(conv: cattrs.Converter) -> None:
    """The config tables on the project converter: unknown keys refused, ``global`` spelled as in TOML."""
    for cls in (VenueConfig, LimitsConfig, ExecutorConfig, SlotConfig, LogConfig):
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True))
    conv.register_structure_hook(
        RiskConfig,
        make_dict_structure_fn(RiskConfig, conv, _cattrs_forbid_extra_keys=True,
                               global_=override(rename="global")),
    )
    conv.register_unstructure_hook(
        RiskConfig,
        cattrs.gen.make_dict_unstructure_fn(RiskConfig, conv, global_=override(rename="global")),
    )
    conv.register_structure_hook(
        Config,
        make_dict_structure_fn(Config, conv, _cattrs_forbid_extra_keys=True, base_dir=override(omit=True)),
    )
    conv.register_unstructure_hook(
        Config, cattrs.gen.make_dict_unstructure_fn(Config, conv, base_dir=override(omit=True)),
    )


_register(converter)


# --- loading -------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a TOML run configuration.

    Raises:
        ConfigError: the file is missing, is not TOML, or has a misspelled
            key or a value of the wrong type; the message names the line and key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: str | Path = "<config>") -> Config:
    """Parse TOML ``text`` (``path`` names it in errors and anchors relative paths)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = converter.structure(data, Config)
    except Exception as exc:  # cattrs raises ExceptionGroups of anything the hooks raise
        problems = list(_leaves(exc, ()))
        raise ConfigError(_describe(problems, data, text, path)) from None
    config = attrs.evolve(config, base_dir=path.resolve().parent)
    _check_semantics(config, text, path)
    return config


def _check_semantics(config: Config, text: str, path: Path) -> None:
    lines = _key_lines(text)

    def fail(key_path: tuple[PathPart, ...], msg: str) -> None:
        raise ConfigError(f"{path}:{_line_of(lines, key_path)}: {_dotted(key_path)}: {msg}")

    if not config.symbols:
        fail(("symbols",), 'list at least one symbol, e.g. symbols = ["BTCUSDT"]')
    if not config.executor.latency >= 0 or not math.isfinite(config.executor.latency):
        fail(("executor", "latency"), "must be a finite number of seconds >= 0")
    for i, slot in enumerate(config.slots):
        spec = slot.strategy
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
    for key_path, limits in _all_limits(config):
        for name in ("max_order_qty", "max_position", "max_orders_per_second"):
            value = getattr(limits, name)
            if value is not None and value <= 0:
                fail((*key_path, name), f"must be > 0, got {value}; leave it out for no limit")


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
            detail = str(exc) or type(exc).__name__
            if "not in literal" in detail:
                detail = f"{value!r} is not one of {detail.split('Literal', 1)[-1].strip('[]')}"
            line = _line_of(lines, key_path)
            messages.append((line, f"{path}:{line}: {_dotted(key_path)}: {detail}"))
    if not messages:  # pragma: no cover - cattrs always reports at least one leaf
        return f"{path}: invalid configuration"
    texts = [m for _, m in sorted(messages, key=lambda lm: lm[0])]
    return texts[0] if len(texts) == 1 else f"{len(texts)} problems:\n  " + "\n  ".join(texts)


def _allowed_keys(cl: type) -> set[str]:
    names = {a.name for a in attrs.fields(cl) if a.init and a.name != "base_dir"}
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
