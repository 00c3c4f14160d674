"""The Python strategy base class and ``ctx``, a slot's view of one symbol."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._errors import StrategyTypeError
from ._events import Bar, Book, Fill, Gap, OrderUpdate, SymbolRef, Trade, parse_symbols

if TYPE_CHECKING:
    from ._orders import Order
    from ._ports import SlotPort, StrategyRequests


class Strategy:
    """Base class of Python strategies.

    Subclasses override any of the callbacks; each may be ``def`` or
    ``async def``. ``symbols`` is a list such as ``["BTCUSDT"]`` or
    ``["binance:BTCUSDT"]``. Keyword arguments are kept in ``self.params``
    and recorded on the tape with every slot and swap; a replay rebuilds the
    strategy as ``cls(symbols, **params)``, so pass every constructor
    argument through to ``super().__init__``.
    """

    def __init__(self, symbols: Any, **params: Any) -> None:
        self.symbols = [str(s) for s in parse_symbols(symbols)]
        self.params: dict[str, Any] = dict(params)

    def on_start(self) -> Any:
        """Called before the first event, and when swapped in."""

    def on_stop(self) -> Any:
        """Called when swapped out, removed, or when the runner closes: flush state here."""

    def on_trade(self, ctx: Context, trade: Trade) -> Any:
        """A public trade on one of the strategy's symbols."""

    def on_book(self, ctx: Context, book: Book) -> Any:
        """The top of the L2 book changed."""

    def on_bar(self, ctx: Context, bar: Bar) -> Any:
        """A time bar closed."""

    def on_gap(self, ctx: Context, gap: Gap) -> Any:
        """Events of the symbol were missed (the venue's trade ids jumped, or an overflow policy dropped some)."""

    def on_order_update(self, ctx: Context, update: OrderUpdate) -> Any:
        """One of the slot's orders changed state."""

    def on_fill(self, ctx: Context, fill: Fill) -> Any:
        """One of the slot's orders was (partly) filled."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.symbols!r})"


def strategy_symbols(obj: Strategy) -> tuple[SymbolRef, ...]:
    try:
        raw = obj.symbols
    except AttributeError:
        raise StrategyTypeError(
            f"{type(obj).__name__} has no 'symbols': call super().__init__(symbols) in its __init__"
        ) from None
    return parse_symbols(raw)


class Context:
    """A slot's view of one symbol: market state, position and order intents.

    The same ``Context`` object serves every strategy the slot holds, so a
    strategy swapped in sees the position and open orders its predecessor
    left. Order intents return the order id at once; the executor
    acknowledges them asynchronously (``on_order_update``). ``ctx.runner``
    is not the engine: it only takes swap and add requests.
    """

    __slots__ = ("_slot", "best_ask", "best_bid", "last_price", "symbol", "venue")

    def __init__(self, slot: SlotPort, symbol: str, venue: str = "") -> None:
        self._slot = slot
        self.symbol = symbol
        self.venue = venue
        self.last_price: float | None = None
        self.best_bid: float | None = None
        self.best_ask: float | None = None

    # --- market -----------------------------------------------------------------

    @property
    def mid(self) -> float | None:
        bb, ba = self.best_bid, self.best_ask
        if bb is None or ba is None:
            return None
        return (bb + ba) / 2

    @property
    def runner(self) -> StrategyRequests:
        """Swap or add strategies from a callback: ``ctx.runner.request_replace(i, new)``."""
        return self._slot.requests

    @property
    def slot(self) -> int:
        return self._slot.index

    # --- portfolio ---------------------------------------------------------------

    @property
    def position(self) -> Decimal:
        """Signed quantity held by this slot in this symbol (exact)."""
        return self._slot.portfolio.position(self._slot.index, self.symbol).qty

    @property
    def avg_entry_price(self) -> Decimal | None:
        return self._slot.portfolio.position(self._slot.index, self.symbol).avg_entry_price

    @property
    def realized_pnl(self) -> Decimal:
        return self._slot.portfolio.position(self._slot.index, self.symbol).realized_pnl

    @property
    def open_orders(self) -> list[Order]:
        return self._slot.portfolio.open_orders(self._slot.index, self.symbol)

    # --- intents -----------------------------------------------------------------

    def market_buy(self, qty: Any) -> str:
        return self._slot.submit_order(self.symbol, "buy", "market", qty, None)

    def market_sell(self, qty: Any) -> str:
        return self._slot.submit_order(self.symbol, "sell", "market", qty, None)

    def limit_buy(self, price: Any, qty: Any) -> str:
        return self._slot.submit_order(self.symbol, "buy", "limit", qty, price)

    def limit_sell(self, price: Any, qty: Any) -> str:
        return self._slot.submit_order(self.symbol, "sell", "limit", qty, price)

    def cancel(self, order_id: str) -> None:
        self._slot.cancel_order(order_id)

    def amend(self, order_id: str, *, price: Any = None, qty: Any = None) -> None:
        """Change a resting limit order's price and/or total quantity (``qty`` counts what is filled).

        The answer is an ``on_order_update`` with reason "amended" or "amend refused: ...".
        """
        self._slot.amend_order(order_id, price, qty)

    def cancel_all(self) -> None:
        for order in self.open_orders:
            self._slot.cancel_order(order.order_id)

    def __repr__(self) -> str:
        return f"<Context slot={self._slot.index} {self.symbol} last={self.last_price}>"
