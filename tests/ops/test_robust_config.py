"""Config mistakes that used to end in a traceback, or start an engine that failed later.

Each case is a real file in tmp_path, read by ``load_config`` and by the
command line (``python -m flox_trio.cli run BAD.toml``): a ``ConfigError`` of
one line naming the file, the line and the key; exit status 2 and exactly
one line on stderr, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import flox_trio as flox
from flox_trio.config import load_config

BASE = """\
symbols = ["BTCUSDT"]
max_errors = 10

[venue]
name = "binance"
ws_url = "ws://127.0.0.1:9/ws"

[executor]
latency = 0.01
taker_fee = "0.0004"

[risk.slot]
max_order_qty = "0.5"

[[slots]]
strategy = "strategy.py:Good"
params = { qty = "0.01", fast = 8 }
"""

DEEP_OK = "[" * 30 + "1" + "]" * 30
DEEP_40 = "[" * 40 + "1" + "]" * 40
DEEP_3000 = "[" * 3000 + "]" * 3000


def _case(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def _top(line: str) -> str:
    """BASE without its [[slots]], and ``line`` as a top-level key."""
    return BASE.split("[[slots]]")[0].replace("max_errors = 10", f"max_errors = 10\n{line}", 1)


CASES = [
    # slots
    ("slots-not-a-list", _top("slots = 5"), "x.toml:3: slots: expected a list"),
    ("slots-item-not-a-table", _top("slots = [5]"), "x.toml:3: slots[0]: expected a table"),
    ("slot-strategy-empty", _case('strategy = "strategy.py:Good"', 'strategy = ""'),
     "x.toml:16: slots[0].strategy: must name a strategy"),
    ("slot-strategy-nul", _case('strategy = "strategy.py:Good"', 'strategy = "strat\\u0000egy.py:Good"'),
     "x.toml:16: slots[0].strategy: must name a strategy"),
    ("slot-symbol-empty", _case('params = { qty', 'symbols = [""]\nparams = { qty'),
     "x.toml:17: slots[0].symbols[0]: '' is not a symbol"),
    ("slot-max-errors-negative", _case('params = { qty', 'max_errors = -1\nparams = { qty'),
     "x.toml:17: slots[0].max_errors: must be >= 0"),
    ("slot-factory-not-a-name", _case('params = { qty', 'factory = "1 + 1"\nparams = { qty'),
     "x.toml:17: slots[0].factory"),
    # venue
    ("venue-not-a-table", _case('[venue]\nname = "binance"\nws_url = "ws://127.0.0.1:9/ws"\n', "")
     .replace("max_errors = 10", 'max_errors = 10\nvenue = "sim"'), "x.toml:3: venue: expected a table"),
    ("venue-ws-url", _case('ws_url = "ws://127.0.0.1:9/ws"', 'ws_url = "nonsense"'),
     "x.toml:6: venue.ws_url: must be a URL starting with ws:// or wss://"),
    ("venue-channels-empty", _case('ws_url = "ws://127.0.0.1:9/ws"', "channels = []"),
     "x.toml:6: venue.channels: list at least one channel"),
    ("venue-channel-blank", _case('ws_url = "ws://127.0.0.1:9/ws"', 'channels = [" "]'),
     "x.toml:6: venue.channels[0]"),
    ("sim-rate-nan", _case('ws_url = "ws://127.0.0.1:9/ws"', "sim_rate = nan"),
     "x.toml:6: venue.sim_rate: must be a finite number of ticks per second"),
    ("sim-rate-inf", _case('ws_url = "ws://127.0.0.1:9/ws"', "sim_rate = inf"), "x.toml:6: venue.sim_rate"),
    ("sim-rate-zero", _case('ws_url = "ws://127.0.0.1:9/ws"', "sim_rate = 0.0"), "x.toml:6: venue.sim_rate"),
    ("sim-rate-negative", _case('ws_url = "ws://127.0.0.1:9/ws"', "sim_rate = -1"), "x.toml:6: venue.sim_rate"),
    # tape and directories
    ("tape-empty", _case("max_errors = 10", 'max_errors = 10\ntape = ""'), "x.toml:3: tape: must be a path"),
    ("tape-nul", _case("max_errors = 10", 'max_errors = 10\ntape = "a\\u0000b"'),
     "x.toml:3: tape: must not contain a NUL"),
    ("run-dir-empty", _case("max_errors = 10", 'max_errors = 10\nrun_dir = " "'), "x.toml:3: run_dir: must be a path"),
    ("state-dir-empty", _case("max_errors = 10", 'max_errors = 10\nstate_dir = ""'),
     "x.toml:3: state_dir: must be a path"),
    # numbers
    ("metrics-port-negative", _case("max_errors = 10", "max_errors = 10\nmetrics_port = -1"),
     "x.toml:3: metrics_port: must be a TCP port in 0..65535"),
    ("metrics-port-too-large", _case("max_errors = 10", "max_errors = 10\nmetrics_port = 70000"),
     "x.toml:3: metrics_port"),
    ("max-errors-negative", _case("max_errors = 10", "max_errors = -1"), "x.toml:2: max_errors: must be >= 0"),
    ("latency-inf", _case("latency = 0.01", "latency = inf"), "x.toml:9: executor.latency: must be a finite"),
    ("latency-nan", _case("latency = 0.01", "latency = nan"), "x.toml:9: executor.latency"),
    ("taker-fee-huge", _case('taker_fee = "0.0004"', 'taker_fee = "1e999999"'),
     "x.toml:10: executor.taker_fee: must be a fraction of the notional in [0, 1)"),
    ("taker-fee-negative", _case('taker_fee = "0.0004"', 'taker_fee = "-0.1"'), "x.toml:10: executor.taker_fee"),
    ("maker-fee-one", _case('taker_fee = "0.0004"', 'maker_fee = 1'), "x.toml:10: executor.maker_fee"),
    ("risk-limit-huge", _case('max_order_qty = "0.5"', 'max_order_qty = "1e999999"'),
     "x.toml:13: risk.slot.max_order_qty: must be at most"),
    # symbols
    ("symbol-empty", _case('symbols = ["BTCUSDT"]', 'symbols = [""]'), "x.toml:1: symbols[0]: '' is not a symbol"),
    ("symbol-spaces", _case('symbols = ["BTCUSDT"]', 'symbols = ["BTCUSDT", "BTC USDT"]'),
     "x.toml:1: symbols[1]: 'BTC USDT' is not a symbol"),
    # strategy params
    ("param-decimal-huge", _case('qty = "0.01"', 'qty = "1e999999"'),
     "x.toml:17: slots[0].params.qty: '1e999999' is out of range"),
    ("param-decimal-tiny", _case('qty = "0.01"', 'qty = "1e-999999"'), "x.toml:17: slots[0].params.qty"),
    ("param-nan", _case('qty = "0.01"', "qty = nan"), "x.toml:17: slots[0].params.qty: must be a finite number"),
    ("param-inf", _case('qty = "0.01"', "qty = -inf"), "x.toml:17: slots[0].params.qty: must be a finite number"),
    ("param-date", _case('qty = "0.01"', "qty = 1979-05-27"), "x.toml:17: slots[0].params.qty: must be JSON-like"),
    ("param-nested-40", _case('qty = "0.01"', f"qty = {DEEP_40}"),
     "x.toml:17: slots[0].params.qty: nests deeper than 32 levels"),
    ("param-nested-3000", _case('qty = "0.01"', f"qty = {DEEP_3000}"),
     "x.toml:17: arrays or tables nested too deep to parse"),
    ("param-too-many-values", _case('qty = "0.01"', "qty = [" + ", ".join(["1"] * 10_001) + "]"),
     "x.toml:17: slots[0].params: holds more than 10000 values"),
    ("param-string-too-long", _case('qty = "0.01"', 'qty = "' + "x" * 70_000 + '"'),
     "x.toml:17: slots[0].params.qty: is a string of 70000 characters"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "strategy.py").write_text(
        "import flox_trio as flox\n\nclass Good(flox.Strategy):\n    pass\n"
    )
    return tmp_path


def test_the_base_config_is_valid_and_deep_enough_params_are_fine(workdir: Path) -> None:
    path = workdir / "x.toml"
    path.write_text(_case('qty = "0.01"', f'qty = "0.01", deep = {DEEP_OK}, big = "123456789012.5"'))
    cfg = load_config(path)
    assert cfg.slots[0].params["big"] == "123456789012.5"
    assert cfg.venue.ws_url == "ws://127.0.0.1:9/ws" and cfg.metrics_port is None


def _cli(workdir: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", "run", name], capture_output=True, text=True,
                          cwd=workdir, timeout=120)


def _assert_one_line(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("flox-trio run: ")
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("text", "fragment"), [(t, f) for _, t, f in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_is_one_config_error_naming_file_line_and_key(workdir: Path, text: str, fragment: str) -> None:
    path = workdir / "x.toml"
    path.write_text(text)
    with pytest.raises(flox.ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message, message
    _assert_one_line(_cli(workdir, "x.toml"), fragment)


def test_several_mistakes_are_still_one_line(workdir: Path) -> None:
    path = workdir / "x.toml"
    path.write_text(_case("latency = 0.01", "latncy = 0.01").replace('name = "binance"', "name = 3"))
    with pytest.raises(flox.ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"2 problems: {path}:5: venue.name")
    assert message.index("x.toml:5: venue.name") < message.index("x.toml:9: executor.latncy")
    _assert_one_line(_cli(workdir, "x.toml"), "2 problems: x.toml:5: venue.name")


def test_a_file_that_is_not_utf8_names_the_line_and_the_byte_offset(workdir: Path) -> None:
    path = workdir / "x.toml"
    good = BASE.encode()
    at = good.index(b"[executor]")
    path.write_bytes(good[:at] + b"# caf\xe9\n" + good[at:])
    with pytest.raises(flox.ConfigError) as info:
        load_config(path)
    line = good[:at].count(b"\n") + 1
    assert str(info.value) == (f"{path}:{line}: the file is not UTF-8 text: byte 0xe9 at offset {at + 5} "
                               "(invalid continuation byte); save it as UTF-8")
    _assert_one_line(_cli(workdir, "x.toml"), f"x.toml:{line}: the file is not UTF-8 text: byte 0xe9 at offset")


def test_a_config_that_is_a_directory_or_too_large_is_refused(workdir: Path) -> None:
    (workdir / "dir.toml").mkdir()
    with pytest.raises(flox.ConfigError, match=r"dir\.toml: it is not a regular file"):
        load_config(workdir / "dir.toml")
    _assert_one_line(_cli(workdir, "dir.toml"), "dir.toml: it is not a regular file")
    big = workdir / "big.toml"
    big.write_text(BASE + "#" * (5 << 20) + "\n")
    with pytest.raises(flox.ConfigError, match=r"big\.toml: it is \d+ bytes, a config is at most"):
        load_config(big)
