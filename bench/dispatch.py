"""Offline dispatch throughput and swap pause.

    python bench/dispatch.py [--events N] [--json PATH]

Rows:
- Python strategy counting trades: trades/s from a ListFeed through the
  runner (routing, per-slot channel, dispatch loop) into ``on_trade``.
- JavaScript strategy counting trades (when the JS host is installed).
- Swap pause at a sustained 100k events/s: a PushFeed paced at 100k/s on
  the real clock while a swap runs every 50 ms; the pause is the time the
  slot is not dispatching during the swap (the strategies' own
  on_stop/on_start are empty).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import trio
from rich.table import Table

import flox_trio as flox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # bench/ siblings
from _count_strategy import CountTrades as Counter


def make_trades(n: int, symbol: str = "BTCUSDT") -> list[flox.Trade]:
    base = 1_700_000_000_000_000_000
    return [
        flox.Trade(symbol, 43_000.0 + (i % 100) * 0.01, 0.001 * (1 + i % 7), "buy" if i & 1 else "sell",
                   str(i), base + i * 1000, base + i * 1000 + 50)
        for i in range(n)
    ]


async def _run_offline(events: list[flox.Trade], strategy: object) -> float:
    t0 = time.perf_counter()
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=1024)) as runner:
        runner.add_strategy(strategy)
    return time.perf_counter() - t0


def bench_python(events: list[flox.Trade], repeat: int) -> dict[str, float]:
    rates = []
    for _ in range(repeat):
        s = Counter(["BTCUSDT"])
        dt = trio.run(_run_offline, events, s)
        assert s.n == len(events), (s.n, len(events))
        rates.append(len(events) / dt)
    return {"events": len(events), "best_per_s": max(rates), "median_per_s": statistics.median(rates)}


def bench_js(events: list[flox.Trade], repeat: int) -> dict[str, float] | None:
    try:
        from flox_trio import js
    except ImportError:
        return None
    if not hasattr(js, "load"):
        return None
    src = Path(__file__).with_name("_count.js")
    src.write_text("var n = 0;\nflox.register({symbols: ['BTCUSDT'], onTrade: function (ctx, t) { n++; }});\n")
    rates = []
    try:
        for _ in range(repeat):
            script = js.load(str(src), state_dir=os.path.join("bench", "results", "js-state"))
            dt = trio.run(_run_offline, events, script.registered)
            assert int(script.eval("n")) == len(events)
            rates.append(len(events) / dt)
    finally:
        src.unlink(missing_ok=True)
    return {"events": len(events), "best_per_s": max(rates), "median_per_s": statistics.median(rates)}


async def _swap_pauses(rate: float, seconds: float, swap_every: float) -> dict[str, float]:
    feed = flox.feeds.PushFeed(["BTCUSDT"], buffer=1024)
    events = make_trades(1000)
    stamps: list[float] = []

    class Stamp(flox.Strategy):
        def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
            stamps.append(time.perf_counter())

    async def produce() -> None:
        # Batches of 100 events every 1 ms = 100k events/s.
        per_tick = max(1, int(rate / 1000))
        deadline = trio.current_time() + seconds
        i = 0
        while trio.current_time() < deadline:
            batch = [events[(i + k) % 1000] for k in range(per_tick)]
            i += per_tick
            await feed.push(batch)
            await trio.sleep(0.001)
        feed.close()

    pauses: list[float] = []
    delivered = 0
    async with flox.open_runner(feed) as runner:
        idx = runner.add_strategy(Stamp(["BTCUSDT"]))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.sleep(0.1)
            while not feed.finite:
                await trio.sleep(swap_every)
                if feed.finite:
                    break
                # From the request to the new strategy being live: includes
                # waiting for the batch in flight, the whole swap and the wake-up.
                t0 = time.perf_counter()
                await runner.replace_strategy(idx, Stamp(["BTCUSDT"]))
                pauses.append(time.perf_counter() - t0)
        delivered = runner.slots[idx].dispatched
    pauses.sort()
    return {
        "swaps": len(pauses),
        "events": delivered,
        "p50_ms": pauses[len(pauses) // 2] * 1e3,
        "p99_ms": pauses[min(len(pauses) - 1, int(len(pauses) * 0.99))] * 1e3,
        "max_ms": pauses[-1] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--swap-seconds", type=float, default=20.0,
                    help="how long swaps run every 50 ms (20 s: ~400 of them, a p99 that is not the maximum)")
    ap.add_argument("--json", default="bench/results/dispatch.json")
    args = ap.parse_args(argv)

    events = make_trades(args.events)
    results: dict[str, object] = {"python": bench_python(events, args.repeat)}
    js_result = bench_js(events, args.repeat)
    if js_result is not None:
        results["javascript"] = js_result
    # What the rows above left behind (a million events, a QuickJS runtime) is freed now, not by a
    # collection in the middle of the swap row.
    del events
    gc.collect()
    results["swap_pause_100k"] = trio.run(_swap_pauses, 100_000, args.swap_seconds, 0.05)
    results["machine"] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}

    table = Table(title="flox-trio offline dispatch (bench/dispatch.py)")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    py = results["python"]
    table.add_row("Python strategy counting trades", f"{py['best_per_s'] / 1e6:.2f} M trades/s", ">= 1.0 M/s")
    if js_result is not None:
        table.add_row("JavaScript strategy counting trades", f"{js_result['best_per_s'] / 1e6:.2f} M trades/s",
                      ">= 1.0 M/s")
    sp = results["swap_pause_100k"]
    assert isinstance(sp, dict)
    table.add_row(f"swap pause at 100k ev/s ({sp['swaps']} swaps)",
                  f"p50 {sp['p50_ms']:.3f} ms, p99 {sp['p99_ms']:.3f} ms", "p99 <= 1 ms")
    report(table, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
