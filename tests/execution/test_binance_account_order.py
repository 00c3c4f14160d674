"""Account-stream events applied by the reader itself keep the venue's order behind a recovery in progress."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio
import trio.testing

from flox_trio import Fill
from flox_trio._core._clock import TrioClock
from flox_trio.sim import Simulator

from .conftest import Engine, make_executor, order


def trade(cid: str, trade_id: int, qty: str, cumulative: str) -> dict[str, Any]:
    return {"e": "executionReport", "c": cid, "C": "", "x": "TRADE", "X": "PARTIALLY_FILLED", "i": 7,
            "t": trade_id, "l": qty, "z": cumulative, "L": "99", "n": "0", "N": "USDT", "m": True, "q": "1"}


async def test_a_fill_of_another_order_waits_for_a_recovery_in_progress(
        sim: Simulator, nursery: trio.Nursery, autojump_clock: Any) -> None:
    ex = make_executor(sim)
    engine = Engine()
    ex.bind(emit=engine.emit, quote=engine.quote, clock=TrioClock())
    ex.submit(order("0-1", "buy", "limit", "1", "99"))
    ex.submit(order("0-2", "buy", "limit", "1", "99"))
    release = trio.Event()

    async def recover(o: Any) -> None:  # the missed trade 1 of 0-1, once the venue answers
        await release.wait()
        ex._apply_trade(o, 1, Decimal("99"), Decimal("0.2"), Decimal(0), "USDT", True)

    ex._recover_trades = recover  # type: ignore[method-assign]
    nursery.start_soon(ex._consume_events)
    await trio.testing.wait_all_tasks_blocked()
    one, two = ex.client_id("0-1"), ex.client_id("0-2")
    ex._account_event(trade(two, 5, "0.1", "0.1"))  # nothing before it: applied by the reader at once
    assert [f.trade_id for f in engine.fills()] == ["5"]
    ex._account_event(trade(one, 2, "0.3", "0.5"))  # 0.2 before it never came: queued, recovered
    ex._account_event(trade(two, 6, "0.1", "0.2"))  # after it, so after it
    await trio.sleep(1)
    assert [f.trade_id for f in engine.fills()] == ["5"]
    release.set()
    await trio.sleep(1)
    assert [(f.order_id, f.trade_id) for _, f in engine.events if isinstance(f, Fill)] == [
        ("0-2", "5"), ("0-1", "1"), ("0-1", "2"), ("0-2", "6")]
    ex._account_event(trade(two, 7, "0.1", "0.3"))  # idle again: at once
    assert engine.fills()[-1].trade_id == "7"
