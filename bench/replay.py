"""Replay throughput: a recorded zstd tape run again through the replay driver, into Python strategies.

    python bench/replay.py [--events N] [--batch N] [--small-batch N] [--repeat N] [--json PATH]

The tape holds N trades of one symbol (``random_walk``), zstd-compressed,
recorded in batches of ``--batch`` events, with the strategy's slot on it as
a live run records it (its source, spec and parameters). Each replay row is
``flox.replay.replay_tape(tape)``, what ``flox-trio replay --mode simulate``
runs: the plan read from the tape, the strategy rebuilt from its recorded
source, the market batches published as recorded, in lockstep, on the
events' own clock, with the paper executor answering. Rows:

- decode: ``TapeReader.iter_market_batches()``, every event a
  ``Trade``: the reader alone, the ceiling of any replay (run with the
  garbage collector's thresholds a replay runs with);
- replay into a Python strategy counting trades (target >= 3 M events/s);
- the same from a tape recorded in batches of ``--small-batch`` (a
  connector's batches are small; the per-batch cost shows here);
- replay into ``bench/_ema_strategy.py:FastEma``, trading through the paper
  executor (target >= 2 M events/s);
- NautilusTrader's ``BacktestEngine`` on the same trades into a counting
  strategy, only when ``nautilus_trader`` is importable (it is never a
  dependency; the row is left out otherwise);
- the floors of this machine, below any replay: the tape's frames read,
  checked and decompressed, nothing decoded (``TapeReader``'s own framing
  and zstd); msgspec alone decoding the same trades from in-memory msgpack
  arrays of ``--batch`` into ``Trade`` (no tape, no framing, no zstd); the
  counting strategy's ``on_trade`` called once per trade in a bare loop (no
  engine), and the EMA strategy's (a stand-in ``ctx`` that holds no order
  and no position: the strategy's own arithmetic, no executor); and the
  ceilings they leave, one over the sum of the per-trade costs of the
  frames, msgspec and each strategy's call. A replay of the zstd tape pays
  all three for every event, so a target above its ceiling is out of reach
  on this machine, whatever the engine does.

Each row is the best of ``--repeat`` runs (the median is in the JSON); the
garbage collector is on, as in any run. The machine's other load moves the
numbers: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from rich.table import Table

import flox_trio as flox
from flox_trio._core._convert import to_jsonable
from flox_trio.execution import PaperSettings
from flox_trio.replay import replay_tape
from flox_trio.tape import TapeReader, TapeWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # bench/ sibling
from _count_strategy import CountTrades
from _ema_strategy import FastEma

HERE = Path(__file__).resolve().parent
SYMBOL = "BTCUSDT"
#: A strategy as a tape records it: its file, its class, its parameters (the symbols aside).
StrategySpec = tuple[Path, str, dict[str, Any]]
COUNT_SPEC: StrategySpec = (HERE / "_count_strategy.py", "CountTrades", {})
EMA_SPEC: StrategySpec = (HERE / "_ema_strategy.py", "FastEma", {"fast": 12, "slow": 26, "qty": 0.01})
FRAMES_FLOOR = "floor: tape frames read, checked, decompressed"
DECODE_FLOOR = "floor: msgspec alone, msgpack → Trade"
COUNT_FLOOR = "floor: counting on_trade in a bare loop"
EMA_FLOOR = "floor: EMA on_trade in a bare loop"


def write_tape(path: Path, trades: list[flox.Trade], batch: int, strategy: StrategySpec) -> int:
    """A tape as ``open_runner(..., tape=path)`` leaves it: the slot's strategy first, then the batches."""
    file, name, params = strategy
    source = file.read_text(encoding="utf-8")
    meta = {"feed": "ListFeed", "executor": to_jsonable(PaperSettings()), "bar_intervals": [60.0]}
    with TapeWriter(path, compression="zstd", meta=meta) as w:
        w.write_slot(seq=0, slot=0, action="add", hash=hashlib.sha256(source.encode()).hexdigest(),
                     language="python", params={"symbols": [SYMBOL], **params}, source=source,
                     spec=f"{file}:{name}")
        for i in range(0, len(trades), batch):
            w.write_events(i, trades[i:i + batch])
    return sum(p.stat().st_size for p in path.iterdir())


def timed(repeat: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Best and median seconds of ``repeat`` runs, and what the last run returned."""
    times = []
    out: dict[str, Any] = {}
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": min(times), "median_seconds": statistics.median(times), **out}


@contextlib.contextmanager
def replay_gc() -> Iterator[None]:
    """The collector's first threshold where replay_tape puts it, so that a decode row is a ceiling."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def decode(path: Path, n: int) -> dict[str, Any]:
    with replay_gc():
        got = sum(len(rec.events) for rec in TapeReader(path).iter_market_batches())
    if got != n:
        raise SystemExit(f"decode: read {got} events, the tape holds {n}")
    return {}


def replay(path: Path, n: int) -> dict[str, Any]:
    result = replay_tape(path)
    if result.events != n:
        raise SystemExit(f"replay of {path.name}: published {result.events} events, the tape holds {n}")
    slot = result.status.slots[0]
    if slot.errors:
        raise SystemExit(f"replay of {path.name}: the strategy raised: {slot.last_error}")
    ex = result.status.executor
    return {"dispatched": slot.dispatched, "orders": ex.orders, "fills": ex.fills}


def decode_floor(chunks: list[bytes], n: int) -> dict[str, Any]:
    """msgspec alone: the trades' msgpack arrays into ``Trade``, as the tape reader decodes each frame's."""
    dec = msgspec.msgpack.Decoder(list[flox.Trade]).decode
    with replay_gc():
        got = sum(len(dec(c)) for c in chunks)
    if got != n:
        raise SystemExit(f"decode floor: read {got} trades, expected {n}")
    return {}


def frames_floor(path: Path, n: int) -> dict[str, Any]:
    """The tape's frames read, checked and decompressed, none decoded: what the reader costs before msgspec."""
    with replay_gc():
        size = sum(len(payload) for _, _, payload, _ in TapeReader(path)._frames())
    return {"raw_bytes_per_event": size / n}


class _Quiet:
    """A ``ctx`` with no order and no position, for a strategy called outside the engine."""

    open_orders: tuple[()] = ()
    position = 0.0

    def market_buy(self, qty: float) -> None:
        pass

    def market_sell(self, qty: float) -> None:
        pass


def call_floor(strategy: Any, batch: list[flox.Trade], n: int) -> dict[str, Any]:
    """The strategy's ``on_trade`` once per trade, in a bare loop: the least a dispatch costs."""
    on_trade, ctx = strategy.on_trade, _Quiet()
    for _ in range(n // len(batch)):
        for t in batch:
            on_trade(ctx, t)
    calls = n // len(batch) * len(batch)
    if strategy.n != calls:
        raise SystemExit(f"call floor: {type(strategy).__name__} saw {strategy.n} of {calls} trades")
    return {"calls": calls}


def nautilus(trades: list[flox.Trade], repeat: int) -> dict[str, Any] | None:
    """NautilusTrader's BacktestEngine counting the same trades; None when it is not importable."""
    if importlib.util.find_spec("nautilus_trader") is None:
        return None
    try:
        return _nautilus(trades, repeat)
    except Exception as exc:  # an API it changed: say so in the row, keep the others
        return {"error": f"{type(exc).__name__}: {exc}"}


def _nautilus(trades: list[flox.Trade], repeat: int) -> dict[str, Any]:
    from nautilus_trader.backtest.config import BacktestEngineConfig
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.model.currencies import ETH, USDT
    from nautilus_trader.model.data import TradeTick
    from nautilus_trader.model.enums import AccountType, AggressorSide, BookType, OmsType
    from nautilus_trader.model.identifiers import InstrumentId, TradeId, TraderId, Venue
    from nautilus_trader.model.objects import Money
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.trading.strategy import Strategy

    class CountConfig(StrategyConfig, frozen=True):
        instrument_id: InstrumentId

    class Count(Strategy):
        def __init__(self, config: CountConfig) -> None:
            super().__init__(config)
            self.n = 0

        def on_start(self) -> None:
            self.subscribe_trade_ticks(self.config.instrument_id)

        def on_trade_tick(self, tick: TradeTick) -> None:
            self.n += 1

    instrument = TestInstrumentProvider.ethusdt_binance()
    # The same prices, sizes, sides and times; built once, outside the timing, as the tape is.
    ticks = [
        TradeTick(instrument.id, instrument.make_price(t.price), instrument.make_qty(t.qty),
                  AggressorSide.BUYER if t.side == "buy" else AggressorSide.SELLER, TradeId(t.trade_id or str(i)),
                  t.exchange_ts_ns, t.recv_ts_ns or t.exchange_ts_ns)
        for i, t in enumerate(trades)
    ]

    def run() -> dict[str, Any]:
        engine = BacktestEngine(BacktestEngineConfig(trader_id=TraderId("BENCH-001"),
                                                     logging=LoggingConfig(log_level="ERROR")))
        try:
            engine.add_venue(venue=Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.CASH,
                             base_currency=None, book_type=BookType.L1_MBP,
                             starting_balances=[Money(1_000_000.0, USDT), Money(10.0, ETH)])
            engine.add_instrument(instrument)
            engine.add_data(ticks)
            strategy = Count(CountConfig(instrument_id=instrument.id))
            engine.add_strategy(strategy)
            engine.run()
            if strategy.n != len(ticks):
                raise RuntimeError(f"the strategy counted {strategy.n} of {len(ticks)} trades")
            return {"dispatched": strategy.n}
        finally:
            engine.dispose()

    import nautilus_trader

    return {"version": nautilus_trader.__version__, **timed(repeat, run)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024, help="events per recorded batch")
    ap.add_argument("--small-batch", type=int, default=32, help="events per recorded batch of the small-batch row")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=os.path.join("bench", "results", "replay.json"))
    args = ap.parse_args(argv)

    n = args.events
    trades = flox.feeds.random_walk(n)
    root = Path(tempfile.mkdtemp(prefix="flox-replay-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        count = root / "count.tape"
        size = write_tape(count, trades, args.batch, COUNT_SPEC)
        small = root / "count-small.tape"
        write_tape(small, trades, args.small_batch, COUNT_SPEC)
        ema = root / "ema.tape"
        write_tape(ema, trades, args.batch, EMA_SPEC)
        nt = nautilus(trades, args.repeat)
        chunks = [msgspec.msgpack.encode(trades[i:i + args.batch]) for i in range(0, n, args.batch)]
        one_batch = msgspec.msgpack.Decoder(list[flox.Trade]).decode(chunks[0])
        # The replays run without the source trades alive, as a replay process would.
        del trades
        gc.collect()
        plan: list[tuple[str, int, float | None, Callable[[], dict[str, Any]]]] = [
            ("decode: TapeReader → Trade", args.batch, None, lambda: decode(count, n)),
            ("replay → counting strategy", args.batch, 3e6, lambda: replay(count, n)),
            ("replay → counting strategy", args.small_batch, None, lambda: replay(small, n)),
            ("replay → EMA, paper executor", args.batch, 2e6, lambda: replay(ema, n)),
            (FRAMES_FLOOR, args.batch, None, lambda: frames_floor(count, n)),
            (DECODE_FLOOR, args.batch, None, lambda: decode_floor(chunks, n)),
            (COUNT_FLOOR, len(one_batch), None, lambda: call_floor(CountTrades([SYMBOL]), one_batch, n)),
            (EMA_FLOOR, len(one_batch), None, lambda: call_floor(FastEma([SYMBOL], **EMA_SPEC[2]), one_batch, n)),
        ]
        for name, batch, target, fn in plan:
            rows.append({"row": name, "batch": batch, "events": n, "target_per_s": target,
                         **timed(args.repeat, fn)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if nt is not None:
        rows.append({"row": f"NautilusTrader {nt.get('version', '')} BacktestEngine → counting strategy".strip(),
                     "batch": None, "events": n, "target_per_s": None, **nt})
    for r in rows:
        if "seconds" in r:
            events = r.get("calls", n)
            r["events_per_s"] = events / r["seconds"]
            r["median_events_per_s"] = events / r["median_seconds"]
    by_name = {r["row"]: r for r in rows}
    for call_row, ceiling_row in ((COUNT_FLOOR, "ceiling: counting"), (EMA_FLOOR, "ceiling: EMA")):
        floors = [by_name.get(FRAMES_FLOOR), by_name.get(DECODE_FLOOR), by_name.get(call_row)]
        if all(f is not None and "events_per_s" in f for f in floors):
            # What is left once every event is read off the tape, decoded and handed to one
            # Python call, nothing else: the most any replay of this tape reaches here.
            best = 1 / sum(1 / f["events_per_s"] for f in floors)  # type: ignore[index]
            median = 1 / sum(1 / f["median_events_per_s"] for f in floors)  # type: ignore[index]
            rows.append({"row": f"{ceiling_row}: 1 / (frames + msgspec + call floors)", "batch": args.batch,
                         "events": n, "target_per_s": None, "events_per_s": best, "median_events_per_s": median})

    table = Table(title=f"replay: {n:,} trades on a zstd tape ({size / n:.1f} bytes/event), best of {args.repeat}")
    for col in ("row", "batch", "M events/s", "median", "target", "fills"):
        table.add_column(col, justify="left" if col == "row" else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["row"], "", f"failed: {r['error']}", "", "", "")
            continue
        target = r["target_per_s"]
        table.add_row(r["row"], "" if r["batch"] is None else str(r["batch"]), f"{r['events_per_s'] / 1e6:.2f}",
                      f"{r['median_events_per_s'] / 1e6:.2f}", "" if target is None else f">= {target / 1e6:.0f} M/s",
                      str(r["fills"]) if "fills" in r else "")
    results = {
        "bench": "replay",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "events": n,
        "batch": args.batch,
        "small_batch": args.small_batch,
        "repeat": args.repeat,
        "bytes_per_event": size / n,
        "nautilus_trader": "not importable" if nt is None else nt.get("version", "failed"),
        "rows": rows,
    }
    report(table, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
