"""The outputs of a run — orders, fills, positions, PnL — in a canonical, comparable form.

Bundles store them as the expected result and replays compare against them,
so the form is deterministic: sorted keys, Decimals as strings, no wall-clock
timestamps (they differ between runs by nature).
"""

from __future__ import annotations

from typing import Any

import orjson

from .._core._ports import Executor


def run_outputs(executor: Executor) -> dict[str, Any]:
    orders = sorted(executor.orders(), key=lambda o: _order_key(o.order_id))
    fills = executor.fill_history()
    positions = executor.positions()
    return {
        "orders": [
            {"order_id": o.order_id, "slot": o.slot, "symbol": o.symbol, "side": o.side,
             "type": o.order_type, "qty": str(o.qty), "price": None if o.price is None else str(o.price),
             "status": o.status, "filled_qty": str(o.filled_qty),
             "avg_fill_price": None if o.avg_fill_price is None else str(o.avg_fill_price),
             "reason": o.reason}
            for o in orders
        ],
        "fills": [
            {"order_id": f.order_id, "slot": f.slot, "symbol": f.symbol, "side": f.side, "price": str(f.price),
             "qty": str(f.qty), "fee": str(f.fee), "liquidity": f.liquidity, "trade_id": f.trade_id}
            for f in sorted(fills, key=lambda f: _order_key(f.order_id))
        ],
        "positions": [
            {"slot": slot, "symbol": sym, "qty": str(p.qty), "realized_pnl": str(p.realized_pnl),
             "fees": str(p.fees), "cost_basis": str(p.cost_basis),
             "unrealized_pnl": str(p.unrealized_pnl(executor.mark_price(slot, sym)))}
            for (slot, sym), p in sorted(positions.items())
        ],
    }


def outputs_json(outputs: dict[str, Any]) -> bytes:
    return orjson.dumps(outputs, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def first_divergence(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """Describe the first difference, orders first (the most telling), or None if identical."""
    for section in ("orders", "fills", "positions"):
        exp, act = expected.get(section, []), actual.get(section, [])
        for i, (e, a) in enumerate(zip(exp, act, strict=False)):
            if e != a:
                keys = sorted(k for k in set(e) | set(a) if e.get(k) != a.get(k))
                what = e.get("order_id") or e.get("symbol")
                return (f"first differing {section[:-1]} is #{i} ({what}): "
                        + ", ".join(f"{k} expected {e.get(k)!r} got {a.get(k)!r}" for k in keys))
        if len(exp) != len(act):
            return (f"{section}: expected {len(exp)} got {len(act)}; first extra: "
                    f"{(exp[len(act)] if len(exp) > len(act) else act[len(exp)])!r}")
    return None


def _order_key(order_id: str) -> tuple[int, int, str]:
    slot, _, n = order_id.partition("-")
    if slot.isdigit() and n.isdigit():
        return int(slot), int(n), ""
    return 1 << 30, 0, order_id
