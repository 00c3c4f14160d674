"""Live path: loopback simulator (another process) → Binance connector → runner → Python strategy.

    python bench/live.py [--seconds S] [--repeat N] [--latency-seconds S] [--rate MSGS] [--json PATH]

Rows:
- raw trio-websocket receive rate: a bare ``get_message()`` loop on the
  simulator's Binance trade stream (sent as fast as the client reads), with the
  same WebSocket settings the connector uses; and, for reference, with
  trio-websocket's defaults.
- connector only: ``flox.connectors.Binance`` publishing into a counter (the
  connector's own cost: decoding, ``Trade`` objects, session bookkeeping).
- engine: ``flox.connectors.Binance`` → ``open_runner`` → a strategy counting
  trades; reported as a ratio to the raw rate (medians over ``--repeat``
  alternating runs against the same simulator process).
- all three twice: with the simulator coalescing queued frames into one socket
  write (the receiver sets the pace), and writing one frame per syscall (the
  sender sets the pace, as in the reference figure of ~18k frames/s).
- wire-to-strategy latency at ``--rate`` messages/s: the simulator stamps each
  trade's time (``timeUnit=MICROSECOND``) when it writes the frame; the
  strategy records ``now - stamp`` in an HDR histogram.

The simulator runs in its own process (``python -m flox_trio.sim``) so it does
not share the engine's CPU time slices; the machine has two cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
from hdrh.histogram import HdrHistogram
from rich.table import Table
from trio_websocket import open_websocket_url

import flox_trio as flox
from flox_trio.connectors import Binance, SessionOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CountingHub, report
from _common import simulator as run_simulator

STREAM = "/stream?streams=btcusdt@trade"
WARMUP_S = 0.5


def simulator(*args: str) -> Any:
    """The simulator streaming one symbol's trades, no book, no pings (see bench/_sim.py)."""
    return run_simulator("--symbols", "BTCUSDT", "--trades-per-tick", "1,1", "--no-book", "--ping-interval", "0",
                         *args)


class Counter(flox.Strategy):
    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.n = 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1


class Latency(flox.Strategy):
    def __init__(self, symbols: list[str], histogram: HdrHistogram) -> None:
        super().__init__(symbols)
        self.histogram = histogram
        self.recording = False
        self.n = 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
        if self.recording:
            # exchange_ts_ns is the simulator's write time (µs precision, same wall clock).
            self.histogram.record_value(max(1, (time.time_ns() - trade.exchange_ts_ns) // 1000))


async def raw_rate(url: str, seconds: float, *, connector_settings: bool) -> float:
    opts = SessionOptions()
    kwargs: dict[str, Any] = ({"message_queue_size": opts.message_queue_size,
                               "max_message_size": opts.max_message_size,
                               "receive_buffer_size": opts.receive_buffer_size} if connector_settings else {})
    n = 0
    async with open_websocket_url(url + STREAM, **kwargs) as ws:
        get = ws.get_message
        deadline = trio.current_time() + WARMUP_S
        while trio.current_time() < deadline:
            await get()
        t0 = time.perf_counter()
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            await get()
            n += 1
        return n / (time.perf_counter() - t0)


async def engine_rate(urls: dict[str, Any], seconds: float) -> float:
    feed = Binance(["BTCUSDT"], ws_url=urls["binance_ws_url"], rest_url=urls["binance_rest_url"],
                   channels=("trade",))
    counter = Counter(["BTCUSDT"])
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(counter)
        while counter.n == 0:
            await trio.sleep(0.01)
        await trio.sleep(WARMUP_S)
        n0, t0 = counter.n, time.perf_counter()
        await trio.sleep(seconds)
        rate = (counter.n - n0) / (time.perf_counter() - t0)
    return rate


async def latency(urls: dict[str, Any], seconds: float) -> dict[str, Any]:
    histogram = HdrHistogram(1, 60_000_000, 3)
    feed = Binance(["BTCUSDT"], ws_url=urls["binance_ws_url"], rest_url=urls["binance_rest_url"],
                   channels=("trade",), time_unit="us")
    strategy = Latency(["BTCUSDT"], histogram)
    async with flox.open_runner(feed) as runner:
        runner.add_strategy(strategy)
        while strategy.n == 0:
            await trio.sleep(0.01)
        await trio.sleep(1.0)
        strategy.recording = True
        n0, t0 = strategy.n, time.perf_counter()
        await trio.sleep(seconds)
        strategy.recording = False
        rate = (strategy.n - n0) / (time.perf_counter() - t0)
    pct = {f"p{p:g}_us": histogram.get_value_at_percentile(p) for p in (50, 90, 99, 99.9)}
    return {"messages": histogram.get_total_count(), "rate_per_s": rate, **pct,
            "max_us": histogram.get_max_value(), "mean_us": histogram.get_mean_value()}


async def connector_rate(urls: dict[str, Any], seconds: float) -> float:
    hub = CountingHub()
    feed = Binance(["BTCUSDT"], ws_url=urls["binance_ws_url"], rest_url=urls["binance_rest_url"],
                   channels=("trade",))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run, hub)
        while hub.n == 0:
            await trio.sleep(0.01)
        await trio.sleep(WARMUP_S)
        n0, t0 = hub.n, time.perf_counter()
        await trio.sleep(seconds)
        rate = (hub.n - n0) / (time.perf_counter() - t0)
        nursery.cancel_scope.cancel()
    return rate


def throughput(sender: list[str], seconds: float, repeat: int) -> dict[str, Any]:
    """Alternating raw / connector-only / engine runs against one simulator process."""
    raw: list[float] = []
    connector: list[float] = []
    engine: list[float] = []
    with simulator("--rate", "0", *sender) as urls:
        url = urls["binance_ws_url"]
        for _ in range(repeat):
            raw.append(trio.run(lambda: raw_rate(url, seconds, connector_settings=True)))
            connector.append(trio.run(connector_rate, urls, seconds))
            engine.append(trio.run(engine_rate, urls, seconds))
        defaults = trio.run(lambda: raw_rate(url, seconds, connector_settings=False))
    out: dict[str, Any] = {
        "raw_per_s": raw, "connector_per_s": connector, "engine_per_s": engine,
        "raw_trio_websocket_defaults_per_s": defaults,
        "raw_median_per_s": statistics.median(raw),
        "connector_median_per_s": statistics.median(connector),
        "engine_median_per_s": statistics.median(engine),
    }
    out["ratio"] = out["engine_median_per_s"] / out["raw_median_per_s"]
    out["connector_ratio"] = out["connector_median_per_s"] / out["raw_median_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per throughput run")
    ap.add_argument("--repeat", type=int, default=3, help="alternating raw/connector/engine runs")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=5000.0, help="messages/s for the latency run")
    ap.add_argument("--json", default="bench/results/live.json")
    args = ap.parse_args(argv)

    # Receiver-bound: the simulator coalesces queued frames into one write, so the
    # client, not the sender, sets the pace; this is the headline ratio.
    fast = throughput([], args.seconds, args.repeat)
    # Sender-bound: one write per frame, the condition of the spec's ~18k frames/s
    # reference figure; both sides then run at the simulator's pace.
    paced = throughput(["--one-frame-per-write"], args.seconds, args.repeat)
    with simulator("--rate", str(args.rate), "--stamp", "--precise") as urls:
        lat = trio.run(latency, urls, args.latency_seconds)

    results: dict[str, Any] = {
        "throughput": {"seconds": args.seconds, "repeat": args.repeat, "receiver_bound": fast,
                       "one_frame_per_write": paced},
        "latency": {"target_rate_per_s": args.rate, "seconds": args.latency_seconds, **lat},
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }

    table = Table(title="flox-trio live path (bench/live.py): simulator process → Binance connector → strategy")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    for label, r in (("receiver-bound", fast), ("one frame per write", paced)):
        table.add_row(f"{label}: raw trio-websocket receive", f"{r['raw_median_per_s']:,.0f} msgs/s",
                      f"(library defaults {r['raw_trio_websocket_defaults_per_s']:,.0f})")
        table.add_row(f"{label}: connector only (no runner)", f"{r['connector_median_per_s']:,.0f} msgs/s",
                      f"{r['connector_ratio']:.0%} of raw")
        table.add_row(f"{label}: engine → strategy counting trades", f"{r['engine_median_per_s']:,.0f} msgs/s",
                      "")
        table.add_row(f"{label}: engine / raw, same run", f"{r['ratio']:.1%}", ">= 80 %")
    table.add_row(f"wire-to-strategy latency at {lat['rate_per_s']:,.0f} msgs/s",
                  f"p50 {lat['p50_us']} µs, p99 {lat['p99_us']} µs", "p50 <= 150 µs, p99 <= 1 ms")
    table.add_row("  p90 / p99.9 / max", f"{lat['p90_us']} / {lat['p99.9_us']} / {lat['max_us']} µs", "")
    report(table, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
