"""The simulator's Binance WebSocket API on its own: signatures, timestamps, keys, matching."""

from __future__ import annotations

import base64
from contextlib import asynccontextmanager
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flox_trio.execution._signing import HmacSigner, payload
from flox_trio.sim import Simulator

from .conftest import API_KEY, SECRET, SYMBOL, raw_client

raw = asynccontextmanager(raw_client)


def signed(params: dict[str, Any], sim: Simulator, secret: str = SECRET, key: str = API_KEY) -> dict[str, Any]:
    out = {**params, "apiKey": key, "timestamp": sim.now_ms()}
    out["signature"] = HmacSigner(secret).sign_params(out)
    return out


async def test_wrong_signature_is_refused_with_1022(sim: Simulator) -> None:
    async with raw(sim.binance_ws_api_url) as c:
        resp = await c.call("account.status", signed({}, sim, secret="not-the-secret"))
        assert resp["status"] == 400 and resp["error"]["code"] == -1022
        assert resp["error"]["msg"] == "Signature for this request is not valid."
        ok = await c.call("account.status", signed({}, sim))
        assert ok["status"] == 200
        assert {b["asset"]: b["free"] for b in ok["result"]["balances"]}["USDT"] == "100000.00000000"


async def test_stale_timestamp_and_unknown_keys_are_refused(sim: Simulator, autojump_clock: Any) -> None:
    async with raw(sim.binance_ws_api_url) as c:
        params = signed({}, sim)
        await trio.sleep(6)  # past the default recvWindow of 5000 ms
        resp = await c.call("account.status", params)
        assert resp["error"]["code"] == -1021 and "recvWindow" in resp["error"]["msg"]
        resp = await c.call("account.status", signed({}, sim, key="unknownKey123"))
        assert (resp["status"], resp["error"]["code"]) == (401, -2015)
        resp = await c.call("account.status", signed({}, sim, key="bad key!"))
        assert (resp["status"], resp["error"]["code"]) == (401, -2014)


async def test_ed25519_logon_subscribe_and_a_market_order_walking_the_book(sim: Simulator) -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    sim.binance_private.add_account("edKey42", public_key=pub, balances={"USDT": "1000"})
    async with raw(sim.binance_ws_api_url) as c:
        logon = {"apiKey": "edKey42", "timestamp": sim.now_ms()}
        logon["signature"] = base64.b64encode(key.sign(payload(logon).encode())).decode()
        resp = await c.call("session.logon", logon)
        assert resp["status"] == 200 and resp["result"]["apiKey"] == "edKey42"
        assert (await c.call("userDataStream.subscribe"))["result"] == {"subscriptionId": 0}
        resp = await c.call("order.place", {"symbol": SYMBOL, "side": "BUY", "type": "MARKET",
                                            "quantity": "1.2", "timestamp": sim.now_ms()})
        assert resp["status"] == 200, resp
        fills = resp["result"]["fills"]
        assert [(f["price"], f["qty"]) for f in fills] == [("100.00000000", "0.50000000"),
                                                            ("100.50000000", "0.70000000")]
        assert resp["result"]["status"] == "FILLED"
        await c.call("ping")
        reports = [e["event"] for e in c.events if e["event"]["e"] == "executionReport"]
        assert [(r["x"], r["X"], r["l"]) for r in reports] == [
            ("NEW", "NEW", "0.00000000"), ("TRADE", "PARTIALLY_FILLED", "0.50000000"),
            ("TRADE", "FILLED", "0.70000000")]
        assert reports[1]["N"] == "BTC" and reports[1]["n"] == "0.00050000"  # the buyer pays in base
