"""The docs stay true: every code block runs (see the root conftest.py), the config reference names
every key of the schema with its default, and the README's JavaScript example works the README's way."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from flox_trio import config as cfg

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Languages the root conftest runs, and the ones nothing runs here (sh: tests/e2e runs the README's
#: command lines; "" is the README's source tree).
RUN = {"python", "js", "javascript", "toml"}
NOT_RUN = {"sh", ""}
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*skip:\s*next")

#: Each schema class and the heading of its section in docs/config.md.
SECTIONS: dict[type, str] = {
    cfg.Config: "## Top level",
    cfg.VenueConfig: "## `[venue]`",
    cfg.ExecutorConfig: "## `[executor]`",
    cfg.LimitsConfig: "## `[risk.slot]` and `[risk.global]`",
    cfg.RiskConfig: "## `[risk.slot]` and `[risk.global]`",
    cfg.LogConfig: "## `[log]`",
    cfg.SlotConfig: "## `[[slots]]`",
}
#: Fields of the schema that are not TOML keys.
NOT_KEYS = {"base_dir", "file"}


def blocks(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def toml_keys(cls: type) -> list[str]:
    return ["global" if a.name == "global_" else a.name for a in attrs.fields(cls) if a.name not in NOT_KEYS]


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start: end if end >= 0 else len(text)]


def rendered_default(field: Any) -> str | None:
    """How docs/config.md writes a field's default, or None when it is a table (described in words)."""
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return {dict: "`{}`", list: "`[]`"}.get(default.factory)
    if default is None:
        return "not set"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str | Decimal):
        return f'`"{default}"`'
    if isinstance(default, int | float):
        return f"`{default!r}`"
    if default == ():
        return "`[]`"
    return None


# --- every block runs -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_block_has_a_language_the_suite_knows(path: Path) -> None:
    unknown = {lang for lang, _ in blocks(path)} - RUN - NOT_RUN
    assert not unknown, f"{path.name}: code blocks in {sorted(unknown)}: run them in conftest.py or mark them sh"


def test_the_suite_collects_every_python_js_and_toml_block() -> None:
    want = {}
    for path in DOCS:
        runnable = sum(lang in RUN for lang, _ in blocks(path))
        want[path.relative_to(ROOT).as_posix()] = runnable + len(SKIP.findall(path.read_text()))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "README.md", "docs"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    got: dict[str, int] = {}
    for line in out.stdout.splitlines():
        if "::line:" in line:
            name = line.split("::", 1)[0]
            got[name] = got.get(name, 0) + 1
    assert got == {k: v for k, v in want.items() if v}


def test_no_block_is_skipped_silently() -> None:
    # A skip marker is allowed, but it must be visible in the page and say why.
    for path in DOCS:
        for m in re.finditer(r"<!--\s*skip:\s*(\w+)([^>]*)-->", path.read_text()):
            assert m.group(1) != "next" or m.group(2).strip(), f"{path.name}: a skip marker without a reason"


# --- the config reference ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda c: c.__name__)
def test_the_reference_names_every_key_with_its_default(cls: type) -> None:
    text = section((ROOT / "docs" / "config.md").read_text(), SECTIONS[cls])
    fields = {("global" if a.name == "global_" else a.name): a for a in attrs.fields(cls) if a.name not in NOT_KEYS}
    for key, field in fields.items():
        if cls is cfg.RiskConfig:  # its two keys are the section's two tables
            assert f"`[risk.{key}]`" in text
            continue
        row = re.search(rf"^\| `{key}` \|([^|]*)\|([^|]*)\|", text, re.M)
        assert row, f"docs/config.md, {SECTIONS[cls]}: no row for `{key}`"
        default = rendered_default(field)
        if default is not None:
            assert row.group(2).strip() == default, f"`{key}`: the default is {default}, the page says {row.group(2)}"


def test_the_reference_has_no_key_the_schema_lacks() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    for cls, heading in SECTIONS.items():
        if cls is cfg.RiskConfig:
            continue
        rows = re.findall(r"^\| `(\w+)` \|", section(text, heading), re.M)
        keys = set(toml_keys(cls)) | (set(toml_keys(cfg.LimitsConfig)) if cls is cfg.LimitsConfig else set())
        assert set(rows) <= keys, f"{heading}: {sorted(set(rows) - keys)} are not keys of {cls.__name__}"


def test_the_reference_example_loads_and_sets_every_top_level_key(tmp_path: Path) -> None:
    example = next(body for lang, body in blocks(ROOT / "docs" / "config.md") if lang == "toml")
    path = tmp_path / "example.toml"
    path.write_text(example)
    config = cfg.load_config(path)
    assert config.metrics_port == 9108 and config.name == "ema-demo"
    assert config.executor.taker_fee == Decimal("0.0004")
    assert config.risk.global_.max_position == Decimal("0.15")
    assert [s.strategy for s in config.slots] == ["../py_strategies/ema.py:EmaStrategy", "../js_strategies/ema.js"]
    assert config.slots[0].risk == cfg.LimitsConfig(max_order_qty=Decimal("0.02"))
    data = tomllib.loads(example)
    assert set(data) == set(toml_keys(cfg.Config))
    # A paper executor refuses the venue executors' keys; the page's second example sets them.
    venue_only = {"testnet", "api_key_env", "secret_env", "key_file", "ws_api_url", "rest_url", "trade_url",
                  "private_url", "category"}
    for table, cls, left_out in (("executor", cfg.ExecutorConfig, venue_only), ("log", cfg.LogConfig, set()),
                                 ("risk", cfg.RiskConfig, set())):
        assert set(data[table]) == set(toml_keys(cls)) - left_out, table
    assert set().union(*data["slots"]) == set(toml_keys(cfg.SlotConfig))


# --- the README's JavaScript example, the README's way ----------------------------------------------------


def readme_js_section() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    part = section(text, "## JavaScript strategies")
    python = next(body for lang, body in blocks_of(part) if lang == "python")
    js = next(body for lang, body in blocks_of(part) if lang == "js")
    return python, js


def blocks_of(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def test_the_readme_js_snippet_swaps_its_slot_when_loaded_as_the_readme_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The README's Python block loads a script and adds what it registered; given the README's JS
    # block as that script, its top-level runner.replaceStrategy(0, ...) must swap slot 0 (on
    # main before issue 11 it was refused with UnknownSlotError: the script was loaded with
    # runner=runner, which makes the request before the script's strategy is in a slot).
    python, js = readme_js_section()
    assert "runner.replaceStrategy(0" in js and "flox.js.load(" in python
    monkeypatch.chdir(tmp_path)
    (tmp_path / "js_strategies").mkdir()
    (tmp_path / "js_strategies" / "ema.js").write_text(js)
    caplog.set_level(logging.INFO, logger="flox_trio")
    exec(compile(python, "README.md", "exec"), {"__name__": "__main__"})
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors
    swaps = [r.getMessage() for r in caplog.records if "swapped" in r.getMessage()]
    assert len(swaps) == 2, swaps  # the script's own request, then the awaited one


def test_a_js_block_whose_request_is_refused_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness that runs the docs' JS blocks notices a refused request (an engine error log).
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_conftest", ROOT / "conftest.py")
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    monkeypatch.chdir(tmp_path)

    class Block:
        path = str(tmp_path / "page.md")
        line = 1

        def __init__(self, parsed: str) -> None:
            self.parsed = parsed

    ok = "flox.register({ symbols: [sym], onTrade(ctx, t) {} });"
    harness._run_js(Block(ok))
    with pytest.raises(AssertionError, match="logged errors"):
        harness._run_js(Block(ok + "\nrunner.replaceStrategy(3, { symbols: [sym] });"))
    with pytest.raises(AssertionError, match="the JavaScript block"):
        harness._run_js(Block("flox.register({ symbols: [sym], onTrade(ctx, t) { throw new Error('x'); } });"))
