from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flox_trio as flox
from flox_trio import BarAggregator, L2Book

from .conftest import BASE_NS, Recorder

levels = st.lists(st.tuples(st.integers(1, 60).map(lambda p: p * 0.5), st.sampled_from([0.0, 0.5, 1.0, 2.5])),
                  max_size=20)


@given(snapshot=st.tuples(levels, levels), deltas=st.lists(st.tuples(levels, levels), max_size=15))
def test_l2_book_matches_a_naive_model(snapshot: Any, deltas: Any) -> None:
    book = L2Book("X")
    model_b: dict[float, float] = {}
    model_a: dict[float, float] = {}

    def apply(bids: Any, asks: Any) -> None:
        for p, q in bids:
            model_b.pop(p, None) if q == 0 else model_b.__setitem__(p, q)
        for p, q in asks:
            model_a.pop(p, None) if q == 0 else model_a.__setitem__(p, q)

    book.apply_snapshot(*snapshot)
    apply(*snapshot)
    for d in deltas:
        book.apply_delta(*d)
        apply(*d)
    bids, asks = book.top(100)
    assert bids == tuple(sorted(model_b.items(), reverse=True))
    assert asks == tuple(sorted(model_a.items()))
    assert book.best_bid == (max(model_b) if model_b else None)


def test_book_event_and_bad_levels() -> None:
    book = L2Book("BTCUSDT", "binance")
    book.apply_snapshot([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)], seq=7)
    ev = book.to_event(depth=1)
    assert ev.bids == ((100.0, 1.0),) and ev.asks == ((101.0, 1.0),) and ev.seq == 7
    assert ev.best_bid == 100.0 and ev.venue == "binance"
    with pytest.raises(flox.FloxError, match="bad book level"):
        book.apply_delta([(100.0, -1.0)], [])


def test_bars_from_trades() -> None:
    agg = BarAggregator([1.0])
    sec = 1_000_000_000
    trades = [flox.Trade("X", p, 1.0, "buy", "", BASE_NS + int(t * sec)) for t, p in
              [(0.1, 10), (0.5, 12), (0.9, 9), (1.2, 11), (3.5, 13)]]
    out = agg.process(trades)
    bars = [e for e in out if isinstance(e, flox.Bar)]
    assert [(b.open, b.high, b.low, b.close, b.volume, b.trade_count) for b in bars] == [
        (10, 12, 9, 9, 3.0, 3), (11, 11, 11, 11, 1.0, 1)]
    assert bars[0].start_ts_ns == BASE_NS and bars[0].end_ts_ns == BASE_NS + sec
    assert out.index(bars[0]) == 3  # before the trade that closed it
    assert [(b.open, b.trade_count) for b in agg.flush()] == [(13, 1)]


async def test_strategies_with_on_bar_get_bars(journal: list[Any]) -> None:
    bars: list[flox.Bar] = []

    class Bars(Recorder):
        def on_bar(self, ctx: flox.Context, bar: flox.Bar) -> None:
            bars.append(bar)

    sec = 1_000_000_000
    trades = [flox.Trade("BTCUSDT", 100.0 + i, 1.0, "buy", str(i), BASE_NS + i * sec // 2) for i in range(10)]
    async with flox.open_runner(flox.feeds.ListFeed(trades), bar_intervals=(1.0, 2.0)) as runner:
        runner.add_strategy(Bars(["BTCUSDT"], journal, "b"))
    one_s = [b for b in bars if b.interval_s == 1.0]
    two_s = [b for b in bars if b.interval_s == 2.0]
    assert len(one_s) == 5 and len(two_s) == 3  # the last ones are flushed when the feed ends
    assert one_s[0].open == 100.0 and one_s[0].close == 101.0 and one_s[0].trade_count == 2


async def test_bars_in_progress_survive_swaps_and_new_slots(journal: list[Any]) -> None:
    """One aggregator for the runner's life: a swap or an added slot does not cut the bar in progress short."""
    bars: list[flox.Bar] = []

    class Bars(Recorder):
        def on_bar(self, ctx: flox.Context, bar: flox.Bar) -> None:
            bars.append(bar)

    # 10 trades a second for 6 s; the swap and the new slot land in the middle of a second.
    trades = [flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), BASE_NS + i * 100_000_000,
                         BASE_NS + i * 100_000_000) for i in range(60)]
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    async with flox.open_runner(feed, bar_intervals=(1.0,)) as runner:
        slot = runner.add_strategy(Bars(["BTCUSDT"], journal, "a"))
        for i, t in enumerate(trades):
            await feed.push([t])
            await runner.wait_idle()
            if i == 25:
                await runner.replace_strategy(slot, Bars(["BTCUSDT"], journal, "b"))
            if i == 35:
                runner.add_strategy(Recorder(["BTCUSDT"], journal, "c"))
        feed.close()
    assert [b.trade_count for b in bars] == [10] * 6
