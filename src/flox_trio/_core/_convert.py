"""The project's one cattrs converter: configs in, snapshots out (and back, on the control client).

Scalars are strict (TOML ``"5"`` is not an int, ``true`` is not a number),
Decimals travel as strings, tuples only come from lists, unknown keys are
refused. A snapshot typed as a base class (``FeedStatus``, ``ExecutorStatus``)
is written with its own subclass's fields and a ``kind`` tag naming that
subclass, and read back into it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from ._status import ExecutorSettings, ExecutorStatus, FeedStatus

KIND = "kind"


def _structure_decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TypeError(f'expected a decimal number such as "0.5" or 2, got {value!r}')
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return Decimal(repr(value))
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise ValueError(f'expected a decimal number such as "0.5", got {value!r}') from None
    if not out.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    return out


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _is_tuple(t: Any) -> bool:
    return get_origin(t) is tuple


def _subclasses(base: type) -> Iterator[type]:
    yield base
    sub: type
    for sub in base.__subclasses__():
        yield from _subclasses(sub)


def _tagged_hooks(conv: cattrs.Converter, base: type) -> None:
    """Unstructure any subclass of ``base`` with its own fields plus ``kind``; structure by ``kind``."""
    unstructure_fns: dict[type, Callable[[Any], dict[str, Any]]] = {}
    structure_fns: dict[type, Callable[[Any, Any], Any]] = {}

    def is_base(t: Any) -> bool:
        return isinstance(t, type) and issubclass(t, base)

    def unstructure(obj: Any) -> dict[str, Any]:
        cls = type(obj)
        fn = unstructure_fns.get(cls)
        if fn is None:
            fn = unstructure_fns[cls] = make_dict_unstructure_fn(cls, conv)
        return {KIND: cls.__name__, **fn(obj)}

    def structure(value: Any, declared: type) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {declared.__name__}, got {value!r}")
        data = dict(value)
        name = data.pop(KIND, declared.__name__)
        # Slotted attrs classes leave their pre-slots original among the subclasses
        # until it is collected: take the last class of each name, the attrs one.
        found = {c.__name__: c for c in _subclasses(declared)}
        cls = found.get(name)
        if cls is None:
            raise ValueError(f"unknown {declared.__name__} kind {name!r}")
        fn = structure_fns.get(cls)
        if fn is None:
            fn = structure_fns[cls] = make_dict_structure_fn(cls, conv)
        return fn(data, cls)

    conv.register_unstructure_hook_func(is_base, unstructure)
    conv.register_structure_hook_func(is_base, structure)


def make_converter() -> cattrs.Converter:
    """A converter with the project's hooks (the config package adds its tables' own)."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(Decimal, _structure_decimal)
    conv.register_unstructure_hook(Decimal, str)
    conv.register_unstructure_hook(Path, str)
    conv.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, Enum),
                                        lambda e: e.value)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    # Before str in a StrEnum's MRO, so a state comes back as the enum, not as its text.
    conv.register_structure_hook(enum.StrEnum, lambda value, cls: cls(value))
    conv.register_structure_hook(bool, _structure_bool)

    def structure_tuple(value: Any, cl: Any) -> tuple[Any, ...]:
        # Lists only: cattrs alone would turn "BTCUSDT" into ("B", "T", ...).
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list such as [\"a\", \"b\"], got {value!r}")
        args = get_args(cl)
        item = args[0] if args else Any
        out, errors = [], []
        for i, v in enumerate(value):
            try:
                out.append(conv.structure(v, item))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"Structuring {cl!r} @ index {i}", i, item))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {cl!r}", errors, cl)
        return tuple(out)

    conv.register_structure_hook_func(_is_tuple, structure_tuple)
    for base in (FeedStatus, ExecutorStatus, ExecutorSettings):
        _tagged_hooks(conv, base)
    return conv


#: The one converter of the project (never cattrs' global one).
converter = make_converter()


def to_jsonable(obj: Any) -> Any:
    """A snapshot (or any attrs value) as JSON-ready dicts, lists, strings and numbers."""
    return converter.unstructure(obj)
