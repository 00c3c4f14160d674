"""Batches encoded for the JavaScript side: one set of columns per batch, shared by every JS slot.

Trades (the bulk) become columns — one JSON array per field, the symbol as
one character per trade — which the JS side decodes only when a
strategy reads that field. Everything else (books, bars, order events) goes
as one JSON array of plain objects; they are comparatively rare.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import orjson

from .._core._events import Bar, Book, Fill, Gap, OrderUpdate, Trade

_price = attrgetter("price")
_qty = attrgetter("qty")
_tid = attrgetter("trade_id")
_ets = attrgetter("exchange_ts_ns")
_rts = attrgetter("recv_ts_ns")
_sym = attrgetter("symbol")
_side = attrgetter("side")

_KIND = {Trade: "t", Book: "b", Bar: "B", Gap: "g", OrderUpdate: "u", Fill: "f"}

#: (kinds, symbols, symbol chars, side, price, qty, id, exchange ts, receive ts, others)
Encoded = tuple[str, str, str, str, str, str, str, str, str, str]


def _dump(values: list[Any]) -> str:
    return orjson.dumps(values).decode()


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _other(ev: Any) -> dict[str, Any]:
    cls = ev.__class__
    if cls is Book:
        return {"symbol": ev.symbol, "bids": ev.bids, "asks": ev.asks, "exchangeTsNs": float(ev.exchange_ts_ns),
                "recvTsNs": float(ev.recv_ts_ns), "seq": float(ev.seq)}
    if cls is Gap:
        return {"symbol": ev.symbol, "reason": ev.reason, "missing": ev.missing, "firstId": ev.first_id,
                "lastId": ev.last_id, "exchangeTsNs": float(ev.exchange_ts_ns), "recvTsNs": float(ev.recv_ts_ns)}
    if cls is Bar:
        return {"symbol": ev.symbol, "open": ev.open, "high": ev.high, "low": ev.low, "close": ev.close,
                "volume": ev.volume, "tradeCount": ev.trade_count, "startTsNs": float(ev.start_ts_ns),
                "endTsNs": float(ev.end_ts_ns), "intervalS": ev.interval_s}
    if cls is OrderUpdate:
        return {"orderId": ev.order_id, "symbol": ev.symbol, "side": ev.side, "orderType": ev.order_type,
                "status": ev.status, "qty": float(ev.qty), "filledQty": float(ev.filled_qty),
                "price": _num(ev.price), "avgFillPrice": _num(ev.avg_fill_price), "reason": ev.reason,
                "tsNs": float(ev.ts_ns)}
    return {"orderId": ev.order_id, "symbol": ev.symbol, "side": ev.side, "price": float(ev.price),
            "qty": float(ev.qty), "fee": float(ev.fee), "liquidity": ev.liquidity, "tsNs": float(ev.ts_ns),
            "tradeId": ev.trade_id}


class BatchCodec:
    """Encodes a batch once; the same list object handed to several JS slots is encoded once."""

    __slots__ = ("_batch", "_encoded")

    def __init__(self) -> None:
        self._batch: list[Any] | None = None
        self._encoded: Encoded | None = None

    def encode(self, batch: list[Any]) -> Encoded:
        if batch is self._batch and self._encoded is not None:
            return self._encoded
        types = list(map(type, batch))
        if types.count(Trade) == len(batch):
            trades, kinds, others = batch, "", ""
        else:
            trades = [e for e, t in zip(batch, types, strict=True) if t is Trade]
            kinds = "".join([_KIND[t] for t in types])
            others = _dump([_other(e) for e, t in zip(batch, types, strict=True) if t is not Trade])
        syms = list(map(_sym, trades))
        table = list(dict.fromkeys(syms))
        if len(table) == 1:
            sy = "0" * len(trades)
        else:
            index = {s: chr(48 + i) for i, s in enumerate(table)}
            sy = "".join([index[s] for s in syms])
        # Every column is a JSON array the JS side parses on first read: a strategy pays for
        # the fields it reads. Ids are strings and timestamps ints by Trade's type; the
        # timestamps go as JSON numbers, which JS parses to the same doubles float() gives
        # (QuickJS would cut Python ints passed as arguments to 32 bits, not ints in JSON).
        encoded: Encoded = (
            kinds, _dump(table), sy, _dump(list(map(_side, trades))),
            _dump(list(map(_price, trades))), _dump(list(map(_qty, trades))),
            _dump(list(map(_tid, trades))), _dump(list(map(_ets, trades))), _dump(list(map(_rts, trades))),
            others,
        )
        self._batch, self._encoded = batch, encoded
        return encoded


#: One codec for the process: slots dispatch one after another on the Trio thread.
codec = BatchCodec()
