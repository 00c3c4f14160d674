"""Live path: loopback simulator (another process) → Binance connector → runner → Python strategy.

    python bench/live.py [--seconds S] [--repeat N] [--latency-seconds S] [--rate MSGS]
                         [--wide-rate MSGS] [--wide-symbols N] [--frames N] [--json PATH]

Rows:
- raw trio-websocket receive rate: a bare ``get_message()`` loop on the
  simulator's Binance trade stream (sent as fast as the client reads), with the
  same receive buffer the connector uses; and, for reference, with
  trio-websocket's defaults.
- our frame reader alone: the connectors' WebSocket client
  (``connectors._websocket``) reading and dropping messages, no decode; when it
  is no faster than the connector, the simulator (not the client) sets the pace.
- connector only: ``flox.connectors.Binance`` publishing into a counter (frames
  read, decoded into ``Trade`` events, session bookkeeping).
- engine: ``flox.connectors.Binance`` → ``open_runner`` → a strategy counting
  trades; reported as a ratio to the raw rate (medians over ``--repeat``
  alternating runs against the same simulator process).
- all of these twice: with the simulator coalescing queued frames into one
  socket write (the receiver sets the pace), and writing one frame per syscall
  (the sender sets the pace, as in the reference figure of ~18k frames/s).
- cost per frame, measured in this process on ``--frames`` frames the
  simulator sent: wsproto's frame parser (what trio-websocket runs) and
  trio-websocket's whole receive (1 / its receiver-bound rate: the client is
  the one busy core), against our frame reader and our typed decode
  (envelope, payload, checks, ``Trade``).
- wire-to-strategy latency: the simulator stamps each trade's time
  (``timeUnit=MICROSECOND``) when it writes the frame; the strategy records
  ``now - stamp`` in an HDR histogram. Once at ``--rate`` messages/s on one
  symbol, once at ``--wide-rate`` spread over ``--wide-symbols`` symbols (each
  market tick moves a few symbols drawn at random, so frames come in small
  bunches as from a venue, not all symbols at once). Each row says how much
  CPU the engine and the simulator used: a simulator at a whole core writes
  late and in bunches, and that queue is in the figure.
- machine: the CPU one wake-up of a process costs here (a bare epoll loop and
  a Trio loop woken 5,000 times a second by a timerfd, doing nothing else).
  Both sides of the socket pay it for every read.

The simulator runs in its own process (``python -m flox_trio.sim``), pinned to
a CPU of its own and the engine to the others (``--no-pin``: not), so that the
kernel does not run the two on one core by turns: see ``_common.simulator``.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
import trio.testing
from hdrh.histogram import HdrHistogram
from rich.table import Table
from trio_websocket import open_websocket_url
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

import flox_trio as flox
from flox_trio.connectors import Binance, SessionOptions
from flox_trio.connectors._websocket import MarketSocket, connect
from flox_trio.sim._pacer import Pacer, _timerfd
from flox_trio.sim._transport import text_frame

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CountingHub, process_cpu_seconds, report
from _common import simulator as run_simulator

STREAM = "/stream?streams=btcusdt@trade"
WARMUP_S = 0.5


#: Whether the simulator gets a CPU of its own (``--no-pin``: not; see ``_common.simulator``).
PIN = [True]


def simulator(*args: str, symbols: str = "BTCUSDT") -> Any:
    """The simulator streaming trades only (no book, no pings), one trade per symbol step."""
    return run_simulator("--symbols", symbols, "--trades-per-tick", "1,1", "--no-book", "--ping-interval", "0",
                         *args, pin=PIN[0])


class Counter(flox.Strategy):
    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.n = 0

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1


class Latency(flox.Strategy):
    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        #: Per trade while recording: (ns from the simulator's write to this callback, ns of it after our read).
        self.samples: list[tuple[int, int]] = []
        self.recording = False
        self.n = 0
        #: The runner's clock, which stamps recv_ts_ns: the part after our read is measured on it, so
        #: that a wall clock being slewed (NTP, 0.5 % here on 2026-12-03) does not move that part.
        self.clock: Any = None

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.n += 1
        if self.recording:
            # exchange_ts_ns is the simulator's write time (µs precision, same wall clock). Kept raw:
            # an HDR histogram's record_value costs more than the connector's decode of the frame.
            # recv_ts_ns is when our read returned the frame, on the engine's clock.
            self.samples.append((time.time_ns() - trade.exchange_ts_ns, self.clock.wall_ns() - trade.recv_ts_ns))


# --- throughput ------------------------------------------------------------------------------------


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


async def open_market_socket(url: str) -> tuple[trio.SocketStream, MarketSocket]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stream = await trio.open_tcp_stream(host, port)
    opts = SessionOptions()
    ws = await connect(stream, f"{host}:{port}", STREAM, max_message_size=opts.max_message_size,
                       receive_buffer_size=opts.receive_buffer_size)
    return stream, ws


async def reader_rate(url: str, seconds: float) -> float:
    """Our frame reader with nothing behind it: the most the simulator delivers to a client."""
    stream, ws = await open_market_socket(url)
    try:
        receive = ws.receive
        deadline = trio.current_time() + WARMUP_S
        while trio.current_time() < deadline:
            await receive()
        n = 0
        t0 = time.perf_counter()
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            n += len(await receive())
        return n / (time.perf_counter() - t0)
    finally:
        await trio.aclose_forcefully(stream)


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
    """Alternating raw / our reader / connector-only / engine runs against one simulator process."""
    raw: list[float] = []
    reader: list[float] = []
    connector: list[float] = []
    engine: list[float] = []
    with simulator("--rate", "0", *sender) as urls:
        url = urls["binance_ws_url"]
        for _ in range(repeat):
            raw.append(trio.run(lambda: raw_rate(url, seconds, connector_settings=True)))
            reader.append(trio.run(reader_rate, url, seconds))
            connector.append(trio.run(connector_rate, urls, seconds))
            engine.append(trio.run(engine_rate, urls, seconds))
        defaults = trio.run(lambda: raw_rate(url, seconds, connector_settings=False))
    out: dict[str, Any] = {
        "raw_per_s": raw, "reader_per_s": reader, "connector_per_s": connector, "engine_per_s": engine,
        "raw_trio_websocket_defaults_per_s": defaults,
        "raw_median_per_s": statistics.median(raw),
        "reader_median_per_s": statistics.median(reader),
        "connector_median_per_s": statistics.median(connector),
        "engine_median_per_s": statistics.median(engine),
    }
    out["ratio"] = out["engine_median_per_s"] / out["raw_median_per_s"]
    out["connector_ratio"] = out["connector_median_per_s"] / out["raw_median_per_s"]
    out["reader_ratio"] = out["reader_median_per_s"] / out["raw_median_per_s"]
    return out


# --- cost per frame ----------------------------------------------------------------------------------


async def capture(url: str, n: int) -> list[str]:
    """``n`` trade frames as the simulator sends them."""
    async with open_websocket_url(url + STREAM) as ws:
        return [str(await ws.get_message()) for _ in range(n)]


class _Link:
    """The connection a frame came on, as the decoder sees it (it carries BTCUSDT)."""

    id = 1
    symbols = frozenset({"BTCUSDT"})

    def reply(self, *args: Any, **kwargs: Any) -> None: ...
    def pong(self) -> None: ...
    def request_planned(self, reason: str) -> None: ...


def per_frame_costs(frames: list[str], repeat: int) -> dict[str, float]:
    """Microseconds per frame of each stage, on the same frames, best of ``repeat`` (this process, no IO)."""
    wire = b"".join(text_frame(f.encode()) for f in frames)
    chunks = [wire[i:i + 65536] for i in range(0, len(wire), 65536)]
    messages = [f.encode() for f in frames]
    n = len(frames)

    def wsproto_parse() -> None:
        # What trio-websocket's reader task does with each read (its message assembly left out).
        client = Connection(ConnectionType.CLIENT)
        got = 0
        for chunk in chunks:
            client.receive_data(chunk)
            for event in client.events():
                if isinstance(event, TextMessage) and event.message_finished:
                    got += 1
        assert got == n, got

    def our_reader() -> None:
        ws = MarketSocket(trio.testing.memory_stream_pair()[0], b"", max_message_size=1 << 22,
                          receive_buffer_size=65536)
        out: list[bytes] = []
        buf = b""
        for chunk in chunks:
            buf += chunk
            used = ws._parse(buf, out)
            buf = buf[used:]
        assert len(out) == n, len(out)

    feed = Binance(["BTCUSDT"], channels=("trade",))
    venue = feed._venue
    link = _Link()

    def our_decode() -> None:
        venue.symbols_changed(frozenset({"BTCUSDT"}), frozenset())  # a fresh trade-id sequence
        decode = venue.decode
        for m in messages:
            decode(link, m, 1)
        venue.symbols_changed(frozenset(), frozenset({"BTCUSDT"}))

    out: dict[str, float] = {}
    for name, fn in (("wsproto_parse_us", wsproto_parse), ("our_reader_us", our_reader),
                     ("our_decode_us", our_decode)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = best / n * 1e6
    assert feed.errors == 0 and feed.gaps == 0, (feed.errors, feed.last_error)
    return out


# --- latency ---------------------------------------------------------------------------------------


async def latency(urls: dict[str, Any], symbols: list[str], seconds: float) -> dict[str, Any]:
    histogram = HdrHistogram(1, 60_000_000, 3)
    feed = Binance(symbols, ws_url=urls["binance_ws_url"], rest_url=urls["binance_rest_url"],
                   channels=("trade",), time_unit="us")
    strategy = Latency(symbols)
    async with flox.open_runner(feed) as runner:
        strategy.clock = runner.clock
        runner.add_strategy(strategy)
        while strategy.n == 0:
            await trio.sleep(0.01)
        await trio.sleep(1.0)
        strategy.recording = True
        n0, t0, cpu0 = strategy.n, time.perf_counter(), time.process_time()
        sim0 = process_cpu_seconds(urls["pid"])
        await trio.sleep(seconds)
        strategy.recording = False
        elapsed = time.perf_counter() - t0
        rate = (strategy.n - n0) / elapsed
        cpu = (time.process_time() - cpu0) / elapsed
        sim1 = process_cpu_seconds(urls["pid"])
    ours = HdrHistogram(1, 60_000_000, 3)
    for total, after_read in strategy.samples:
        histogram.record_value(max(1, total // 1000))
        ours.record_value(max(1, after_read // 1000))
    pct = {f"p{p:g}_us": histogram.get_value_at_percentile(p) for p in (50, 90, 99, 99.9)}
    # The engine's own CPU share: well under one core, or the latency is queueing for the CPU.
    # The part from our read to the strategy (decode, publish, dispatch): the rest is the simulator's
    # write, the kernel and the wake-up of this process.
    read_to_strategy = {f"p{p:g}_us": ours.get_value_at_percentile(p) for p in (50, 99)}
    return {"messages": histogram.get_total_count(), "rate_per_s": rate, "symbols": len(symbols), **pct,
            "max_us": histogram.get_max_value(), "mean_us": histogram.get_mean_value(), "engine_cpu": cpu,
            # A simulator near a whole core writes late and in bunches: its queue is in the latency.
            "simulator_cpu": None if sim0 is None or sim1 is None else (sim1 - sim0) / elapsed,
            "read_to_strategy": read_to_strategy}


def wakeup_cost(hz: float = 5000.0, seconds: float = 1.0) -> dict[str, float] | None:
    """CPU µs one wake-up of a process costs on this machine: a bare ``epoll`` loop, and a Trio loop,
    each woken ``hz`` times a second by a periodic timerfd (the simulator's pacer), doing nothing else.

    The latency rows pay it on both sides of the socket, for every read. None where there is
    no timerfd.
    """
    if not hasattr(select, "epoll"):
        return None
    fd = _timerfd(1.0 / hz)
    if fd < 0:
        return None
    try:
        with select.epoll() as ep:
            ep.register(fd, select.EPOLLIN)
            n, c0, end = 0, time.process_time(), time.perf_counter() + seconds
            while time.perf_counter() < end:
                ep.poll(1.0)
                os.read(fd, 8)
                n += 1
            bare = (time.process_time() - c0) / n * 1e6
    finally:
        os.close(fd)

    async def paced() -> float:
        pacer = Pacer(1.0 / hz)
        try:
            k, c0, end = 0, time.process_time(), time.perf_counter() + seconds
            while time.perf_counter() < end:
                await pacer.wait()
                k += 1
            return (time.process_time() - c0) / k * 1e6
        finally:
            pacer.close()

    return {"hz": hz, "epoll_us": bare, "trio_us": trio.run(paced)}


def wide_latency(rate: float, n_symbols: int, seconds: float, ticks: float = 5000.0) -> dict[str, Any]:
    """``rate`` trades/s over ``n_symbols``: ``ticks`` market steps a second, each moving rate/ticks symbols
    drawn at random (one trade each)."""
    ticks = min(ticks, rate)
    activity = rate / ticks / n_symbols
    if not 0 < activity <= 1:
        raise SystemExit(f"--wide-rate {rate:g} needs more than {rate / ticks:g} symbols (--wide-symbols)")
    with simulator("--rate", str(ticks), "--stamp", "--precise", "--skew", "0", "--activity", repr(activity),
                   symbols=str(n_symbols)) as urls:
        names = ["BTCUSDT", "ETHUSDT", "SOLUSDT", *(f"S{r:04d}USDT" for r in range(4, n_symbols + 1))][:n_symbols]
        result = trio.run(latency, urls, names, seconds)
    return {"target_rate_per_s": rate, "ticks_per_s": ticks, **result}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per throughput run")
    ap.add_argument("--repeat", type=int, default=3, help="alternating raw/reader/connector/engine runs")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=5000.0, help="messages/s for the one-symbol latency run")
    ap.add_argument("--wide-rate", type=float, default=50000.0, help="messages/s for the many-symbol latency run")
    ap.add_argument("--wide-symbols", type=int, default=200, help="symbols of the many-symbol latency run")
    ap.add_argument("--wide-ticks", type=float, default=5000.0,
                    help="market ticks/s of the many-symbol run (each moves wide-rate/wide-ticks symbols)")
    ap.add_argument("--frames", type=int, default=20000, help="frames for the cost-per-frame rows")
    ap.add_argument("--no-pin", action="store_true", help="leave the simulator and the engine unpinned")
    ap.add_argument("--json", default="bench/results/live.json")
    args = ap.parse_args(argv)
    PIN[0] = not args.no_pin

    # Receiver-bound: the simulator coalesces queued frames into one write, so the
    # client, not the sender, sets the pace; this is the headline ratio.
    fast = throughput([], args.seconds, args.repeat)
    # Sender-bound: one write per frame, the condition of the spec's ~18k frames/s
    # reference figure; both sides then run at the simulator's pace.
    paced = throughput(["--one-frame-per-write"], args.seconds, args.repeat)
    with simulator("--rate", "0") as urls:
        frames = trio.run(capture, urls["binance_ws_url"], args.frames)
    costs = per_frame_costs(frames, max(3, args.repeat))
    costs["trio_websocket_receive_us"] = 1e6 / fast["raw_median_per_s"]
    costs["connector_us"] = 1e6 / fast["connector_median_per_s"]
    costs["engine_us"] = 1e6 / fast["engine_median_per_s"]
    with simulator("--rate", str(args.rate), "--stamp", "--precise") as urls:
        lat = trio.run(latency, urls, ["BTCUSDT"], args.latency_seconds)
    wide = wide_latency(args.wide_rate, args.wide_symbols, args.latency_seconds, args.wide_ticks)
    wakeup = wakeup_cost()

    results: dict[str, Any] = {
        "throughput": {"seconds": args.seconds, "repeat": args.repeat, "receiver_bound": fast,
                       "one_frame_per_write": paced},
        "per_frame": {"frames": len(frames), "frame_bytes": round(statistics.mean(len(f) for f in frames)),
                      **costs},
        "latency": {"target_rate_per_s": args.rate, "seconds": args.latency_seconds, **lat},
        "latency_wide": {"seconds": args.latency_seconds, **wide},
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                    "simulator_pinned": PIN[0] and len(os.sched_getaffinity(0)) >= 2, "wakeup": wakeup},
    }

    where = "simulator on a CPU of its own" if results["machine"]["simulator_pinned"] else "simulator unpinned"
    table = Table(title=f"flox-trio live path (bench/live.py): simulator process ({where}) → Binance connector → "
                        "strategy")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    for label, r in (("receiver-bound", fast), ("one frame per write", paced)):
        table.add_row(f"{label}: raw trio-websocket receive", f"{r['raw_median_per_s']:,.0f} msgs/s",
                      f"(library defaults {r['raw_trio_websocket_defaults_per_s']:,.0f})")
        table.add_row(f"{label}: our frame reader alone (no decode)", f"{r['reader_median_per_s']:,.0f} msgs/s",
                      f"{r['reader_ratio']:.0%} of raw")
        table.add_row(f"{label}: connector only (no runner)", f"{r['connector_median_per_s']:,.0f} msgs/s",
                      f"{r['connector_ratio']:.0%} of raw")
        table.add_row(f"{label}: engine → strategy counting trades", f"{r['engine_median_per_s']:,.0f} msgs/s",
                      "")
        table.add_row(f"{label}: engine / raw, same run", f"{r['ratio']:.1%}", ">= 80 %")
    table.add_row("per frame: trio-websocket receive (wsproto's parser alone)",
                  f"{costs['trio_websocket_receive_us']:.2f} µs ({costs['wsproto_parse_us']:.2f} µs)",
                  f"{results['per_frame']['frame_bytes']}-byte trade frames")
    table.add_row("per frame: our frame reader + our typed decode",
                  f"{costs['our_reader_us']:.2f} + {costs['our_decode_us']:.2f} µs",
                  f"1 / rate: connector {costs['connector_us']:.2f}, engine {costs['engine_us']:.2f} µs")
    for key, r, target in (("one symbol", lat, "p50 <= 150 µs, p99 <= 1 ms"),
                           (f"{wide['symbols']} symbols", wide, "p99 <= 250 µs")):
        table.add_row(f"wire-to-strategy latency at {r['rate_per_s']:,.0f} msgs/s, {key}",
                      f"p50 {r['p50_us']} µs, p99 {r['p99_us']} µs", target)
        sim_cpu = "" if r["simulator_cpu"] is None else f", simulator {r['simulator_cpu']:.0%}"
        table.add_row("  p90 / p99.9 / max; CPU of the engine" + (", simulator" if sim_cpu else ""),
                      f"{r['p90_us']} / {r['p99.9_us']} / {r['max_us']} µs; {r['engine_cpu']:.0%}{sim_cpu}", "")
        ours = r["read_to_strategy"]
        table.add_row("  of it, from our read to the strategy", f"p50 {ours['p50_us']} µs, p99 {ours['p99_us']} µs",
                      "")
    if wakeup is not None:
        table.add_row(f"machine: CPU per wake-up at {wakeup['hz']:,.0f}/s (bare epoll; Trio loop)",
                      f"{wakeup['epoll_us']:.1f} µs; {wakeup['trio_us']:.1f} µs", "")
    report(table, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
