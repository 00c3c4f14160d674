"""Cost per event against the number of slots.

    python bench/scale.py [--events N] [--slots 1,10,100,1000] [--json PATH]

Rows, for each slot count S:
- own symbol: S counting Python strategies, each on a symbol of its own, fed
  by a ListFeed whose events interleave the S symbols (as a whole-market feed
  does): events/s through the runner, over its whole life. The cost per event
  should not grow with S. Beside it, what that life costs with one event per
  slot: adding, starting and closing the S slots, which the rate includes.
- one symbol: S counting strategies all on one symbol: deliveries/s
  (events x S), the fan-out.
- RSS per idle slot: resident memory added by S idle Python slots, divided
  by S (measured in a child process so earlier rows do not count).

And after the table, RSS per JavaScript slot: ``--js-slots`` scripts loaded
and added, each with its own QuickJS context and thread, as a config's JS
slots are (also in a child process), with the JS heap of one of them.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from rich.table import Table

import flox_trio as flox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # bench/ siblings
from _count_strategy import CountTrades as Counter


def symbol(i: int) -> str:
    return f"S{i:04d}USDT"


def make_trades(n: int, symbols: list[str]) -> list[flox.Trade]:
    base = 1_700_000_000_000_000_000
    k = len(symbols)
    return [
        flox.Trade(symbols[i % k], 100.0 + (i % 100) * 0.01, 0.001 * (1 + i % 7), "buy" if i & 1 else "sell",
                   str(i // k), base + i * 1000, base + i * 1000 + 50)
        for i in range(n)
    ]


async def _run(events: list[flox.Trade], strategies: list[Counter], batch_size: int) -> float:
    t0 = time.perf_counter()
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=batch_size)) as runner:
        for s in strategies:
            runner.add_strategy(s)
    return time.perf_counter() - t0


def bench_own(n_events: int, slots: int, repeat: int, batch_size: int) -> dict[str, float]:
    syms = [symbol(i) for i in range(slots)]
    events = make_trades(n_events, syms)
    rates = []
    for _ in range(repeat):
        strategies = [Counter([s]) for s in syms]
        gc.collect()
        dt = trio.run(_run, events, strategies, batch_size)
        got = sum(s.n for s in strategies)
        assert got == len(events), (got, len(events))
        rates.append(len(events) / dt)
    # The same slots on one event each: what adding, starting and closing them costs, which the
    # rates above include (a runner's whole life is timed).
    lives = []
    for _ in range(repeat):
        strategies = [Counter([s]) for s in syms]
        gc.collect()
        lives.append(trio.run(_run, events[:slots], strategies, batch_size))
    return {"slots": slots, "events": len(events), "best_per_s": max(rates), "median_per_s": statistics.median(rates),
            "slots_life_s": min(lives)}


def bench_fanout(n_events: int, slots: int, repeat: int, batch_size: int) -> dict[str, float]:
    per_slot = max(1, n_events // slots)
    events = make_trades(per_slot, [symbol(0)])
    rates = []
    for _ in range(repeat):
        strategies = [Counter([symbol(0)]) for _ in range(slots)]
        gc.collect()
        dt = trio.run(_run, events, strategies, batch_size)
        got = sum(s.n for s in strategies)
        assert got == len(events) * slots, (got, len(events) * slots)
        rates.append(got / dt)
    return {"slots": slots, "deliveries": len(events) * slots, "best_per_s": max(rates),
            "median_per_s": statistics.median(rates)}


_RSS_CHILD = """
import gc, resource, sys, tempfile, trio
import flox_trio as flox
from flox_trio.app import STRATEGIES
sys.path.insert(0, {bench!r})
from _count_strategy import CountTrades as Counter
from scale import symbol

STATE = tempfile.mkdtemp()

def strategy(i):
    if sys.argv[2] == "py":
        return Counter([symbol(i)])
    script = flox.js.load(STRATEGIES / "ema.js", state_dir=f"{{STATE}}/{{i}}")
    scripts.append(script)
    return script.call("makeStrategy", "v1", 12, 26, 0.01)

scripts = []

def rss_kb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

async def main(n):
    feed = flox.feeds.PushFeed([])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(strategy(0))
        await trio.sleep(0.05)
        gc.collect()
        before = rss_kb()
        for i in range(1, n + 1):
            runner.add_strategy(strategy(i))
        await trio.sleep(0.2)
        gc.collect()
        after = rss_kb()
        heap = scripts[-1].memory()["malloc_size"] / 1024 if scripts else 0
        feed.close()
    print((after - before) / n, heap)

trio.run(main, int(sys.argv[1]))
"""


def rss_per_slot(slots: int, language: str = "py") -> tuple[float, float]:
    """(KB of RSS per slot, KB of JS heap of one slot) for ``slots`` idle slots of ``language``."""
    code = _RSS_CHILD.format(bench=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", code, str(slots), language], capture_output=True, text=True,
                         check=True)
    rss, heap = out.stdout.strip().splitlines()[-1].split()
    return float(rss), float(heap)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--slots", default="1,10,100,1000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024, help="the ListFeed's batch size")
    ap.add_argument("--js-slots", type=int, default=20, help="JavaScript slots for their RSS (0: none)")
    ap.add_argument("--json", default="bench/results/scale.json")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.slots.split(",")]

    rows: list[dict[str, Any]] = []
    for s in counts:
        own = bench_own(args.events, s, args.repeat, args.batch_size)
        fan = bench_fanout(args.events, s, args.repeat, args.batch_size)
        rows.append({"slots": s, "own_symbol": own, "one_symbol": fan, "rss_kb_per_idle_slot": rss_per_slot(s)[0]})

    table = Table(title=f"cost per event vs slots ({args.events:,} events, batches of {args.batch_size})")
    table.add_column("slots", justify="right")
    table.add_column("own symbol: events/s (best)", justify="right")
    table.add_column("median", justify="right")
    table.add_column("of it: slots added, started, closed", justify="right")
    table.add_column("one symbol: deliveries/s (best)", justify="right")
    table.add_column("median", justify="right")
    table.add_column("RSS per idle slot", justify="right")
    for r in rows:
        table.add_row(
            f"{r['slots']:,}",
            f"{r['own_symbol']['best_per_s'] / 1e6:.2f} M", f"{r['own_symbol']['median_per_s'] / 1e6:.2f} M",
            f"{r['own_symbol']['slots_life_s'] * 1e3:.0f} ms",
            f"{r['one_symbol']['best_per_s'] / 1e6:.2f} M", f"{r['one_symbol']['median_per_s'] / 1e6:.2f} M",
            f"{r['rss_kb_per_idle_slot']:.1f} KB",
        )
    result: dict[str, object] = {"events": args.events, "batch_size": args.batch_size, "rows": rows}
    if args.js_slots:
        js_rss, js_heap = rss_per_slot(args.js_slots, "js")
        result["js"] = {"slots": args.js_slots, "rss_kb_per_slot": js_rss, "js_heap_kb_per_slot": js_heap}
        table.caption = (f"RSS per JavaScript slot ({args.js_slots} scripts, each its own context and thread): "
                         f"{js_rss / 1024:.2f} MB, of it {js_heap / 1024:.2f} MB JS heap")
    report(table, result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
