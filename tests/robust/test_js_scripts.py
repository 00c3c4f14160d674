"""A hostile JavaScript strategy: its slot is quarantined, the engine and every other slot go on.

Each attack runs in a slot between a Python victim and a JavaScript victim
(another script), and both victims must receive every event.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio._loader import StrategySpec, load_strategy
from flox_trio.js import load
from flox_trio.js._boundary import decode_output

EVENTS = [flox.Trade("BTCUSDT", 100.0 + i % 3, 1.0, "buy", str(i), 1, 2) for i in range(60)]

VICTIM_JS = """
var seen = [];
flox.register({ symbols: ['BTCUSDT'], onTrade: function (ctx, t) { seen.push(t.tradeId); } });
"""


class Victim(flox.Strategy):
    def __init__(self, symbols: Any) -> None:
        super().__init__(symbols)
        self.ids: list[str] = []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.ids.append(trade.trade_id)


def on_trade(body: str, top: str = "") -> str:
    return f"{top}\nflox.register({{ symbols: ['BTCUSDT'], onTrade: function (ctx, t) {{ {body} }} }});\n"


ATTACKS: dict[str, str] = {
    "a lone surrogate in console.log": on_trade("console.log('\\udcff' + t.tradeId);"),
    "a NUL byte in a written path": on_trade("require('fs').writeFileSync('a\\u0000b', 'x');"),
    "a 300-character file name": on_trade("require('fs').writeFileSync('x'.repeat(300), 'x');"),
    "a path through a file as a directory": on_trade(
        "var fs = require('fs'); fs.writeFileSync('f', 'x'); fs.writeFileSync('f/g', 'y');"),
    "more than 1 MB written to the state directory": on_trade(
        "require('fs').writeFileSync('big' + t.tradeId, 'x'.repeat(300000));"),
    "a swap of a slot that does not exist": on_trade("runner.replaceStrategy(99, { symbols: ['BTCUSDT'] });"),
    "a swap to other symbols": on_trade("runner.replaceStrategy(1, { symbols: ['ETHUSDT'] });"),
    "a malformed runner request": on_trade("runner.replaceStrategy('one', 5);"),
    "a quantity of 1e999999": on_trade("ctx.marketBuy(1e999999);"),
    "a negative price": on_trade("ctx.limitBuy(-5, 1);"),
    "JSON.stringify overridden": on_trade("JSON.stringify = function () { return '{\"n\": 20000000000}'; };"
                                          " ctx.marketBuy(0.01);"),
    "toJSON injected on every object": on_trade(
        "Object.prototype.toJSON = function () { return {n: -3, logs: [['shout', 'x']]}; }; ctx.marketBuy(0.01);"),
    "Array.prototype.push broken": on_trade("Array.prototype.push = function () { return 0; }; ctx.marketBuy(1);"),
    "the prelude's global reached for": on_trade(
        "if (typeof __flox !== 'undefined') __flox.finish = null; if (typeof __flox_entry !== 'undefined')"
        " __flox_entry.call = null; throw new Error('still here');"),
    "an endless loop": on_trade("while (true) {}"),
    "a catastrophic regular expression": on_trade("/(a+)+$/.test('a'.repeat(40) + 'b');"),
    "out of memory, caught and retried": on_trade(
        "var a = []; try { while (true) a.push(new Array(100000).fill(1)); }"
        " catch (e) { var b = []; while (true) b.push('x'.repeat(100000)); }"),
    "out of memory caught in 50 nested frames": on_trade("f(50);", top=(
        "function f(n) { if (n == 0) { var a = []; try { while (true) a.push(new Array(100000).fill(1)); }"
        " catch (e) { var b = []; while (true) b.push('x'.repeat(100000)); } }"
        " try { return f(n - 1); } catch (e) { return f(n - 1); } }")),
    "deep recursion": on_trade("function r(n) { return r(n + 1) + 1; } r(0);"),
    "runner.addStrategy in a loop": on_trade(
        "for (var i = 0; i < 100; i++) runner.addStrategy({ symbols: ['BTCUSDT'] });"),
    "a promise loop": on_trade("(function loop() { Promise.resolve().then(loop); })();"),
    "a throwing async callback": "flox.register({ symbols: ['BTCUSDT'], onTrade: async function () "
                                 "{ await null; throw new Error('late'); } });",
}


async def run_attack(source: str, tmp_path: Path, *, via_loader: bool = False) -> tuple[flox.RunnerStatus, Any]:
    attacker_file = tmp_path / "attack.js"
    attacker_file.write_text(source)
    victim_file = tmp_path / "victim.js"
    victim_file.write_text(VICTIM_JS)
    python_victim = Victim(["BTCUSDT"])
    with trio.fail_after(60):
        async with flox.open_runner(flox.feeds.ListFeed(EVENTS, batch_size=5), max_errors=3) as runner:
            runner.add_strategy(python_victim)
            if via_loader:  # as the control socket and configs load scripts: no grants
                attacker = load_strategy(StrategySpec(attacker_file, None), ["BTCUSDT"], state_dir=tmp_path / "a",
                                         runner=runner)
            else:
                attacker = load(attacker_file, state_dir=tmp_path / "a", memory_limit=2_000_000).registered
            runner.add_strategy(attacker)
            js_victim = load(victim_file, state_dir=tmp_path / "v").registered
            runner.add_strategy(js_victim)
            await runner.wait_idle()
            status = runner.status()
    assert python_victim.ids == [e.trade_id for e in EVENTS]
    assert js_victim.script.eval("seen") == [e.trade_id for e in EVENTS]
    return status, runner


#: What the host no longer lets do harm at all: the slot just goes on.
HARMLESS = {"a lone surrogate in console.log", "JSON.stringify overridden"}


@pytest.mark.parametrize("attack", sorted(HARMLESS))
async def test_what_no_longer_harms_leaves_the_slot_running(attack: str, tmp_path: Path) -> None:
    status, _ = await run_attack(ATTACKS[attack], tmp_path)
    assert status.slots[1].state is flox.SlotState.RUNNING and status.slots[1].errors == 0


@pytest.mark.parametrize("attack", sorted(set(ATTACKS) - HARMLESS))
async def test_a_hostile_script_quarantines_only_its_own_slot(attack: str, tmp_path: Path) -> None:
    status, runner = await run_attack(ATTACKS[attack], tmp_path, via_loader=attack == "a swap to other symbols")
    slot = status.slots[1]
    assert slot.state is flox.SlotState.QUARANTINED, (slot.state, slot.last_error)
    assert slot.last_error
    assert len([s for s in status.slots if s.state is not flox.SlotState.CLOSED]) <= 3 + 4
    assert all(o.slot != 1 or o.status == "rejected" for o in runner.executor.orders())


async def test_a_symlink_in_the_state_directory_leads_nowhere(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the engine's environment")
    state = tmp_path / "a"
    state.mkdir()
    os.symlink(secret, state / "link.json")
    os.link(secret, state / "hard.json")
    source = on_trade("var fs = require('fs'); seen = [fs.existsSync('link.json'), fs.existsSync('hard.json')];"
                      " fs.writeFileSync('link.json', 'overwritten');", top="var seen = null;")
    status, _ = await run_attack(source, tmp_path)
    assert secret.read_text() == "the engine's environment"
    assert status.slots[1].state is flox.SlotState.QUARANTINED
    assert "link" in (status.slots[1].last_error or "")


async def test_a_script_swaps_only_its_own_slots_unless_granted(tmp_path: Path) -> None:
    """Loaded the way the control socket and configs load scripts: slot 0 (Python) is not the script's."""
    source = on_trade("runner.replaceStrategy(0, { symbols: ['BTCUSDT'], onTrade: function () {} });",
                      top="runner.replaceStrategy(0, { symbols: ['BTCUSDT'] });")
    status, runner = await run_attack(source, tmp_path, via_loader=True)
    assert runner.slots[0].language == "python" and runner.slots[0].swaps == 0
    assert status.slots[1].state is flox.SlotState.QUARANTINED
    assert "may swap only the slots its strategies occupy ([1])" in (status.slots[1].last_error or "")


async def test_async_callbacks_run_and_their_orders_count(tmp_path: Path) -> None:
    source = """
var done = [];
flox.register({ symbols: ['BTCUSDT'], onTrade: async function (ctx, t) {
  await null;
  done.push(t.tradeId);
  if (t.tradeId === '3') ctx.marketBuy(0.5);
} });
"""
    path = tmp_path / "async.js"
    path.write_text(source)
    script = load(path, state_dir=tmp_path / "s")
    async with flox.open_runner(flox.feeds.ListFeed(EVENTS, batch_size=5)) as runner:
        runner.add_strategy(script.registered)
        await runner.wait_idle()
    assert script.eval("done.length") == len(EVENTS)
    assert [str(o.qty) for o in runner.executor.orders()] == ["0.5"]


def test_the_boundary_refuses_what_a_script_cannot_be_trusted_to_return() -> None:
    bad = [
        '{"n": 1, "logs": [["shout", "x"]], "intents": [], "requests": [], "writes": [], "errors": []}',
        '{"n": 1, "logs": [], "intents": [["0-1", "BTCUSDT", "buy"]], "requests": [], "writes": [], "errors": []}',
        '{"n": 1, "logs": [], "intents": [], "requests": [["fly", 0, {}]], "writes": [], "errors": []}',
        '{"n": "1", "logs": [], "intents": [], "requests": [], "writes": [], "errors": []}',
        '{"n": 1}',
        "[1, 2, 3]",
        "not json",
        None,
    ]
    for raw in bad:
        with pytest.raises(flox.JSError):
            decode_output(raw, "attack.js")
    ok = decode_output('{"n": 2, "logs": [["info", "\\udcff"]], "intents": [], "requests": [], "writes": [],'
                       ' "errors": []}', "attack.js")
    assert ok.n == 2 and ok.logs[0][1] == "\udcff"
