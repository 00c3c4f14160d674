"""Every code block of README.md and docs/*.md runs as a test (issue 11).

The tool is Sybil, rather than pytest-markdown-docs or pytest-examples: those two
run only Python, and a page here also holds JavaScript strategies (which must
load in a real engine slot) and TOML configs (which must load with the config
parser). Sybil lets one small parser per language do that, runs a page's blocks
in order in one namespace (as a reader would paste them), and has an explicit,
visible skip marker (``<!-- skip: next -->``) for a block that cannot run.

How each block runs:

- ``python``: executed as written, as ``__main__``, in a scratch directory that
  holds copies of js_strategies/, py_strategies/ and examples/ (so relative paths
  in the docs work and nothing is written into the work tree). A block fails if it
  raises or if the engine logs an error while it runs (a strategy that raised,
  a refused swap request).
- ``js`` / ``javascript``: written to a file, loaded with ``flox.js.load`` the way
  the README shows (no ``runner=``) and its registered strategy added to a runner
  that plays a seeded random walk; the block fails on a load error, an engine
  error log, a slot error or quarantine, or, when it calls
  ``runner.replaceStrategy``, if no swap happened.
- ``toml``: parsed with ``flox_trio.config.parse_config``.

Shell blocks (``sh``) are not run here: tests/e2e runs the README's command lines.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sybil import Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent
#: What a doc's relative paths refer to: copied into each page's scratch directory.
COPIED = ("js_strategies", "py_strategies", "examples")
#: Trades the JavaScript blocks are run on (the README's snippet buys at the 50th).
JS_TRADES = 300

_scratch: dict[int, tuple[str, str]] = {}


class _EngineErrors(logging.Handler):
    """Collects what the engine logs at ERROR or above while a block runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _EngineErrors:
        logging.getLogger("flox_trio").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("flox_trio").removeHandler(self)

    def check(self, what: str) -> None:
        if self.records:
            lines = "\n".join(f"  {r.name}: {r.getMessage()}" for r in self.records)
            raise AssertionError(f"{what}: the engine logged errors:\n{lines}")


def _setup(namespace: dict[str, Any]) -> None:
    work = tempfile.mkdtemp(prefix="flox-docs-")
    for name in COPIED:
        shutil.copytree(ROOT / name, Path(work) / name, ignore=shutil.ignore_patterns("state", ".flox-run"))
    _scratch[id(namespace)] = (work, os.getcwd())
    os.chdir(work)
    namespace["__name__"] = "__main__"


def _teardown(namespace: dict[str, Any]) -> None:
    work, cwd = _scratch.pop(id(namespace))
    os.chdir(cwd)
    shutil.rmtree(work, ignore_errors=True)


_python = PythonEvaluator()


def _run_python(example: Example) -> None:
    with _EngineErrors() as errors:
        _python(example)
    errors.check(f"the Python block at line {example.line}")


def _run_js(example: Example) -> None:
    import trio

    import flox_trio as flox

    source = str(example.parsed)
    path = Path(f"{Path(example.path).stem}-line{example.line}.js").resolve()
    path.write_text(source)

    async def main() -> Any:
        script = flox.js.load(path, state_dir=path.parent / "state")
        feed = flox.feeds.ListFeed(flox.feeds.random_walk(JS_TRADES, symbol="BTCUSDT"), batch_size=25)
        async with flox.open_runner(feed, flox.PaperExecutor(latency=0)) as runner:
            runner.add_strategy(script.registered)
        return runner.status().slots

    with _EngineErrors() as errors:
        slots = trio.run(main)
    errors.check(f"the JavaScript block at line {example.line}")
    for slot in slots:
        assert slot.errors == 0 and not slot.quarantined, (
            f"the JavaScript block at line {example.line}: slot {slot.index}: {slot.last_error}")
        assert slot.dispatched > 0, f"slot {slot.index} received nothing"
    if "runner.replaceStrategy" in source:
        assert sum(s.swaps for s in slots) >= 1, (
            f"the JavaScript block at line {example.line} calls runner.replaceStrategy, but no slot was swapped")


def _run_toml(example: Example) -> None:
    from flox_trio.config import parse_config

    parse_config(str(example.parsed), Path(example.path).parent / "config.toml")


pytest_collect_file = Sybil(
    parsers=[
        CodeBlockParser("python", _run_python),
        CodeBlockParser("js", _run_js),
        CodeBlockParser("javascript", _run_js),
        CodeBlockParser("toml", _run_toml),
        SkipParser(),
    ],
    patterns=["README.md", "docs/*.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()
