"""Build a strategy object from a spec string: ``file.py:Class`` or ``file.js[:factory]``.

Python files are imported as a fresh module every time (so a reload sees
the saved file); JavaScript files get a fresh QuickJS context through
``flox_trio.js.load`` when the JS host is installed.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .._errors import StrategyLoadError


@attrs.frozen
class StrategySpec:
    """A parsed ``PATH[:NAME]``: ``name`` is the class (Python) or the factory (JavaScript)."""

    path: Path
    name: str | None

    @property
    def language(self) -> str:
        return "javascript" if self.path.suffix == ".js" else "python"

    def __str__(self) -> str:
        return f"{self.path}:{self.name}" if self.name else str(self.path)


def parse_spec(spec: str, base_dir: Path | None = None) -> StrategySpec:
    """Split ``"py_strategies/ema.py:EmaStrategy"`` or ``"js_strategies/ema.js[:factory]"``."""
    if not isinstance(spec, str) or not spec.strip():
        raise StrategyLoadError(f'a strategy is "file.py:ClassName" or "file.js[:factory]", got {spec!r}')
    path_text, name = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and not tail.endswith((".py", ".js")) and "/" not in tail:
        path_text, name = head, tail
    path = Path(path_text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.suffix not in (".py", ".js"):
        raise StrategyLoadError(f"{spec!r}: a strategy file ends in .py or .js")
    if path.suffix == ".py" and not name:
        raise StrategyLoadError(f'{spec!r}: name the strategy class, e.g. "{path_text}:MyStrategy"')
    if not path.is_file():
        raise StrategyLoadError(f"{path}: no such strategy file")
    return StrategySpec(path.resolve(), name)


def js_available() -> bool:
    """Whether the JavaScript host (``flox_trio.js.load``) is installed."""
    try:
        js = importlib.import_module("flox_trio.js")
    except ImportError:
        return False
    return callable(getattr(js, "load", None))


def load_strategy(
    spec: StrategySpec,
    symbols: Sequence[str],
    params: dict[str, Any] | None = None,
    args: Sequence[Any] = (),
    *,
    state_dir: Path | None = None,
    runner: Any = None,
) -> Any:
    """Import ``spec`` afresh and build the strategy for ``symbols``.

    Raises:
        StrategyLoadError: the file does not import or compile (the message
            gives the file and line), the class or factory does not exist, or
            building the strategy raised.
    """
    if spec.language == "javascript":
        return _load_js(spec, symbols, params or {}, args, state_dir=state_dir, runner=runner)
    cls = _import_class(spec)
    try:
        return cls(list(symbols), **(params or {}))
    except Exception as exc:
        raise StrategyLoadError(f"{spec}: building {spec.name}({list(symbols)!r}, **{params or {}!r}) "
                                f"failed: {_where(exc, spec.path)}{type(exc).__name__}: {exc}") from exc


def _import_class(spec: StrategySpec) -> type:
    from .._strategy import Strategy
    from ..cli._demo import load_py_strategy

    assert spec.name is not None
    try:
        cls = load_py_strategy(spec.path, spec.name)
    except SyntaxError as exc:
        raise StrategyLoadError(f"{exc.filename or spec.path}:{exc.lineno}: syntax error: {exc.msg}; "
                                "the running strategy is unchanged") from exc
    except AttributeError as exc:
        if spec.name in str(exc):
            raise StrategyLoadError(f"{spec.path}: defines no {spec.name!r}; check the class name after ':'") from exc
        raise StrategyLoadError(f"{spec.path}: import failed: {_where(exc, spec.path)}{exc}") from exc
    except Exception as exc:
        raise StrategyLoadError(f"{spec.path}: import failed: {_where(exc, spec.path)}"
                                f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"{spec}: {spec.name} is not a flox_trio.Strategy subclass")
    return cls


def _load_js(spec: StrategySpec, symbols: Sequence[str], params: dict[str, Any], args: Sequence[Any], *,
             state_dir: Path | None, runner: Any) -> Any:
    if not js_available():
        raise StrategyLoadError(f"{spec.path}: JavaScript strategies need the flox_trio.js host, "
                                "which is not installed in this build")
    js = importlib.import_module("flox_trio.js")
    kwargs: dict[str, Any] = {"state_dir": str(state_dir or spec.path.parent / "state")}
    if runner is not None:
        kwargs["runner"] = runner
    try:
        script = js.load(str(spec.path), **kwargs)
        strategy = script.call(spec.name, *args) if spec.name else script.registered
    except Exception as exc:
        raise StrategyLoadError(f"{spec}: {type(exc).__name__}: {exc}") from exc
    if strategy is None:
        raise StrategyLoadError(f"{spec.path}: the script registered no strategy: call flox.register(obj), "
                                "or name a factory as FILE.js:makeStrategy")
    got = {str(s).rpartition(":")[2].upper() for s in (getattr(strategy, "symbols", None) or ())}
    want = {str(s).rpartition(":")[2].upper() for s in symbols}
    if got and want and got != want:
        raise StrategyLoadError(f"{spec}: the script's strategy watches {sorted(got)}, the slot {sorted(want)}")
    return strategy


def _where(exc: BaseException, path: Path) -> str:
    """``"file:line: "`` of the deepest frame of ``exc`` inside ``path``, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}: " if frames else ""
