"""Memory soak: the engine on the simulator for a long while, RSS sampled as it goes.

    python bench/soak.py [--seconds 3600] [--rate 200]

Two slots (a Python EMA and a JavaScript EMA, swapped every minute) trade on the
simulator, which runs in its own process so that RSS is the engine's alone
(the simulator keeps a record of everything it sent). RSS is sampled every 10 s; the
table shows the first and last samples and the slope of a least-squares line
over the second half (flat is what we want). Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import resource
import sys
import tempfile
import tracemalloc
from pathlib import Path

import trio
from rich.table import Table

import flox_trio as flox
from flox_trio._loader import strategy_class
from flox_trio.app import STRATEGIES
from flox_trio.connectors import Binance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, simulator  # bench/ sibling


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc_mallinfo() -> object | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    fn.restype = _Mallinfo2
    return fn


_MALLINFO = _libc_mallinfo()


def malloc_in_use_mb() -> float:
    """Bytes malloc has handed out and not had back (every arena, mmapped chunks included); -1 off glibc.

    Set against RSS it tells a leak (this grows too) from fragmentation (only RSS grows)."""
    if _MALLINFO is None:
        return -1.0
    info = _MALLINFO()  # type: ignore[operator]
    return (info.uordblks + info.hblkhd) / 2**20


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of the second half of ``points``, per hour."""
    half = points[len(points) // 2:]
    n = len(half)
    mx = sum(t for t, _ in half) / n
    my = sum(v for _, v in half) / n
    var = sum((t - mx) ** 2 for t, _ in half) or 1.0
    return sum((t - mx) * (v - my) for t, v in half) / var * 3600


async def soak(seconds: float, urls: dict[str, str], state: Path, trace: bool = False) -> dict[str, object]:
    ema = strategy_class(STRATEGIES / "ema.py", "EmaStrategy")
    samples: list[tuple[float, float]] = []
    # What RSS is made of, to say where growth comes from: malloc's live bytes, Python's
    # live objects (thousands) and the JS context's own allocations.
    parts: dict[str, list[tuple[float, float]]] = {"malloc_in_use_mb": [], "py_blocks_k": [], "js_heap_mb": []}
    feed = Binance(["BTCUSDT"], ws_url=urls["binance_ws_url"], rest_url=urls["binance_rest_url"])
    # A short order history so that the bounded part is reached early in the run:
    # what still grows after that is a leak.
    executor = flox.PaperExecutor(latency=0.02, history=2000)
    async with flox.open_runner(feed, executor, drain=False) as runner:
        script = flox.js.load(STRATEGIES / "ema.js", state_dir=state / "js")
        py = runner.add_strategy(ema(["BTCUSDT"], qty=0.01, snapshot=state / "ema.json"))
        js = runner.add_strategy(script.call("makeStrategy", "v1", 12, 26, 0.01))
        start = trio.current_time()
        next_swap = start + 60
        halfway: tracemalloc.Snapshot | None = None
        while (now := trio.current_time()) - start < seconds:
            samples.append((now - start, rss_mb()))
            parts["malloc_in_use_mb"].append((now - start, malloc_in_use_mb()))
            parts["py_blocks_k"].append((now - start, sys.getallocatedblocks() / 1000))
            parts["js_heap_mb"].append((now - start, (await trio.to_thread.run_sync(script.memory))
                                        ["malloc_size"] / 2**20))
            if trace and halfway is None and now - start >= seconds / 2:
                halfway = tracemalloc.take_snapshot()
            if now >= next_swap:
                await runner.replace_strategy(py, ema(["BTCUSDT"], qty=0.01, snapshot=state / "ema.json"))
                await runner.replace_strategy(js, script.call("makeStrategy", "v2", 8, 21, 0.01))
                next_swap += 60
            await trio.sleep(10)
        samples.append((trio.current_time() - start, rss_mb()))
        status = runner.status()
        if halfway is not None:
            # What grew over the second half, by where it was allocated.
            for stat in tracemalloc.take_snapshot().compare_to(halfway, "lineno")[:15]:
                print(stat, file=sys.stderr)
    result: dict[str, object] = {
        "seconds": seconds, "events": status.published, "swaps": sum(s.swaps for s in status.slots),
        "rss_first_mb": samples[0][1], "rss_last_mb": samples[-1][1],
        "rss_max_mb": max(r for _, r in samples), "slope_mb_per_hour_second_half": slope_per_hour(samples)}
    for name, points in parts.items():
        result[f"{name}_first"] = points[0][1]
        result[f"{name}_last"] = points[-1][1]
        result[f"{name}_slope_per_hour"] = slope_per_hour(points)
    result["samples"] = samples
    result["parts"] = parts
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--rate", type=float, default=200, help="simulator ticks per second")
    ap.add_argument("--json", default="bench/results/soak.json")
    ap.add_argument("--trace", action="store_true",
                    help="trace allocations (slow) and print what grew over the second half")
    args = ap.parse_args()
    if args.trace:
        tracemalloc.start(5)
    # Memory, not latency: the simulator need not hold a CPU of its own.
    with tempfile.TemporaryDirectory() as tmp, simulator("--symbols", "BTCUSDT", "--seed", "3",
                                                         "--rate", str(args.rate), pin=False) as urls:
        result = trio.run(soak, args.seconds, urls, Path(tmp), args.trace)
    t = Table(title=f"soak: {args.seconds:.0f} s on the simulator")
    t.add_column("what")
    t.add_column("value", justify="right")
    keys = ["events", "swaps", "rss_first_mb", "rss_last_mb", "rss_max_mb", "slope_mb_per_hour_second_half"]
    keys += [f"{name}_{end}" for name in ("malloc_in_use_mb", "py_blocks_k", "js_heap_mb")
             for end in ("first", "last", "slope_per_hour")]
    for key in keys:
        v = result[key]
        t.add_row(key, f"{v:.1f}" if isinstance(v, float) else str(v))
    report(t, result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
