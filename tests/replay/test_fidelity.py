"""A replay reproduces the live run's stack and a report places swaps on the session's clock."""

from __future__ import annotations

import subprocess
import sys
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import flox_trio as flox
from flox_trio.execution import Limits, RiskLimits, run_outputs
from flox_trio.replay import replay_tape
from flox_trio.report import build_report
from flox_trio.tape._format import FLAG_RECORDS, FRAME_DECODER, FRAME_HEADER, WireSwap

BASE_NS = 1_700_000_000_000_000_000


class Buyer(flox.Strategy):
    """Buys ``qty`` on every ``every``-th trade: some orders within the risk limits, some beyond them."""

    def __init__(self, symbols: Any, qty: float = 1.0, every: int = 5) -> None:
        super().__init__(symbols, qty=qty, every=every)
        self.qty, self.every, self.n = qty, every, 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
        if self.n % self.every == 0:
            ctx.market_buy(self.qty if self.n % (2 * self.every) else self.qty * 3)


def trades(n: int, symbols: tuple[str, ...] = ("BTCUSDT",), step_ns: int = 100_000_000) -> list[flox.Trade]:
    out = []
    for i in range(n):
        ts = BASE_NS + i * step_ns
        out.append(flox.Trade(symbols[i % len(symbols)], 100.0 + i % 7, 1.0, "sell", str(i), ts, ts))
    return out


async def record_with_risk(tape: Path) -> list[tuple[str, str, str]]:
    limits = RiskLimits(per_slot=Limits(max_order_qty=Decimal(2), max_orders_per_second=2))
    executor = flox.RiskExecutor(flox.PaperExecutor(latency=0.01), limits)
    feed = flox.feeds.ListFeed(trades(400), batch_size=1, pace=True)
    async with flox.open_runner(feed, executor, tape=str(tape)) as runner:
        runner.add_strategy(Buyer(["BTCUSDT"], qty=1.0, every=2))
    return [(o.order_id, o.status, o.reason) for o in executor.orders() if o.status == "rejected"]


def test_a_replay_rebuilds_the_risk_layer_that_refused_live_orders(tmp_path: Path) -> None:
    tape = tmp_path / "risk.tape"
    live = trio.run(record_with_risk, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    assert any("max order size" in r for _, _, r in live) and any("rate limit" in r for _, _, r in live)
    replayed = replay_tape(tape)
    assert isinstance(replayed.status.executor, flox.execution.RiskStatus)
    again = [(o["order_id"], o["status"], o["reason"]) for o in replayed.outputs["orders"]
             if o["status"] == "rejected"]
    assert again == live
    assert replay_tape(tape).outputs == replayed.outputs


async def record_two_symbols(tape: Path) -> flox.SwapReport:
    # BTC and ETH interleave; the slot watches BTC only, so its own count runs at half the session's.
    feed = flox.feeds.ListFeed(trades(1000, ("BTCUSDT", "ETHUSDT")), batch_size=1, pace=True)
    async with flox.open_runner(feed, tape=str(tape)) as runner:
        slot = runner.add_strategy(Buyer(["BTCUSDT"], every=50))
        runner.add_strategy(Buyer(["ETHUSDT"], every=50))
        await trio.sleep(60)  # 600 of the 1000 events
        report = await runner.replace_strategy(slot, Buyer(["BTCUSDT"], every=40))
    return report


def test_the_report_marks_a_swap_at_its_time_in_the_session_with_several_symbols(tmp_path: Path) -> None:
    tape = tmp_path / "two.tape"
    report = trio.run(record_two_symbols, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    (swap,) = flox.tape.TapeReader(tape).swaps()
    assert swap.slot_market_event == report.at_market_event
    assert swap.at_market_event == report.global_market_event
    assert abs(swap.at_market_event - 2 * swap.slot_market_event) <= 2
    (mark,) = build_report(tape).swaps
    # The swap happened 60 s in, at the 600th event of the session: the mark is drawn there.
    assert abs(mark["t"] - 60.0) <= 0.2, mark
    assert replay_tape(tape).swaps == 1


def _hide_the_swap(tape: Path) -> None:
    """Clear the records flag of the frame holding the swap, its header's checksum made good again:
    what no writer does, but a hand with the format at hand can."""
    for seg, offset, payload, flagged in flox.tape.TapeReader(tape)._frames():
        if flagged and any(isinstance(r, WireSwap) for r in FRAME_DECODER.decode(payload)):
            data = bytearray(seg.read_bytes())
            plen, flags, marker, pcrc, _ = FRAME_HEADER.unpack_from(data, offset)
            head = FRAME_HEADER.pack(plen, flags & ~FLAG_RECORDS, marker, pcrc, 0)
            FRAME_HEADER.pack_into(data, offset, plen, flags & ~FLAG_RECORDS, marker, pcrc, zlib.crc32(head[:12]))
            seg.write_bytes(bytes(data))
            return
    raise AssertionError("no frame holds the swap")


def test_a_swap_hidden_in_a_frame_not_flagged_for_records_is_refused_not_left_out(tmp_path: Path) -> None:
    # A replay's plan reads the flagged frames alone; its stream reads them all, and refuses
    # a record the plan could not have seen instead of replaying without it.
    tape = tmp_path / "two.tape"
    trio.run(record_two_symbols, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    _hide_the_swap(tape)
    assert flox.tape.TapeReader(tape).swaps() == []
    with pytest.raises(flox.TapeError, match=r"at byte \d+ holds a swap record but is not flagged as holding "
                                             r"records besides events: the tape was altered"):
        replay_tape(tape)
    with pytest.raises(flox.TapeError, match="holds a swap record"):
        list(flox.tape.TapeReader(tape))
    out = subprocess.run([sys.executable, "-m", "flox_trio.cli", "replay", str(tape)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "holds a swap record but is not flagged" in out.stderr, out.stderr


def test_replay_outputs_match_the_live_run_exactly_without_timing_effects(tmp_path: Path) -> None:
    """With no latency and no rate limits a replay gives the live run's own outputs."""
    tape = tmp_path / "exact.tape"

    async def live() -> dict[str, Any]:
        executor = flox.RiskExecutor(flox.PaperExecutor(latency=0), RiskLimits(per_slot=Limits(max_order_qty=2)))
        async with flox.open_runner(flox.feeds.ListFeed(trades(200), batch_size=1), executor,
                                    tape=str(tape), lockstep=True) as runner:
            runner.add_strategy(Buyer(["BTCUSDT"], every=3))
        return run_outputs(executor)

    live_outputs = trio.run(live, clock=trio.testing.MockClock(autojump_threshold=0))
    assert live_outputs == replay_tape(tape).outputs


SCRIPT = """
import trio
import flox_trio as flox


class Ema(flox.Strategy):
    def __init__(self, symbols, fast=12):
        super().__init__(symbols, fast=fast)

    def on_trade(self, ctx, trade):
        if trade.trade_id == "3":
            ctx.market_buy(0.01)


async def main():
    events = [flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), 1, 2) for i in range(10)]
    async with flox.open_runner(flox.feeds.ListFeed(events), tape=TAPE) as runner:
        runner.add_strategy(Ema(["BTCUSDT"]))

trio.run(main)
if __name__ == "__main__":
    raise SystemExit("never when rebuilt")
"""


def test_a_strategy_recorded_from_a_script_replays_without_running_the_script(tmp_path: Path) -> None:
    """The recorded source is the whole script, trio.run(main) at its top level included."""
    import subprocess
    import sys

    tape = tmp_path / "script.tape"
    script = tmp_path / "session.py"
    script.write_text(f"TAPE = {str(tape)!r}\n" + SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "never when rebuilt" in done.stderr  # it ran as a program
    result = replay_tape(tape)
    assert [o["qty"] for o in result.outputs["orders"]] == ["0.01"]


async def record_with_a_halt(tape: Path) -> tuple[list[tuple[str, str, str]], int, int]:
    from flox_trio.control import ControlClient, serve_control

    limits = RiskLimits(per_slot=Limits(max_order_qty=Decimal(5)))
    executor = flox.RiskExecutor(flox.PaperExecutor(latency=0.01), limits)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    market = trades(300)
    async with flox.open_runner(feed, executor, tape=str(tape)) as runner, trio.open_nursery() as nursery:
        await nursery.start(serve_control, runner, tape.parent / "run")
        runner.add_strategy(Buyer(["BTCUSDT"], qty=1.0, every=4))
        async with ControlClient(tape.parent / "run") as client:
            # The operator acts between two events the slot has handled, as the replay's lockstep does.
            await feed.push(market[:100])
            await runner.wait_idle()
            await client.call("halt", reason="fat finger")
            halted_at = runner.status().market_events
            await feed.push(market[100:200])
            await runner.wait_idle()
            await client.call("resume")
            resumed_at = runner.status().market_events
            await feed.push(market[200:])
            await runner.wait_idle()
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return ([(o.order_id, o.status, o.reason) for o in executor.orders()], halted_at, resumed_at)


def test_a_halt_is_on_the_tape_done_again_by_the_replay_and_shaded_in_the_report(tmp_path: Path) -> None:
    from flox_trio.report import write_report

    tape = tmp_path / "halt.tape"
    live, halted_at, resumed_at = trio.run(record_with_a_halt, tape,
                                           clock=trio.testing.MockClock(autojump_threshold=0))
    refused = [o for o in live if o[1] == "rejected"]
    assert refused and all("trading halted (fat finger)" in reason for _, _, reason in refused)
    controls = flox.tape.TapeReader(tape).control_records()
    assert [(c.action, c.reason, c.at_market_event) for c in controls] == [
        ("halt", "fat finger", halted_at), ("resume", "", resumed_at)]
    assert flox.tape.tape_info(tape).records["control"] == 2
    replayed = replay_tape(tape)
    again = [(o["order_id"], o["status"], o["reason"]) for o in replayed.outputs["orders"]]
    assert [o for o in again if o[1] == "rejected"] == refused
    marks = build_report(tape).controls
    assert [m["action"] for m in marks] == ["halt", "resume"] and marks[0]["t"] < marks[1]["t"]
    _, png = write_report(tape, tmp_path / "out")
    assert png.stat().st_size > 10_000


async def record_paper_session(tape: Path, every: int = 3) -> dict[str, Any]:
    # Acks and fills come on the Trio clock after 20 ms, events every 10 ms: a
    # simulation on the events' clock answers at other moments than the live run did.
    executor = flox.PaperExecutor(latency=0.02, taker_fee="0.001")
    feed = flox.feeds.ListFeed(trades(300, step_ns=10_000_000), batch_size=1, pace=True)
    async with flox.open_runner(feed, executor, tape=str(tape)) as runner:
        runner.add_strategy(Flipper(["BTCUSDT"], every=every))
    return run_outputs(executor)


class Flipper(flox.Strategy):
    """Buys when flat and sells when long, every ``every`` trades: what it does depends on its fills."""

    def __init__(self, symbols: Any, every: int = 3) -> None:
        super().__init__(symbols, every=every)
        self.every, self.n = every, 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
        if self.n % self.every == 0 and not ctx.open_orders:
            if ctx.position > 0:
                ctx.market_sell(ctx.position)
            else:
                ctx.market_buy(1)


def test_a_reproducing_replay_gives_the_live_orders_and_fills_order_for_order(tmp_path: Path) -> None:
    tape = tmp_path / "paper.tape"
    live = trio.run(record_paper_session, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    reproduced = replay_tape(tape, mode="reproduce")
    assert reproduced.mode == "reproduce" and reproduced.divergences == ()
    assert reproduced.outputs["orders"] == live["orders"] and reproduced.outputs["fills"] == live["fills"]
    assert [p["realized_pnl"] for p in reproduced.outputs["positions"]] == \
        [p["realized_pnl"] for p in live["positions"]]
    # The simulation answers on the events' own clock: another session, by design.
    simulated = replay_tape(tape, mode="simulate")
    assert simulated.mode == "simulate" and simulated.outputs["orders"] != live["orders"]


def test_a_changed_strategy_diverges_from_the_recording_and_says_where(tmp_path: Path) -> None:
    tape = tmp_path / "paper.tape"
    trio.run(record_paper_session, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    plan = flox.replay.plan_from_tape(tape)
    changed = flox.replay.RecordedStrategy("python", plan.slots[0][1].source.replace("market_buy(1)", "market_buy(2)"),
                                           plan.slots[0][1].spec, plan.slots[0][1].params)
    result = replay_tape(tape, mode="reproduce", plan=attrs.evolve(plan, slots=[(0, changed)]))
    assert result.divergences
    assert "here, live it was buy market 1 BTCUSDT" in result.divergences[0]
    assert result.status.executor.divergences == len(result.divergences)  # type: ignore[attr-defined]


def test_the_replay_command_says_which_mode_made_its_report(tmp_path: Path) -> None:
    import json

    tape = tmp_path / "paper.tape"
    trio.run(record_paper_session, tape, clock=trio.testing.MockClock(autojump_threshold=0))
    for mode in ("reproduce", "simulate"):
        out = subprocess.run([sys.executable, "-m", "flox_trio.cli", "replay", str(tape), "--mode", mode,
                              "--report", str(tmp_path / mode)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"report (replay ({mode}))" in out.stdout
        report = json.loads((tmp_path / mode / "report.json").read_text())
        assert report["source"] == f"replay ({mode})"
    reproduced = json.loads((tmp_path / "reproduce" / "report.json").read_text())["totals"]["fills"]
    simulated = json.loads((tmp_path / "simulate" / "report.json").read_text())["totals"]["fills"]
    live = len(flox.replay.replay_tape(tape, mode="reproduce").outputs["fills"])
    assert reproduced == live and simulated == len(flox.replay.replay_tape(tape).outputs["fills"])


class Chaser(flox.Strategy):
    """Rests a bid under the market (moved after the price with ``ctx.amend`` if ``amend``); sells what fills."""

    def __init__(self, symbols: Any, every: int = 4, amend: bool = True) -> None:
        super().__init__(symbols, every=every, amend=amend)
        self.every, self.n, self.amend = every, 0, amend

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
        if self.n % self.every:
            return
        if ctx.position > 0:
            ctx.market_sell(ctx.position)
        elif ctx.open_orders:
            if self.amend:
                ctx.amend(ctx.open_orders[0].order_id, price=trade.price - 2, qty=1 + self.n % 3)
        else:
            ctx.limit_buy(trade.price - 3, 1)


async def record_resting_orders(tape: Path, amend: bool) -> dict[str, Any]:
    executor = flox.PaperExecutor(latency=0.02)
    feed = flox.feeds.ListFeed(trades(300, step_ns=10_000_000), batch_size=1, pace=True)
    async with flox.open_runner(feed, executor, tape=str(tape)) as runner:
        runner.add_strategy(Chaser(["BTCUSDT"], amend=amend))
    return run_outputs(executor)


@pytest.mark.parametrize("amend", [False, True], ids=["resting", "amended"])
def test_a_replay_reproduces_resting_orders_filled_by_the_market_and_amended_ones(tmp_path: Path,
                                                                                  amend: bool) -> None:
    # A resting order filled by a trade reaches the strategy before that trade, live and in the replay.
    tape = tmp_path / "resting.tape"
    live = trio.run(record_resting_orders, tape, amend, clock=trio.testing.MockClock(autojump_threshold=0))
    amended = [u for _, batch in flox.tape.TapeReader(tape).order_batches() for u in batch
               if isinstance(u, flox.OrderUpdate) and u.reason == "amended"]
    assert (len(amended) >= 5 if amend else not amended) and len(live["fills"]) >= 6
    reproduced = replay_tape(tape, mode="reproduce")
    assert reproduced.divergences == ()
    assert reproduced.outputs["orders"] == live["orders"] and reproduced.outputs["fills"] == live["fills"]
