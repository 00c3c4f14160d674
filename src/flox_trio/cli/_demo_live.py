"""The demo on the embedded simulator: a real WebSocket session, a live swap, what stayed put."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import trio

from .._runner import open_runner
from ..connectors import Binance
from ..execution import PaperExecutor
from ..sim import open_simulator
from ._demo import ROOT, SYMBOL, _counts, _pnl, load_py_strategy


def _session(feed: Binance) -> dict[str, Any]:
    st = feed.status()
    return {"connection_id": st["connection_id"], "connect_count": st["connect_count"],
            "subscriptions": st["subscribed"]}


async def live_demo(seconds: float, seed: int, state: Path) -> dict[str, Any]:
    ema = load_py_strategy(ROOT / "py_strategies" / "ema.py", "EmaStrategy")
    js = _js_module()
    async with open_simulator(seed=seed, rate=50, symbols=[SYMBOL]) as sim:
        feed = Binance([SYMBOL], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       channels=("trade", "bookTicker", "depth"))
        # A slow venue (1 s to acknowledge) so that orders are in flight when the swap happens.
        async with open_runner(feed, PaperExecutor(latency=1.0), drain=False, tape=state / "demo.tape") as runner:
            py_old = ema([SYMBOL], fast=5, slow=12, qty=0.01, snapshot=state / "ema.json")
            py_slot = runner.add_strategy(py_old)
            slots: list[tuple[int, str, str, Any, Any]] = []
            js_slot = None
            if js is not None:
                script = js.load(str(ROOT / "js_strategies" / "ema.js"), state_dir=str(state / "js"), runner=runner)
                js_old = script.call("makeStrategy", "v1", 5, 12, 0.01)
                js_slot = runner.add_strategy(js_old)
            with trio.fail_after(10):
                while feed.connection_id is None or not runner.slots[py_slot].dispatched:
                    await trio.sleep(0.05)
            await trio.sleep(seconds / 2)
            before = _counts(runner)
            session_before = _session(feed)
            open_before = [o.order_id for s in runner.slots for o in runner.executor.open_orders(s.index)]
            py_new = ema([SYMBOL], fast=8, slow=21, qty=0.01, snapshot=state / "ema.json")
            reports = [await runner.replace_strategy(py_slot, py_new)]
            slots.append((py_slot, "python", "EMA 5/12 → EMA 8/21", py_old, py_new))
            if js is not None and js_slot is not None:
                js_new = script.call("makeStrategy", "v2", 8, 21, 0.01)
                reports.append(await runner.replace_strategy(js_slot, js_new))
                slots.append((js_slot, "javascript", "ema.js v1 → v2", js_old, js_new))
            session_after = _session(feed)
            await trio.sleep(seconds / 2)
            after = _counts(runner)
            fate = {o.order_id: o.status for o in runner.executor.orders() if o.order_id in open_before}
    return {
        "venue": f"embedded simulator, Binance wire format on {sim.binance_ws_url}",
        "connection": {"before": session_before, "after": session_after, "final": _session(feed)},
        "slots": [(i, lang, what, before[i], after[i] - before[i], _seen(old), _seen(new))
                  for i, lang, what, old, new in slots],
        "report": reports,
        "orders_across": (open_before, fate),
        "runner": runner,
        "pnl": {i: _pnl(runner, i) for i, *_ in slots},
    }


def _seen(strategy: Any) -> Any:
    """Trades a strategy saw: a Python attribute, or a property of the JS object."""
    if hasattr(strategy, "trades_seen"):
        return strategy.trades_seen
    return strategy.get("tradesSeen") if hasattr(strategy, "get") else "-"


def _js_module() -> Any:
    if importlib.util.find_spec("flox_trio.js") is None:
        return None
    from .. import js

    if not hasattr(js, "load") or not (ROOT / "js_strategies" / "ema.js").exists():
        return None
    return js
