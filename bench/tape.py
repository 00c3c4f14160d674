"""Tape write and read throughput, and bytes per event.

    python bench/tape.py [--events N] [--batch N] [--repeat N] [--json PATH]

Rows, for trades, without and with zstd:
- write: ``TapeWriter.write_events`` in publish-sized batches, through
  ``close()`` (every byte on disk, fsync included);
- write, batch=1: one event per call, as a connector that publishes every
  message on its own would;
- read, scan: frames read, checksums verified, decompressed and decoded into
  records, events left encoded (what ``swaps()`` and the frame walk cost);
- read, peek: as ``tape_info`` does, decoding only each event's symbol and times;
- read, materialise: ``iter_events()``, every event a ``Trade`` (a msgspec struct);
- replay: ``TapeFeed`` publishing into a hub that only counts.

The garbage collector stays on: the engine runs with it on. Each row is the
best of ``--repeat`` runs on a fresh tape directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio
from rich.console import Console
from rich.table import Table

import flox_trio as flox
from flox_trio.tape import TapeFeed, TapeReader, TapeWriter, tape_info
from flox_trio.tape._format import FRAME_DECODER, WireEvents

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CountingHub  # bench/ sibling

BASE_NS = 1_700_000_000_000_000_000


def make_trades(n: int) -> list[flox.Trade]:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    return [
        flox.Trade(symbols[i % 3], 43_000.0 + (i % 100) * 0.01, 0.001 * (1 + i % 7),
                   "buy" if i & 1 else "sell", str(1_000_000_000 + i), BASE_NS + i * 1000,
                   BASE_NS + i * 1000 + 50, "binance")
        for i in range(n)
    ]


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    """(best seconds, result of the last run)."""
    best = float("inf")
    result = 0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def write_tape(path: Path, batches: Sequence[list[flox.Trade]], compression: str | None) -> int:
    if path.exists():
        shutil.rmtree(path)
    seq = 0
    with TapeWriter(path, compression=compression, meta={"bench": "tape"}) as w:
        write = w.write_events
        for batch in batches:
            write(seq, batch)
            seq += len(batch)
    return sum(p.stat().st_size for p in path.iterdir())


def scan(path: Path) -> int:
    """Frames verified, decompressed and split into records; events stay encoded.

    Events are counted from each run's msgpack array header, without decoding them.
    """
    reader = TapeReader(path)
    n = 0
    decode = FRAME_DECODER.decode
    for _seg, _off, payload, _flagged in reader._frames():
        for rec in decode(payload):
            if isinstance(rec, WireEvents):
                for _code, raw in rec.runs:
                    n += _array_len(raw)
    return n


def _array_len(raw: Any) -> int:
    head = bytes(memoryview(raw)[:5])
    tag = head[0]
    if tag & 0xF0 == 0x90:
        return tag & 0x0F
    if tag == 0xDC:
        return int.from_bytes(head[1:3], "big")
    if tag == 0xDD:
        return int.from_bytes(head[1:5], "big")
    raise ValueError(f"not a msgpack array: {tag:#x}")


def peek(path: Path) -> int:
    return tape_info(path).events


def materialise(path: Path) -> int:
    n = 0
    for _ in TapeReader(path).iter_events():
        n += 1
    return n


def replay(path: Path) -> int:
    hub = CountingHub()
    trio.run(TapeFeed(path).run, hub)
    return hub.n


def bench_writes(root: Path, n: int, batch: int, single: int, repeat: int) -> list[dict[str, Any]]:
    events = make_trades(n)
    batches = [events[i : i + batch] for i in range(0, n, batch)]
    singles = [[e] for e in events[:single]]
    rows: list[dict[str, Any]] = []
    for compression in (None, "zstd"):
        label = compression or "none"
        for name, data, path in (("write", batches, root / f"trades-{label}"),
                                 ("write, batch=1", singles, root / f"single-{label}")):
            m = sum(map(len, data))
            dt, size = best_of(repeat, lambda p=path, d=data, c=compression: write_tape(p, d, c))
            rows.append({"row": name, "compression": label, "batch": len(data[0]), "events": m,
                         "seconds": dt, "events_per_s": m / dt, "bytes": size, "bytes_per_event": size / m})
        shutil.rmtree(root / f"single-{label}")
    return rows


def bench_reads(root: Path, n: int, batch: int, repeat: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for compression in (None, "zstd"):
        label = compression or "none"
        path = root / f"trades-{label}"
        size = sum(p.stat().st_size for p in path.iterdir())
        for name, fn in (("read, scan", scan), ("read, peek (tape_info)", peek),
                         ("read, materialise (Trade)", materialise), ("replay (TapeFeed)", replay)):
            dt, got = best_of(repeat, lambda f=fn, p=path: f(p))
            if got != n:
                raise SystemExit(f"{name}: read {got} events, wrote {n}")
            rows.append({"row": name, "compression": label, "batch": batch, "events": n,
                         "seconds": dt, "events_per_s": n / dt, "bytes": size, "bytes_per_event": size / n})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024, help="events per write_events call")
    ap.add_argument("--single", type=int, default=200_000, help="events for the batch=1 write row")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write tapes (default: a temp dir)")
    ap.add_argument("--json", default=os.path.join("bench", "results", "tape.json"))
    args = ap.parse_args(argv)

    n = args.events
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="flox-tape-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rows = bench_writes(root, n, args.batch, args.single, args.repeat)
        # Reading runs without the source events alive, as a replay process would.
        gc.collect()
        rows += bench_reads(root, n, args.batch, args.repeat)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)

    table = Table(title=f"tape: {n:,} trades, batches of {args.batch} (best of {args.repeat})")
    for col in ("row", "compression", "events", "M events/s", "bytes/event"):
        table.add_column(col, justify="left" if col in ("row", "compression") else "right")
    for r in rows:
        table.add_row(r["row"], r["compression"], f"{r['events']:,}", f"{r['events_per_s'] / 1e6:.2f}",
                      f"{r['bytes_per_event']:.1f}")
    Console().print(table)

    out = {
        "bench": "tape",
        "python": sys.version.split()[0],
        "msgspec": msgspec.__version__,
        "cpus": os.cpu_count(),
        "events": n,
        "batch": args.batch,
        "repeat": args.repeat,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
