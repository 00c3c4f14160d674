"""Order-entry latency: intent → venue request sent, and venue event → ``on_fill``, against the simulator.

    python bench/execution.py [--orders 200] [--rate 50]

The simulator runs in its own process with a Binance account; a strategy in a
runner places market orders one after another through a ``BinanceExecutor``
(signed requests over the WebSocket API, fills from the account stream). Two
latencies per order, from ``time.perf_counter_ns`` in this process:

- intent → sent: ``ctx.market_buy`` returns ... the ``order.place`` frame is
  written to the socket (the executor's queue, rate limits, filters, signing,
  trio-websocket's framing and send lock). Also shown: until ``send_message``
  returns, which adds the scheduler round trio takes after the write;
- event → on_fill: the ``executionReport`` frame is read from the socket ...
  the strategy's ``on_fill`` runs (decoding, the executor's books, the bus).

The simulator gets a CPU of its own (``--no-pin``: not), as a venue would be
another machine: see ``_common.simulator``.

Then a burst of orders sent as fast as the strategy can, to show that the
venue's ORDERS limit (100 per 10 s) is respected before sending: orders/s
sustained and how many the venue refused with 429 (should be none). Writes
bench/results/execution.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import trio
from hdrh.histogram import HdrHistogram
from rich.table import Table

import flox_trio as flox
from flox_trio.connectors import Binance
from flox_trio.execution import BinanceExecutor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import placement, report, simulator  # bench/ sibling

SYMBOL = "BTCUSDT"


class _TimedSocket:
    """The executor's WebSocket, noting when each account-stream trade frame was read."""

    def __init__(self, ws: Any, read_at: dict[str, int]) -> None:
        self._ws, self._read_at = ws, read_at

    async def get_message(self) -> Any:
        text = await self._ws.get_message()
        now = time.perf_counter_ns()
        if "executionReport" in text:
            ev = orjson.loads(text).get("event", {})
            if ev.get("x") == "TRADE":
                self._read_at[str(ev["t"])] = now
        return text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


class _TimedStream:
    """The order connection's byte stream, noting when the frame of the order being sent is written."""

    def __init__(self, stream: Any, executor: TimedExecutor) -> None:
        self._stream, self._ex = stream, executor

    async def send_all(self, data: Any) -> None:
        oid, self._ex.placing = self._ex.placing, None
        if oid is not None:
            self._ex.written[oid] = time.perf_counter_ns()
        await self._stream.send_all(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class TimedExecutor(BinanceExecutor):
    """A ``BinanceExecutor`` that notes when intents arrive and when their requests leave."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.submitted: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.written: dict[str, int] = {}
        self.placing: str | None = None
        self.read_at: dict[str, int] = {}

    def submit(self, order: Any) -> None:
        self.submitted[order.order_id] = time.perf_counter_ns()
        super().submit(order)

    async def _send(self, method: str, params: dict[str, Any], **kwargs: Any) -> Any:
        oid = params["newClientOrderId"][len(self.prefix):] if method == "order.place" else None
        ws = self._ws
        # trio-websocket writes a frame with ``self._stream.send_all``: the one place to see the write.
        if ws is not None and not isinstance(ws._stream, _TimedStream):
            ws._stream = _TimedStream(ws._stream, self)  # type: ignore[assignment]
        self.placing = oid
        pending = await super()._send(method, params, **kwargs)
        self.placing = None
        if oid is not None:
            self.sent[oid] = time.perf_counter_ns()
        return pending

    async def _read(self, ws: Any) -> None:
        await super()._read(_TimedSocket(ws, self.read_at))  # type: ignore[arg-type]


class Driver(flox.Strategy):
    """One market order at a time (``burst``: as many as it may), noting when each fill reaches it."""

    def __init__(self, symbols: Any, orders: int, burst: bool = False, spacing: float = 0.0) -> None:
        super().__init__(symbols)
        self.left, self.burst, self.spacing = orders, burst, spacing
        self.next_at = 0.0
        self.filled: dict[str, int] = {}
        self.busy = False
        self.done = trio.Event()

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        while self.left and (self.burst or not self.busy):
            if self.spacing:
                now = time.perf_counter()
                if now < self.next_at:
                    return
                self.next_at = now + self.spacing
            self.busy = True
            self.left -= 1
            ctx.market_buy("0.001")

    def on_fill(self, ctx: flox.Context, fill: flox.Fill) -> None:
        self.filled[fill.trade_id] = time.perf_counter_ns()

    def on_order_update(self, ctx: flox.Context, update: flox.OrderUpdate) -> None:
        if update.status in ("filled", "rejected", "canceled"):
            self.busy = False
            if not self.left and not ctx.open_orders:
                self.done.set()


def percentiles(values_ns: list[int]) -> dict[str, float]:
    h = HdrHistogram(1, 60_000_000, 3)
    for v in values_ns:
        h.record_value(max(1, v // 1000))
    return {"n": len(values_ns), **{f"p{q}": float(h.get_value_at_percentile(q)) for q in (50, 90, 99)},
            "max": float(h.get_max_value())}


async def run(urls: dict[str, str], key: str, secret: str, orders: int, burst: int,
              spacing: float = 0.11) -> dict[str, Any]:
    feed = Binance([SYMBOL], ws_url=urls["binance_ws_url"], rest_url=urls["binance_rest_url"], channels=("trade",))
    ex = TimedExecutor(api_key=key, secret=secret, ws_api_url=urls["binance_ws_api_url"],
                       rest_url=urls["binance_rest_url"], symbols=(SYMBOL,))
    async with flox.open_runner(feed, ex, drain=False) as runner:
        # One at a time, spaced so that the venue's 100 orders per 10 s never holds one back.
        one = Driver([SYMBOL], orders, spacing=spacing)
        slot = runner.add_strategy(one)
        with trio.fail_after(300):
            await one.done.wait()
        await runner.remove_strategy(slot)
        many = Driver([SYMBOL], burst, burst=True)
        runner.add_strategy(many)
        t0 = time.perf_counter()
        with trio.fail_after(300):
            await many.done.wait()
        elapsed = time.perf_counter() - t0
        status = ex.status()
    mine = [o for o in ex.sent if o in ex.submitted and o in ex.written and o.startswith(f"{slot}-")]
    intent = [ex.written[o] - ex.submitted[o] for o in mine]
    returned = [ex.sent[o] - ex.submitted[o] for o in mine]
    to_fill = [one.filled[t] - ex.read_at[t] for t in one.filled if t in ex.read_at]
    return {"intent_to_sent_us": percentiles(intent), "intent_to_send_returned_us": percentiles(returned),
            "event_to_on_fill_us": percentiles(to_fill),
            "burst_orders": burst, "burst_seconds": elapsed, "burst_orders_per_s": burst / elapsed,
            "rate_limited": sum("-1015" in o.reason or "429" in o.reason for o in ex.orders()),
            "rejected": sum(o.status == "rejected" for o in ex.orders()), "fills": status.fills}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=300,
                    help="orders placed one after another (latency; under the 100 per 10 s limit)")
    ap.add_argument("--spacing", type=float, default=0.11,
                    help="seconds from one order to the next (0: each as soon as the last one filled; then at most "
                         "90 orders, or the venue's limit holds them back)")
    ap.add_argument("--burst", type=int, default=150, help="orders placed as fast as allowed (rate limits)")
    ap.add_argument("--rate", type=float, default=50, help="simulator ticks per second")
    ap.add_argument("--no-pin", action="store_true", help="leave the simulator and the engine unpinned")
    ap.add_argument("--json", default="bench/results/execution.json")
    args = ap.parse_args()
    key, secret = secrets.token_hex(32), secrets.token_hex(32)
    os.environ["FLOX_BENCH_ACCOUNT"] = f"{key}:{secret}"  # the simulator process reads it; never on argv
    with simulator("--symbols", SYMBOL, "--seed", "5", "--rate", str(args.rate), "--account-env",
                   "FLOX_BENCH_ACCOUNT", pin=not args.no_pin) as urls:
        result = trio.run(run, urls, key, secret, args.orders, args.burst, args.spacing)
        result["spacing_s"] = args.spacing
        result["placement"] = placement(urls)
    t = Table(title=f"order entry against the simulator (another process, {result['placement']}; "
                    f"orders {args.spacing:g} s apart)")
    for col in ("what", "n", "p50 µs", "p90 µs", "p99 µs", "max µs"):
        t.add_column(col, justify="right" if col != "what" else "left")
    for name, key_ in (("intent → order.place written", "intent_to_sent_us"),
                       ("intent → send_message returned", "intent_to_send_returned_us"),
                       ("executionReport read → on_fill", "event_to_on_fill_us")):
        p = result[key_]
        t.add_row(name, str(p["n"]), f"{p['p50']:.0f}", f"{p['p90']:.0f}", f"{p['p99']:.0f}", f"{p['max']:.0f}")
    t.add_row(f"burst: {result['burst_orders']} orders", "", "", "", "",
              f"{result['burst_orders_per_s']:.1f}/s, {result['rate_limited']} refused by 429")
    t.add_row("orders rejected", str(result["rejected"]), "", "", "", "")
    report(t, result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
