"""Venue executors against the simulator's Binance WebSocket API, over real loopback WebSockets."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from flox_trio.sim import Simulator

API_KEY = "simKey0123456789abcdefABCDEF"
SECRET = "simSecret-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
SYMBOL = "BTCUSDT"
#: A book the tests set: asks 100.00 x 0.5, 100.50 x 1, 101.00 x 2; bids 99.50 x 1, 99.00 x 2.
ASKS = [["100.00000000", "0.50000000"], ["100.50000000", "1.00000000"], ["101.00000000", "2.00000000"]]
BIDS = [["99.50000000", "1.00000000"], ["99.00000000", "2.00000000"]]


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Simulator:
    from flox_trio.sim import SymbolSpec

    s = Simulator(port=0, generate=False, rate=None, symbols=[SymbolSpec(SYMBOL, 100.0, tick=0.01, lot=0.0001)])
    await nursery.start(s.serve)
    s.set_binance_book(SYMBOL, 1000, BIDS, ASKS)
    s.binance_private.add_account(API_KEY, secret=SECRET, balances={"USDT": "100000", "BTC": "10"})
    return s


class RawClient:
    """A bare WebSocket API client: sends requests, keeps responses and events apart."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rid = f"r{next(self.ids)}"
        await self.ws.send_message(orjson.dumps({"id": rid, "method": method, "params": params or {}}).decode())
        while True:
            msg = orjson.loads(await self.ws.get_message())
            if msg.get("id") == rid:
                return msg  # type: ignore[no-any-return]
            self.events.append(msg)


async def raw_client(url: str) -> AsyncIterator[RawClient]:
    async with open_websocket_url(url) as ws:
        yield RawClient(ws)


class Engine:
    """The engine as an executor sees it: emitted events in order, a fixed quote."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []

    def emit(self, slot: int, ev: Any) -> None:
        self.events.append((slot, ev))

    def quote(self, slot: int, symbol: str) -> tuple[float | None, float | None, float | None]:
        return None, 99.5, 100.0

    def updates(self, order_id: str | None = None) -> list[tuple[str, str]]:
        from flox_trio import OrderUpdate

        return [(e.status, str(e.filled_qty)) for _, e in self.events
                if isinstance(e, OrderUpdate) and (order_id is None or e.order_id == order_id)]

    def amend_answers(self, order_id: str = "0-1") -> list[tuple[str, Any, Any, str]]:
        """The updates of ``order_id`` that answer an amend: (status, qty, price, reason)."""
        from flox_trio import OrderUpdate

        return [(e.status, e.qty, e.price, e.reason) for _, e in self.events
                if isinstance(e, OrderUpdate) and e.order_id == order_id and "amend" in e.reason]

    def fills(self, order_id: str | None = None) -> list[Any]:
        from flox_trio import Fill

        return [e for _, e in self.events if isinstance(e, Fill) and (order_id is None or e.order_id == order_id)]


def make_executor(sim: Simulator, **options: Any) -> Any:
    from flox_trio.execution import BinanceExecutor

    kw: dict[str, Any] = {"api_key": API_KEY, "secret": SECRET}
    kw.update(options)
    return BinanceExecutor(ws_api_url=sim.binance_ws_api_url, rest_url=sim.binance_rest_url, **kw)


async def start(nursery: trio.Nursery, executor: Any) -> Engine:
    """Bind ``executor`` to a recording engine, run it in ``nursery``, return once it is ready."""
    from flox_trio._core._clock import TrioClock

    engine = Engine()
    executor.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    nursery.start_soon(executor.run)
    with trio.fail_after(10):
        await executor.wait_ready()
    return engine


async def start_resting(nursery: trio.Nursery, executor: Any, *args: Any) -> Engine:
    """``start`` the executor and place ``order(*args)`` on it; return once the venue accepted it."""
    engine = await start(nursery, executor)
    executor.submit(order(*args))
    await until(lambda: engine.updates(args[0]) == [("accepted", "0")])
    return engine


async def until(cond: Any, timeout: float = 10.0) -> None:
    """Wait (on the virtual clock) until ``cond()`` holds."""
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


def order(order_id: str, side: str, order_type: str, qty: str, price: str | None = None, slot: int = 0) -> Any:
    from decimal import Decimal

    from flox_trio.execution import Order

    return Order(order_id, slot, SYMBOL, side, order_type, Decimal(qty),  # type: ignore[arg-type]
                 Decimal(price) if price is not None else None)
