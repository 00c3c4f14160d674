"""BinanceExecutor under the engine: swaps, the risk layer, Ed25519 keys, and secrets that never leak."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

import flox_trio as flox
from flox_trio._core._convert import to_jsonable
from flox_trio.execution import BinanceSettings, build_executor
from flox_trio.sim import Simulator

from .conftest import API_KEY, SECRET, SYMBOL, make_executor, order, start, until


class Buyer(flox.Strategy):
    """Places one resting limit buy on its first trade; records what reaches it."""

    def __init__(self, label: str, journal: list[Any], place: bool = True) -> None:
        super().__init__([SYMBOL])
        self.label, self.journal, self.place = label, journal, place

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        if self.place:
            self.place = False
            ctx.limit_buy("99.00", "0.4")

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        self.journal.append((self.label, "update", update.order_id, update.status))

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        self.journal.append((self.label, "fill", fill.order_id, fill.qty))


def tick(i: int) -> flox.Trade:
    return flox.Trade(SYMBOL, 99.5, 0.01, "buy", str(i))


async def test_an_order_of_the_old_strategy_filled_after_a_swap_reaches_the_new_one_once(
        sim: Simulator, autojump_clock: Any) -> None:
    journal: list[Any] = []
    ex = make_executor(sim)
    feed = flox.feeds.PushFeed([SYMBOL])
    async with flox.open_runner(feed, executor=ex) as runner:
        runner.add_strategy(Buyer("old", journal))
        await ex.wait_ready()
        await feed.push([tick(1)])
        await until(lambda: ("old", "update", "0-1", "accepted") in journal)
        await runner.replace_strategy(0, Buyer("new", journal, place=False))
        assert sim.binance_private.print_trade(SYMBOL, "99", "0.1") == 1
        await until(lambda: ("new", "fill", "0-1", Decimal("0.1")) in journal)
        sim.binance_private.print_trade(SYMBOL, "99", "0.3")
        await until(lambda: ("new", "update", "0-1", "filled") in journal)
        await feed.push([tick(2)])
        await runner.wait_idle()
        await trio.sleep(1)
        await runner.wait_idle()
        feed.close()
    assert journal == [
        ("old", "update", "0-1", "accepted"),
        ("new", "fill", "0-1", Decimal("0.1")), ("new", "update", "0-1", "partially_filled"),
        ("new", "fill", "0-1", Decimal("0.3")), ("new", "update", "0-1", "filled"),
    ]
    assert ex.position(0, SYMBOL).qty == Decimal("0.3996")  # net of the commission taken in BTC


async def test_the_risk_executor_wraps_the_binance_executor(sim: Simulator, autojump_clock: Any) -> None:
    journal: list[Any] = []
    ex = make_executor(sim)
    risk = flox.execution.RiskExecutor(ex, flox.execution.RiskLimits(
        per_slot=flox.execution.Limits(max_order_qty=Decimal("1"))))
    feed = flox.feeds.PushFeed([SYMBOL])

    class Trader(Buyer):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            if trade.trade_id == "1":
                ctx.limit_buy("99.00", "5")  # over the risk limit: never reaches the venue
                ctx.limit_buy("99.00", "0.5")
                ctx.limit_sell("102.00", "0.5")

    async with flox.open_runner(feed, executor=risk) as runner:
        runner.add_strategy(Trader("t", journal))
        await ex.wait_ready()
        await feed.push([tick(1)])
        await until(lambda: len(ex.open_orders(0)) == 2 and all(o.status == "accepted" for o in ex.open_orders(0)))
        sim.binance_private.print_trade(SYMBOL, "99", "0.5")
        await until(lambda: ("t", "update", "0-2", "filled") in journal)
        assert risk.halt("test") == 1
        await until(lambda: ("t", "update", "0-3", "canceled") in journal)
        await runner.wait_idle()
        feed.close()
    updates = [(oid, st) for _, kind, oid, st in journal if kind == "update"]
    assert updates[0] == ("0-1", "rejected")
    assert ("0-2", "filled") in updates and ("0-3", "canceled") in updates
    assert [o.qty for o in sim.binance_private.orders.values()] == [Decimal("0.5"), Decimal("0.5")]
    assert risk.status().inner.executor == "BinanceExecutor"
    settings = to_jsonable(risk.settings)
    assert settings["inner"]["kind"] == "BinanceSettings"


async def test_an_ed25519_key_logs_the_session_on(sim: Simulator, nursery: trio.Nursery, tmp_path: Path,
                                                   autojump_clock: Any) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "binance-ed25519.pem"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chmod(path, 0o600)
    pub = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    sim.binance_private.add_account("edKey0001", public_key=pub, balances={"USDT": "1000"})
    ex = make_executor(sim, api_key="edKey0001", secret=None, private_key=path)
    engine = await start(nursery, ex)
    assert ex.settings.signing == "ed25519" and ex.settings.signing_from == f"file:{path}"
    ex.submit(order("0-1", "buy", "market", "0.3"))
    await until(lambda: engine.updates("0-1")[-1:] == [("filled", "0.30000000")])
    session = sim.binance_private.sessions[0]
    assert session.account is not None and session.account.api_key == "edKey0001"
    # Logged on: no request after session.logon carries a signature.
    texts = [t for t in session.conn.received if '"order.place"' in t]
    assert texts and all('"signature"' not in t and "edKey0001" not in t for t in texts)


async def test_secrets_never_reach_logs_status_settings_or_errors(
        sim: Simulator, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    caplog.set_level(logging.DEBUG)
    sim.binance_private.faults.answer_timeout("order.place", execute=True)
    ex = make_executor(sim, unknown_after=1.0)
    engine = await start(nursery, ex)
    ex.submit(order("0-1", "buy", "limit", "0.3", "99"))
    ex.submit(order("0-2", "buy", "market", "0.2"))
    ex.submit(order("0-3", "buy", "limit", "0.3", "99.001"))
    await until(lambda: engine.updates("0-1") == [("accepted", "0")])
    sim.binance_private.print_trade(SYMBOL, "99", "0.3")
    sim.binance_private.faults.disconnect()
    await until(lambda: ex.connects == 2 and ex.ready)
    ex.cancel(0, "0-1")
    await trio.sleep(2)
    bad = make_executor(sim, secret=SECRET[::-1], run_id="0000000000")
    errors: list[str] = []
    bad.bind(emit=engine.emit, quote=engine.quote, clock=flox.TrioClock())
    try:
        await bad.run()
    except flox.FloxError as exc:
        errors.append(f"{exc!r} {exc}")
    assert errors
    artifacts = [
        caplog.text, repr(ex), str(ex), repr(bad), repr(ex.status()), orjson.dumps(to_jsonable(ex.status())).decode(),
        repr(ex.settings), orjson.dumps(to_jsonable(ex.settings)).decode(), repr(bad.status()), *errors,
        repr(engine.events), repr(ex.orders()), repr(ex.fill_history()),
    ]
    for text in artifacts:
        for secret in (SECRET, SECRET[::-1], API_KEY):
            assert secret not in text
    assert "-1022" in errors[0]


def test_replays_refuse_to_rebuild_a_venue_executor() -> None:
    with pytest.raises(flox.ConfigError, match="never sends orders"):
        build_executor(BinanceSettings())


async def test_client_ids_are_valid_unique_and_name_the_slot(sim: Simulator) -> None:
    from flox_trio.execution._binance import CLIENT_ID_RE, parse_client_id

    a, b = make_executor(sim), make_executor(sim)
    assert a.run_id != b.run_id
    cid = a.client_id("12-345678")
    assert CLIENT_ID_RE.fullmatch(cid) and len(cid) <= 36
    assert parse_client_id(cid) == (a.run_id, 12, "12-345678")
    assert parse_client_id("web_abc123") is None
    assert SECRET not in repr(a) and API_KEY not in repr(a)
