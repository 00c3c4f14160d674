"""A paper executor: simulated acknowledgement latency, fills against trades and the book."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import operator
from collections import defaultdict, deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

import attrs
import trio

from .._core._events import Book, Fill, Liquidity, OrderUpdate, Trade
from .._core._money import ZERO, price_decimal, to_decimal
from .._core._orders import AMENDED, Order, Position, amend_problem, amend_refused
from .._core._ports import Executor
from .._core._status import ExecutorSettings, ExecutorStatus
from .._errors import OrderError

PaperClock = Literal["trio", "events"]


@attrs.frozen
class PaperSettings(ExecutorSettings):
    """How a ``PaperExecutor`` behaves: acknowledgement latency (seconds) and fee rates."""

    latency: float = 0.005
    taker_fee: Decimal = Decimal(0)
    maker_fee: Decimal = Decimal(0)


@attrs.frozen(kw_only=True)
class PaperStatus(ExecutorStatus):
    settings: PaperSettings

log = logging.getLogger("flox_trio.execution")


def _order_copier() -> Callable[[Order], Order]:
    """A copy of an order for a strategy (``ctx.open_orders``), as ``Order.copy`` makes it, in a quarter of the time.

    A strategy that checks its open orders on every trade while one is in
    flight (bench/_ema_strategy.py) spends most of a replay copying them with
    ``attrs.evolve``; reading every field at once and calling the class
    positionally makes the same object. Should ``Order`` gain a field that
    cannot be passed so, ``Order.copy`` is used instead.
    """
    fields = attrs.fields(Order)
    if not all(f.init and not f.kw_only and f.alias == f.name for f in fields):
        return Order.copy
    values = operator.attrgetter(*(f.name for f in fields))

    def copy(order: Order) -> Order:
        return Order(*values(order))

    return copy


_copy_order = _order_copier()


class PaperExecutor(Executor):
    """Simulated execution with the full order state machine.

    new → accepted → partially_filled → filled, or → canceled / rejected.
    Intents are acknowledged ``latency`` seconds (on the Trio clock) after
    submission, so orders really are in flight and a swap can happen while
    they are. Market orders fill at the slot's best opposite quote (or the
    last trade); marketable limits fill as taker; resting limits fill as maker
    when a trade prints at or through their price (up to the trade's size,
    hence partial fills) or the book crosses them.

    ``clock="trio"`` (the default) times acknowledgements on the Trio clock,
    as a live venue would. ``clock="events"`` times them on the market data's
    own timestamps and processes them at the start of the first later batch:
    with the runner's ``lockstep`` this makes replays deterministic to the
    byte, whatever the scheduler does.
    """

    def __init__(
        self,
        *,
        latency: float = 0.005,
        taker_fee: Any = 0,
        maker_fee: Any = 0,
        clock: PaperClock = "trio",
        history: int | None = 10_000,
    ) -> None:
        if clock not in ("trio", "events"):
            raise OrderError(f"PaperExecutor clock must be 'trio' or 'events', got {clock!r}")
        self.ack_clock: PaperClock = clock
        self._event_ns = 0
        if not (latency >= 0 and math.isfinite(latency)):
            raise OrderError(f"PaperExecutor latency must be a finite number of seconds >= 0, got {latency!r}")
        self.latency = float(latency)
        self.taker_fee = to_decimal(taker_fee, "taker_fee")
        self.maker_fee = to_decimal(maker_fee, "maker_fee")
        self._orders: dict[str, Order] = {}
        # The live ones, so ctx.open_orders (read per batch by the JS host) costs
        # what is open, not everything the history holds.
        self._open: dict[str, Order] = {}
        # ctx.open_orders' answers until an order changes: a strategy that checks them on every
        # trade while one is in flight (bench/_ema_strategy.py) asks hundreds of times per change.
        self._views: dict[tuple[int, str | None], list[Order]] = {}
        self._positions: dict[tuple[int, str], Position] = {}
        self._resting: dict[str, list[Order]] = defaultdict(list)
        self._timers: list[tuple[float, int, str, str]] = []  # (due, tiebreak, action, order_id)
        self._tiebreak = itertools.count()
        # An amend in flight: its (price, qty), by its timer's tiebreak.
        self._amends: dict[int, tuple[Decimal | None, Decimal | None]] = {}
        self._wakeup = trio.Event()
        self.fills = 0
        # A live run keeps the last `history` finished orders and fills (open
        # orders always); replays keep everything, their outputs are the whole run.
        self.history = history
        self.fill_log: deque[Fill] = deque(maxlen=history)
        self._finished: deque[str] = deque()

    # --- intents ----------------------------------------------------------------

    def submit(self, order: Order) -> None:
        if order.order_id in self._orders:
            raise OrderError(f"order id {order.order_id!r} is already in use")
        order.created_ts_ns = self._clock.wall_ns()
        self._orders[order.order_id] = order
        self._open[order.order_id] = order
        self._views.clear()
        self._schedule("ack", order.order_id)

    def cancel(self, slot: int, order_id: str) -> None:
        order = self._orders.get(order_id)
        if order is None or order.slot != slot:
            raise OrderError(f"slot {slot} has no order {order_id!r}; ctx.open_orders lists the live ones")
        self._schedule("cancel", order_id)

    def amend(self, slot: int, order_id: str, price: Decimal | None, qty: Decimal | None) -> None:
        order = self._orders.get(order_id)
        if order is None or order.slot != slot:
            raise OrderError(f"slot {slot} has no order {order_id!r}; ctx.open_orders lists the live ones")
        self._amends[self._schedule("amend", order_id)] = (price, qty)

    def _schedule(self, action: str, order_id: str) -> int:
        due: float
        if self.ack_clock == "events":
            due = self._event_ns + int(self.latency * 1e9)
        else:
            due = self._clock.now() + self.latency
        tiebreak = next(self._tiebreak)
        heapq.heappush(self._timers, (due, tiebreak, action, order_id))
        self._wakeup.set()
        return tiebreak

    def _process_due(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, tiebreak, action, order_id = heapq.heappop(self._timers)
            order = self._orders.get(order_id)
            change = self._amends.pop(tiebreak, None)
            if order is None:  # finished long ago and dropped from the history
                continue
            if action == "ack":
                self._acknowledge(order)
            elif change is not None:
                self._amend_now(order, *change)
            else:
                self._cancel_now(order)

    @property
    def due(self) -> bool:
        timers = self._timers
        return self.ack_clock != "events" and bool(timers) and timers[0][0] <= self._clock.now()

    async def run(self) -> None:
        if self.ack_clock == "events":
            return  # acknowledgements happen in on_market
        while True:
            if not self._timers:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            due = self._timers[0][0]
            if self._clock.now() < due:
                with trio.move_on_at(due):
                    await self._wakeup.wait()
                if self._wakeup.is_set():
                    self._wakeup = trio.Event()
                continue
            self._process_due(self._clock.now())
            await trio.lowlevel.checkpoint()

    # --- state machine ------------------------------------------------------------

    def _update(self, order: Order, reason: str | None = None) -> None:
        # Every change of an order (status, fill, reason, an amend) ends here.
        self._views.clear()
        if not order.is_open and self._open.pop(order.order_id, None) is not None and self.history is not None:
            self._finished.append(order.order_id)
            while len(self._finished) > self.history:
                self._orders.pop(self._finished.popleft(), None)
        self._emit(
            order.slot,
            OrderUpdate(
                order.order_id, order.symbol, order.side, order.order_type, order.status,
                order.qty, order.filled_qty, order.price, order.avg_fill_price,
                order.reason if reason is None else reason, self._clock.wall_ns(), order.slot, order.venue,
            ),
        )

    def _reject(self, order: Order, reason: str) -> None:
        order.status = "rejected"
        order.reason = reason
        log.info("order %s rejected: %s", order.order_id, reason)
        self._update(order)

    def _acknowledge(self, order: Order) -> None:
        if order.status != "new":
            return
        last, bid, ask = self._quote(order.slot, order.symbol)
        if order.order_type == "market":
            px = (ask if order.side == "buy" else bid) or last
            if px is None:
                self._reject(order, f"no market price for {order.symbol} yet")
                return
            order.status = "accepted"
            self._update(order)
            self._fill(order, price_decimal(px), order.remaining_qty, "taker")
            return
        order.status = "accepted"
        self._update(order)
        self._take_or_rest(order, bid, ask)

    def _take_or_rest(self, order: Order, bid: float | None, ask: float | None) -> None:
        """A limit order at its price: marketable, it fills as taker at the touch; else it rests."""
        assert order.price is not None
        touch = ask if order.side == "buy" else bid
        if touch is not None and (
            price_decimal(touch) <= order.price if order.side == "buy" else price_decimal(touch) >= order.price
        ):
            self._fill(order, price_decimal(touch), order.remaining_qty, "taker")
        else:
            self._resting[order.symbol].append(order)

    def _cancel_now(self, order: Order) -> None:
        if not order.is_open:
            self._emit(
                order.slot,
                OrderUpdate(order.order_id, order.symbol, order.side, order.order_type, "rejected",
                            order.qty, order.filled_qty, order.price, order.avg_fill_price,
                            f"cancel refused: order is {order.status}", self._clock.wall_ns(), order.slot, order.venue),
            )
            return
        order.status = "canceled"
        order.reason = "canceled by strategy"
        self._unrest(order)
        self._update(order)

    def _amend_now(self, order: Order, price: Decimal | None, qty: Decimal | None) -> None:
        problem = amend_problem(order, price, qty)
        if problem is None and order.status == "new":
            problem = "order is not acknowledged yet; amend it once it is accepted"
        if problem is not None:
            self._emit(order.slot, amend_refused(order, problem, self._clock.wall_ns()))
            return
        # As a venue ranks it: a new price or a larger quantity goes to the back of the queue.
        requeue = (price is not None and price != order.price) or (qty is not None and qty > order.qty)
        if price is not None:
            order.price = price
        if qty is not None:
            order.qty = qty
        self._update(order, AMENDED)
        if requeue:
            self._unrest(order)
            _, bid, ask = self._quote(order.slot, order.symbol)
            self._take_or_rest(order, bid, ask)

    def _unrest(self, order: Order) -> None:
        resting = self._resting.get(order.symbol)
        if resting and order in resting:
            resting.remove(order)
            if not resting:
                del self._resting[order.symbol]

    def _fill(self, order: Order, price: Decimal, qty: Decimal, liquidity: Liquidity, trade_id: str = "") -> None:
        qty = min(qty, order.remaining_qty)
        if qty <= 0:
            return
        fee = price * qty * (self.taker_fee if liquidity == "taker" else self.maker_fee)
        order.filled_qty += qty
        order.notional += price * qty
        order.status = "filled" if order.filled_qty >= order.qty else "partially_filled"
        self._views.clear()  # before the fill is emitted, not only at _update after it
        self.position(order.slot, order.symbol).apply_fill(order.side, price, qty, fee)
        self.fills += 1
        if order.status == "filled":
            self._unrest(order)
        fill = Fill(order.order_id, order.symbol, order.side, price, qty, fee, liquidity,
                    self._clock.wall_ns(), trade_id, order.slot, order.venue)
        self.fill_log.append(fill)
        self._emit(order.slot, fill)
        self._update(order)

    # --- market data ----------------------------------------------------------------

    def may_emit_on_market(self) -> bool:
        # A resting order can fill on a batch, and on event time a due acknowledgement can happen.
        return bool(self._resting) or (self.ack_clock == "events" and bool(self._timers))

    def on_market(self, batch: list[Any]) -> None:
        if self.ack_clock == "events" and batch:
            first = batch[0]
            ts = first.exchange_ts_ns or first.recv_ts_ns
            if ts > self._event_ns:
                self._event_ns = ts
            if self._timers:
                self._process_due(self._event_ns)
            last = batch[-1]
            self._event_ns = max(self._event_ns, last.exchange_ts_ns or last.recv_ts_ns)
        resting = self._resting
        if not resting:
            return
        for ev in batch:
            orders = resting.get(ev.symbol)
            if not orders:
                continue
            cls = ev.__class__
            if cls is Trade:
                pxd = price_decimal(ev.price)
                for order in list(orders):
                    limit = order.price
                    assert limit is not None
                    if (order.side == "buy" and pxd <= limit) or (order.side == "sell" and pxd >= limit):
                        self._fill(order, limit, to_decimal(ev.qty), "maker", str(ev.trade_id))
            elif cls is Book:
                for order in list(orders):
                    limit = order.price
                    assert limit is not None
                    levels = ev.asks if order.side == "buy" else ev.bids
                    avail = ZERO
                    for p, q in levels:
                        pd = price_decimal(p)
                        if (order.side == "buy" and pd > limit) or (order.side == "sell" and pd < limit):
                            break
                        avail += to_decimal(q)
                    if avail > 0:
                        self._fill(order, limit, avail, "maker")

    # --- views ------------------------------------------------------------------------

    def position(self, slot: int, symbol: str) -> Position:
        key = (slot, symbol)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = Position(symbol)
        return pos

    def positions(self) -> dict[tuple[int, str], Position]:
        return dict(self._positions)

    def open_orders(self, slot: int, symbol: str | None = None) -> list[Order]:
        """Copies of the slot's open orders (in ``symbol``), as of now.

        Calls that see the same state share the copies (in a new list each):
        read them, do not change them; the executor's own orders are not these.
        """
        if not self._open:
            return []
        key = (slot, symbol)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = [
                _copy_order(o) for o in self._open.values()
                if o.slot == slot and (symbol is None or o.symbol == symbol)
            ]
        return view.copy()

    def orders(self) -> list[Order]:
        return [_copy_order(o) for o in self._orders.values()]

    def fill_history(self) -> list[Fill]:
        return list(self.fill_log)

    @property
    def settings(self) -> PaperSettings:
        return PaperSettings(self.latency, self.taker_fee, self.maker_fee)

    def status(self) -> PaperStatus:
        return PaperStatus(executor="PaperExecutor", orders=len(self._orders), open_orders=len(self._open),
                           fills=self.fills, settings=self.settings)
