"""Run configurations: what parses, and how a mistake is reported (key path and line)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import attrs
import pytest

import flox_trio as flox
from flox_trio.config import Config, converter, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
symbols = ["BTCUSDT", "ETHUSDT"]
tape = "tapes/run"

[venue]
name = "binance"
ws_url = "ws://127.0.0.1:9000"

[executor]
latency = 0.25
taker_fee = "0.0004"

[risk.slot]
max_order_qty = "0.1"

[risk.global]
max_position = 0.3
max_orders_per_second = 20

[log]
format = "json"

[[slots]]
strategy = "py_strategies/ema.py:EmaStrategy"
params = { fast = 8, slow = 21 }

[[slots]]
strategy = "js_strategies/ema.js"
factory = "makeStrategy"
args = ["v2", 3]
symbols = ["ETHUSDT"]
risk = { max_order_qty = "1e-3" }
"""


def test_a_full_config_parses_with_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.venue.name == "binance" and cfg.venue.ws_url == "ws://127.0.0.1:9000" and cfg.venue.rest_url is None
    assert cfg.executor.latency == 0.25 and cfg.executor.taker_fee == Decimal("0.0004")
    assert cfg.risk.global_.max_position == Decimal("0.3")  # a TOML float, but exactly 0.3
    assert cfg.risk.slot.max_order_qty == Decimal("0.1") and cfg.risk.global_.max_orders_per_second == 20
    assert cfg.log.format == "json"
    assert cfg.slots[0].params == {"fast": 8, "slow": 21} and cfg.slot_symbols(cfg.slots[0]) == ("BTCUSDT", "ETHUSDT")
    assert cfg.slots[1].factory == "makeStrategy" and cfg.slots[1].args == ("v2", 3)
    assert cfg.slots[1].risk is not None and cfg.slots[1].risk.max_order_qty == Decimal("0.001")
    assert cfg.base_dir == tmp_path.resolve() and cfg.path(cfg.tape or "") == tmp_path.resolve() / "tapes/run"


def test_the_converter_round_trips_and_is_not_the_global_one() -> None:
    import cattrs

    cfg = parse_config(GOOD, "x.toml")
    assert converter is not cattrs.global_converter
    raw = converter.unstructure(cfg)
    assert raw["risk"]["global"]["max_position"] == "0.3" and "base_dir" not in raw
    again = converter.structure(raw, Config)
    assert attrs.evolve(again, base_dir=cfg.base_dir, file=cfg.file) == cfg


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_is_valid_and_uses_the_simulator(example: Path) -> None:
    cfg = load_config(example)
    assert cfg.venue.name == "sim"
    for slot in cfg.slots:
        file = cfg.path(slot.strategy.rpartition(":")[0] or slot.strategy)
        assert file.is_file(), f"{example.name}: {slot.strategy} does not exist"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("max_order_qty = \"0.1\"", "max_ordr_qty = \"0.1\""),
         "x.toml:13: risk.slot.max_ordr_qty: unknown key; did you mean 'max_order_qty'?"),
        (("latency = 0.25", "latency = \"fast\""), "x.toml:9: executor.latency: expected a number, got 'fast'"),
        (("max_orders_per_second = 20", "max_orders_per_second = 2.5"),
         "x.toml:17: risk.global.max_orders_per_second: expected an integer, got 2.5"),
        (("name = \"binance\"", "name = \"kraken\""),
         "x.toml:5: venue.name: 'kraken' is not one of 'sim', 'binance', 'bybit'"),
        (("format = \"json\"", "format = \"xml\""), "x.toml:20: log.format: 'xml' is not one of"),
        (("factory = \"makeStrategy\"", "factroy = \"makeStrategy\""),
         "x.toml:28: slots[1].factroy: unknown key; did you mean 'factory'?"),
        (("risk = { max_order_qty = \"1e-3\" }", "risk = { max_order_qty = \"lots\" }"),
         "x.toml:31: slots[1].risk.max_order_qty: expected a decimal number such as \"0.5\", got 'lots'"),
        (("risk = { max_order_qty = \"1e-3\" }", "risk = { max_order_qty = true }"),
         "x.toml:31: slots[1].risk.max_order_qty: expected a decimal number"),
        (("symbols = [\"ETHUSDT\"]", "symbols = \"ETHUSDT\""), "x.toml:30: slots[1].symbols:"),
        (("tape = \"tapes/run\"", "tape = \"tapes/run\"\nverbose = true"),
         "x.toml:3: verbose: unknown key; allowed here:"),
        (("[risk.global]", "[risk.globl]"), "x.toml:15: risk.globl: unknown key; did you mean 'global'?"),
        (("symbols = [\"BTCUSDT\", \"ETHUSDT\"]", "symbols = []"), "x.toml:1: symbols: list at least one symbol"),
        (("max_position = 0.3", "max_position = -1"), "x.toml:16: risk.global.max_position: must be > 0"),
        (("strategy = \"py_strategies/ema.py:EmaStrategy\"", "strategy = \"py_strategies/ema.py\""),
         'x.toml:23: slots[0].strategy: name the class: "py_strategies/ema.py:ClassName"'),
        (("latency = 0.25", "latency = -1.0"), "x.toml:9: executor.latency: must be a finite number"),
    ],
)
def test_a_mistake_names_the_key_path_and_the_line(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in GOOD
    with pytest.raises(flox.ConfigError) as info:
        parse_config(GOOD.replace(old, new, 1), "x.toml")
    assert expected in str(info.value)


def test_several_mistakes_are_all_reported_in_line_order() -> None:
    text = GOOD.replace("latency = 0.25", "latncy = 0.25").replace("name = \"binance\"", "name = 3")
    with pytest.raises(flox.ConfigError) as info:
        parse_config(text, "x.toml")
    msg = str(info.value)
    assert msg.startswith("2 problems:")
    assert msg.index("x.toml:5: venue.name") < msg.index("x.toml:9: executor.latncy")


def test_missing_required_keys_and_bad_toml() -> None:
    with pytest.raises(flox.ConfigError, match=r"x.toml:1: venue: required key is missing"):
        parse_config('symbols = ["BTCUSDT"]\n', "x.toml")
    with pytest.raises(flox.ConfigError, match=r"x.toml:\d+: venue.name: required key is missing"):
        parse_config('symbols = ["BTCUSDT"]\n[venue]\nws_url = "ws://x"\n', "x.toml")
    with pytest.raises(flox.ConfigError, match=r"x.toml: not valid TOML: .*line 2"):
        parse_config('symbols = ["BTCUSDT"]\n[venue\n', "x.toml")


def test_a_missing_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(flox.ConfigError, match=r"cannot read config file .*nope\.toml"):
        load_config(tmp_path / "nope.toml")


def test_base_dir_is_not_a_toml_key() -> None:
    with pytest.raises(flox.ConfigError, match="base_dir: unknown key"):
        parse_config(GOOD.replace("tape = \"tapes/run\"", "base_dir = \"/etc\""), "x.toml")
