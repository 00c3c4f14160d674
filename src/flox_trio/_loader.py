"""One strategy loader, for Python and JavaScript, from a file or from a recorded source.

Everything that builds a strategy goes through here: a config's slots, the
control socket's ``swap`` and ``add``, ``--reload``, and a replay rebuilding
what a tape recorded. A spec is ``file.py:ClassName`` (built as
``ClassName(symbols, **params)``) or ``file.js[:factory]`` (the object the
script registers, or ``factory(*args)``). Python source is executed as a
fresh module every time (a reload sees the saved file; the strategy's
recorded source is exactly the text that ran); JavaScript gets a fresh
QuickJS context.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import sys
import traceback
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ._core._events import parse_symbols
from ._core._runner import Runner
from ._core._status import StrategyInfo
from ._core._strategy import Strategy
from ._errors import StrategyBuildError, StrategyLoadError, describe_exception
from .js import JsStrategy, Script

Language = Literal["python", "javascript"]

_MODULE_IDS = itertools.count(1)


@attrs.frozen
class StrategySpec:
    """A parsed ``PATH[:NAME]``: ``name`` is the class (Python) or the factory (JavaScript)."""

    path: Path
    name: str | None

    @property
    def language(self) -> Language:
        return "javascript" if self.path.suffix == ".js" else "python"

    def __str__(self) -> str:
        return f"{self.path}:{self.name}" if self.name else str(self.path)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"dir/ema.py:EmaStrategy"`` → ``("dir/ema.py", "EmaStrategy")``; ``"a.js"`` → ``("a.js", None)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and not tail.endswith((".py", ".js")) and "/" not in tail:
        return head, tail
    return spec, None


def parse_spec(spec: str, base_dir: Path | None = None) -> StrategySpec:
    """Parse ``"py_strategies/ema.py:EmaStrategy"`` or ``"js_strategies/ema.js[:factory]"`` naming a file."""
    if not isinstance(spec, str) or not spec.strip():
        raise StrategyLoadError(f'a strategy is "file.py:ClassName" or "file.js[:factory]", got {spec!r}')
    path_text, name = split_spec(spec)
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


def load_strategy(
    spec: StrategySpec,
    symbols: Sequence[str],
    params: dict[str, Any] | None = None,
    args: Sequence[Any] = (),
    *,
    state_dir: Path | None = None,
    runner: Runner | None = None,
    replacing: StrategyInfo | None = None,
    declared: bool = False,
) -> Any:
    """Read ``spec``'s file afresh and build the strategy for ``symbols``.

    ``replacing``: the strategy a swap replaces. The new one starts from its
    parameters, with ``params`` on top (``carried_params``); a JavaScript
    factory called without ``args`` gets the old one's. ``declared``: the
    strategy may watch the symbols it declares instead of ``symbols`` (a
    script's ``symbols: [...]``; ``symbols`` is then only the default ``sym``).

    Raises:
        StrategyLoadError: the file does not read, import or compile (the
            message gives the file and line), the class or factory does not
            exist, or building the strategy raised.
    """
    try:
        text = spec.path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise StrategyLoadError(f"cannot read strategy file {spec.path}: {describe_exception(exc)}") from None
    params = dict(params or {})
    if replacing is not None and replacing.language == spec.language:
        if spec.language == "javascript":
            if not args and replacing.params.get("factory") == spec.name:
                args = tuple(replacing.params.get("args") or ())
        else:
            assert spec.name is not None
            cls = strategy_class(spec.path, spec.name, text)
            return _construct(cls, str(spec.path), spec.name, symbols,
                              {**carried_params(cls, replacing), **params})
    return _build(spec.language, str(spec.path), spec.name, text, symbols, params, args,
                  state_dir=state_dir or spec.path.parent / "state", runner=runner, declared=declared)


def carried_params(cls: type[Strategy], old: StrategyInfo) -> dict[str, Any]:
    """The parameters of the strategy ``old`` that a swap to ``cls`` keeps.

    A swap re-parameterises a running slot, so it starts from what the slot
    runs with (a configured ``qty``, a snapshot path), not the class's
    defaults. The same class keeps them all; another class keeps the ones
    its constructor names.
    """
    params = {k: v for k, v in old.params.items() if k != "symbols"}
    if cls.__name__ == old.name:
        return params
    try:
        named = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in params.items()
            if k in named and named[k].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                inspect.Parameter.KEYWORD_ONLY)}


def rebuild_strategy(language: str, spec: str, source: str, params: dict[str, Any], *, state_dir: Path) -> Any:
    """Build a strategy from what a tape or bundle recorded: its language, spec, source and parameters.

    ``params`` are the recorded ones: the symbols, then the constructor's
    keyword arguments (Python) or the factory and its arguments (JavaScript).
    """
    params = dict(params)
    symbols = params.pop("symbols", None)
    if not symbols:
        raise StrategyLoadError(f"{spec}: the recorded parameters lack the strategy's symbols")
    path, name = split_spec(spec)
    if language == "python":
        if not name:
            raise StrategyLoadError(f"{spec}: the recorded spec does not name the strategy class")
        return _build("python", path, name, definitions_only(source), symbols, params, (), state_dir=state_dir,
                      runner=None)
    if language == "javascript":
        factory = params.get("factory")
        return _build("javascript", path or "<recorded>", factory if isinstance(factory, str) else None, source,
                      symbols, {}, params.get("args") or (), state_dir=state_dir, runner=None)
    raise StrategyLoadError(f"{spec}: unknown strategy language {language!r}")


def _build(language: str, path: str, name: str | None, text: str, symbols: Sequence[str], params: dict[str, Any],
           args: Sequence[Any], *, state_dir: Path, runner: Runner | None, declared: bool = False) -> Any:
    if language == "javascript":
        return _build_js(path, name, text, symbols, args, state_dir=state_dir, runner=runner, declared=declared)
    assert name is not None
    return _construct(strategy_class(Path(path), name, text), path, name, symbols, params)


def _construct(cls: type[Strategy], path: str, name: str, symbols: Sequence[str], params: dict[str, Any]) -> Any:
    try:
        return cls(list(symbols), **params)
    except Exception as exc:
        raise StrategyBuildError(f"{path}:{name}: building {name}({list(symbols)!r}, **{params!r}) "
                                f"failed: {_where(exc, path)}{describe_exception(exc)}") from exc


def strategy_class(path: Path, name: str, text: str | None = None) -> type[Strategy]:
    """Execute ``text`` (default: the file's) as a fresh module and return its ``name`` class.

    The module is not ``__main__``, so an ``if __name__ == "__main__":`` block
    of the file does not run.
    """
    if text is None:
        text = path.read_text(encoding="utf-8")
    module = types.ModuleType(f"flox_strategy_{path.stem}_{next(_MODULE_IDS)}")
    module.__file__ = str(path)
    # The host records exactly this text as the strategy's source.
    module.__dict__["__flox_source__"] = text
    sys.modules[module.__name__] = module  # so classes defined there can be inspected and pickled
    try:
        exec(compile(text, str(path), "exec"), module.__dict__)
    except SyntaxError as exc:
        raise StrategyLoadError(f"{exc.filename or path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except Exception as exc:
        raise StrategyLoadError(f"{path}: import failed: {_where(exc, str(path))}{describe_exception(exc)}") from exc
    cls = module.__dict__.get(name)
    if cls is None:
        raise StrategyLoadError(f"{path}: defines no {name!r}; check the class name after ':'")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"{path}:{name} is not a flox_trio.Strategy subclass")
    return cls


def _build_js(path: str, name: str | None, text: str, symbols: Sequence[str], args: Sequence[Any], *,
              state_dir: Path, runner: Runner | None, declared: bool = False) -> JsStrategy:
    refs = parse_symbols(list(symbols))
    try:
        # No grants: the script may swap only the slots its strategies come to occupy.
        script = Script(text, path=path, state_dir=state_dir, runner=runner, sym=refs[0].symbol)
        strategy = script.call(name, *args) if name else script.registered
    except StrategyLoadError:
        raise
    except Exception as exc:
        raise StrategyLoadError(f"{path}{':' + name if name else ''}: {describe_exception(exc)}") from exc
    got = {s.symbol for s in parse_symbols(strategy.symbols)}
    want = {s.symbol for s in refs}
    if got != want and not declared:
        raise StrategyLoadError(f"{path}: the script's strategy watches {sorted(got)}, the slot {sorted(want)}")
    return strategy


def definitions_only(source: str) -> str:
    """A recorded module without what it does when run as a program: the definitions a replay needs.

    A strategy recorded from a script (the README's example) comes with the
    script's top level, ``trio.run(main)`` included; rebuilding the strategy
    must not run the session again. Top-level expression statements (calls)
    and ``if __name__ == "__main__":`` blocks are left out; imports,
    definitions and assignments stay.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source  # compiling it reports the error with its line
    kept = [node for node in tree.body if not _runs_something(node)]
    if len(kept) == len(tree.body):
        return source
    # Line numbers stay those of the recording, so tracebacks point at the right lines.
    lines = source.splitlines(keepends=True)
    out = ["\n"] * len(lines)
    for node in kept:
        end = node.end_lineno or node.lineno
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
        out[start - 1:end] = lines[start - 1:end]
    return "".join(out)


def _runs_something(node: ast.stmt) -> bool:
    if isinstance(node, ast.Expr):
        return not isinstance(node.value, ast.Constant)  # a docstring stays
    if isinstance(node, ast.If):
        test = node.test
        return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))
    return False


def _where(exc: BaseException, path: str) -> str:
    """``"file:line: "`` of the deepest frame of ``exc`` inside ``path``, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return f"{path}:{frames[-1].lineno}: " if frames else ""
