"""A run config whose orders go to a venue: the simulator's Binance API, and no secret anywhere after."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flox_trio import ConfigError
from flox_trio.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
EMA = ROOT / "py_strategies" / "ema.py"

CONFIG = """
symbols = ["BTCUSDT"]
tape = "tapes/venue"
[venue]
name = "sim"
sim_rate = 40
[executor]
kind = "{kind}"
api_key_env = "FLOX_TEST_API_KEY"
secret_env = "FLOX_TEST_API_SECRET"
[log]
format = "json"
level = "debug"
[[slots]]
strategy = "{ema}:EmaStrategy"
params = {{ fast = 5, slow = 12, qty = 0.01, cooldown = 0.5, snapshot = "state/ema.json" }}
"""


def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("kind", ["binance", "bybit"])
def test_a_venue_session_trades_and_leaves_no_secret_in_any_artifact(tmp_path: Path, kind: str) -> None:
    api_key, secret = secrets.token_hex(32), secrets.token_hex(32)
    env = {**os.environ, "FLOX_TEST_API_KEY": api_key, "FLOX_TEST_API_SECRET": secret, "COLUMNS": "200"}
    (tmp_path / "c.toml").write_text(CONFIG.format(ema=EMA, kind=kind))
    # Into files, not pipes: a debug log nobody reads would fill a pipe and block the engine.
    logs = tmp_path / "logs"
    logs.mkdir()
    with (logs / "out").open("w") as fout, (logs / "err").open("w") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "flox_trio.cli", "-vv", "run", "c.toml"], cwd=tmp_path,
                                env=env, stdout=fout, stderr=ferr, text=True)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            time.sleep(0.5)  # a real process on the real clock: polling is the only way to observe it
            probe = _cli(tmp_path, env, "status", "--json")
            if probe.returncode == 0 and json.loads(probe.stdout)["executor"]["fills"] >= 2:
                status = probe.stdout
                break
        assert status is not None, "no fills from the venue executor"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    out, err = (logs / "out").read_text(), (logs / "err").read_text()
    assert proc.returncode == 0, err
    assert len(err.splitlines()) > 50  # debug logging was on
    executor = json.loads(status)["executor"]
    assert executor["kind"] == "RiskStatus" and executor["inner"]["kind"] == f"{kind.title()}Status"
    assert executor["inner"]["settings"]["account_from"] == "env:FLOX_TEST_API_KEY"
    outputs = [status, out, err]
    for args in (("replay", "tapes/venue", "--report", "rep"), ("bundle", "pack", "tapes/venue", "-o", "b.tar"),
                 ("tape", "info", "tapes/venue"), ("replay", "tapes/venue", "--mode", "simulate")):
        done = _cli(tmp_path, env, *args)
        assert done.returncode == 0, (args, done.stderr)
        outputs += [done.stdout, done.stderr]
    # Every byte the run and the commands after it wrote or printed.
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "c.toml"]
    assert len(blobs) > 5
    for needle in (secret, api_key):
        assert not any(needle in text for text in outputs)
        assert not any(needle.encode() in blob for blob in blobs)
    replayed = _cli(tmp_path, env, "replay", "tapes/venue")
    assert "diverged" not in replayed.stdout


@pytest.mark.parametrize(("body", "message"), [
    ('kind = "binance"', "needs api_key_env"),
    ('kind = "binance"\napi_key_env = "K"', "needs secret_env"),
    ('kind = "binance"\napi_key_env = "K"\nsecret_env = "S"\nkey_file = "k.pem"', "not both"),
    ('testnet = true', "is for a venue executor"),
    ('kind = "binance"\napi_key_env = "not a name"\nsecret_env = "S"', "must name an environment variable"),
])
def test_venue_executor_config_mistakes_are_one_line(tmp_path: Path, body: str, message: str) -> None:
    text = f'symbols = ["BTCUSDT"]\n[venue]\nname = "binance"\n[executor]\n{body}\n'
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(text, tmp_path / "x.toml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["binance", "bybit"])
async def test_a_config_sends_its_orders_to_the_simulators_venue_api(
    tmp_path: Path, kind: str, autojump_clock: object
) -> None:
    import trio

    from flox_trio.app import open_engine

    text = (f'symbols = ["BTCUSDT"]\nrun_dir = "run"\n[venue]\nname = "sim"\nsim_rate = 40\n[executor]\n'
            f'kind = "{kind}"\n[[slots]]\nstrategy = "{EMA}:EmaStrategy"\n'
            f'params = {{ fast = 3, slow = 8, qty = 0.01, snapshot = "{tmp_path / "ema.json"}" }}\n')
    config = parse_config(text, tmp_path / "c.toml")
    with trio.fail_after(120):
        async with open_engine(config) as engine:
            while engine.runner.executor.status().fills < 3:
                await trio.sleep(0.5)
            status = engine.runner.status()
            engine.stop()
    inner = status.executor.inner  # type: ignore[attr-defined]
    assert type(inner).__name__ == ("BinanceStatus" if kind == "binance" else "BybitStatus")
    assert inner.settings.account_from == "simulator account"
    orders = [o for o in engine.runner.executor.orders() if o.status == "rejected"]
    assert orders == []
