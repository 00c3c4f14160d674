"""What a hostile Python strategy raises or asks for quarantines its own slot, never the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox

EVENTS = [flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), 1, 2) for i in range(60)]


class Victim(flox.Strategy):
    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.ids: list[str] = []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.ids.append(trade.trade_id)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


def raise_unprintable(ctx: flox.Context) -> None:
    raise Unprintable()


def raise_surrogate(ctx: flox.Context) -> None:
    raise ValueError("bad \udcff text")


ATTACKS = {
    "an exception whose __str__ raises": raise_unprintable,
    "an error message with a lone surrogate while a tape records": raise_surrogate,
    "a quantity of 1e999999": lambda ctx: ctx.market_buy("1e999999"),
    "a limit price of 1e999999": lambda ctx: ctx.limit_buy("1e999999", 1),
    "a quantity with 40 decimals": lambda ctx: ctx.market_buy("0." + "0" * 39 + "1"),
    "a side of hodl": lambda ctx: ctx._slot.submit_order("BTCUSDT", "hodl", "market", 1, None),
    "an order type stop": lambda ctx: ctx._slot.submit_order("BTCUSDT", "buy", "stop", 1, 1),
    "a NaN quantity": lambda ctx: ctx.market_buy(float("nan")),
    "a symbol the slot does not watch": lambda ctx: ctx._slot.submit_order("ETHUSDT", "buy", "market", 1, None),
    "a swap of a slot that does not exist": lambda ctx: ctx.runner.request_replace(99, Victim(["BTCUSDT"])),
    "a swap to other symbols": lambda ctx: ctx.runner.request_replace(0, Victim(["ETHUSDT"])),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_hostile_python_strategy_quarantines_only_its_slot(attack: str, tmp_path: Path) -> None:
    act = ATTACKS[attack]

    class Attacker(flox.Strategy):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            act(ctx)

    before, after = Victim(["BTCUSDT"]), Victim(["BTCUSDT"])
    feed = flox.feeds.ListFeed(EVENTS, batch_size=5)
    with trio.fail_after(10):
        async with flox.open_runner(feed, tape=str(tmp_path / "t.tape"), max_errors=5) as runner:
            runner.add_strategy(before)
            bad = runner.add_strategy(Attacker(["BTCUSDT"]))
            runner.add_strategy(after)
            await runner.wait_idle()
            slot = runner.status().slots[bad]
    assert before.ids == after.ids == [e.trade_id for e in EVENTS]
    assert slot.state is flox.SlotState.QUARANTINED and slot.errors == 5
    assert slot.last_error
    assert not runner.executor.orders()
    # The tape took every error message, whatever its text.
    info = flox.tape.tape_info(tmp_path / "t.tape")
    assert info.errors == 5
