from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.feeds import Feed
from flox_trio.tape import TapeFeed, TapeReader, TapeWriter

from .conftest import BASE_NS, CollectingHub, make_trades

SECOND = 1_000_000_000


def _fill(i: int) -> flox.Fill:
    return flox.Fill(f"o{i}", "BTCUSDT", "buy", Decimal("100.5"), Decimal("0.1"), ts_ns=BASE_NS + i)


def _update(i: int) -> flox.OrderUpdate:
    return flox.OrderUpdate(f"o{i}", "BTCUSDT", "buy", "market", "filled", Decimal("0.1"), Decimal("0.1"))


def _mixed_tape(path: Path) -> list[list[Any]]:
    """Writes batches mixing market and order events; returns the market part of each batch."""
    trades = make_trades(30)
    book = flox.Book("BTCUSDT", ((99.5, 1.0),), ((100.5, 2.0),), BASE_NS, BASE_NS + 1, "binance", 7)
    bar = flox.Bar("ETHUSDT", 1.0, 2.0, 0.5, 1.5, 10.0, 3, BASE_NS, BASE_NS + SECOND, 1.0)
    written: list[list[Any]] = [
        trades[:10],
        [_update(1), _fill(1)],                       # engine output only: not replayed
        [trades[10], book, _fill(2), trades[11], bar],
        [book],
        trades[12:30],
        [_update(2)],
    ]
    seq = 0
    with TapeWriter(path, flush_bytes=500, segment_bytes=2000) as w:
        for batch in written:
            w.write_events(seq, batch)
            seq += len(batch)
        w.write_swap(seq=12, slot=0, at_market_event=12, slot_market_event=12, old_hash="a", new_hash="b", old_language="python", new_language="js",
                     params={"fast": 8}, new_spec="js_strategies/ema.js")
        w.write_slot(seq=0, slot=0, action="add", hash="a", language="python", spec="py_strategies/ema.py:Ema")
    return [[e for e in b if isinstance(e, flox.Trade | flox.Book | flox.Bar)] for b in written]


async def test_publishes_exactly_the_recorded_market_events_in_order(tmp_path: Path) -> None:
    expected = [b for b in _mixed_tape(tmp_path / "t") if b]
    feed = TapeFeed(tmp_path / "t")
    assert isinstance(feed, Feed)
    assert feed.finite
    hub = CollectingHub()
    await feed.run(hub)
    assert hub.batches == expected
    assert feed.published == sum(map(len, expected))
    assert feed.batches_published == len(expected)
    assert feed.position == 18  # the recorded seq of the last batch with market events
    assert feed.status().published == feed.published


async def test_exposes_recorded_swaps_and_slots(tmp_path: Path) -> None:
    _mixed_tape(tmp_path / "t")
    feed = TapeFeed(tmp_path / "t")
    [swap] = feed.swaps
    assert (swap.seq, swap.slot, swap.old_hash, swap.new_hash, swap.new_language) == (12, 0, "a", "b", "js")
    assert swap.params == {"fast": 8}
    assert swap.new_spec == "js_strategies/ema.js"
    [slot] = feed.slot_records
    assert (slot.seq, slot.action, slot.spec) == (0, "add", "py_strategies/ema.py:Ema")
    assert set(feed.symbols) == {"BTCUSDT", "ETHUSDT"}


async def test_paced_replay_keeps_the_recorded_spacing(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    offsets_s = [0.0, 0.5, 0.75, 2.0, 2.0, 10.0]
    with TapeWriter(tmp_path / "t") as w:
        for i, off in enumerate(offsets_s):
            t = flox.Trade("BTCUSDT", 100.0, 1.0, "buy", str(i), 0, BASE_NS + int(off * SECOND))
            w.write_events(i, [t])
        # An order event between them is not published and does not pace anything.
        w.write_events(len(offsets_s), [_fill(0)])
    for speed in (1.0, 4.0):
        hub = CollectingHub()
        start = trio.current_time()
        await TapeFeed(tmp_path / "t", speed=speed).run(hub)
        got = [t - start for t in hub.times]
        assert got == pytest.approx([off / speed for off in offsets_s], abs=1e-9)
        assert [b[0].trade_id for b in hub.batches] == [str(i) for i in range(len(offsets_s))]


async def test_paced_replay_uses_exchange_time_and_bar_end_when_recv_time_is_missing(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with TapeWriter(tmp_path / "t") as w:
        w.write_events(0, [flox.Trade("X", 1.0, 1.0, "buy", "a", BASE_NS, 0)])
        w.write_events(1, [flox.Bar("X", 1, 1, 1, 1, 1, 1, BASE_NS, BASE_NS + 3 * SECOND, 3.0)])
        w.write_events(2, [flox.Trade("X", 1.0, 1.0, "buy", "b", 0, 0)])  # no time: published at once
    hub = CollectingHub()
    start = trio.current_time()
    await TapeFeed(tmp_path / "t", speed=1.0).run(hub)
    assert [t - start for t in hub.times] == pytest.approx([0.0, 3.0, 3.0])


async def test_unpaced_replay_takes_no_virtual_time(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    with TapeWriter(tmp_path / "t") as w:
        w.write_events(0, make_trades(5, step_ns=SECOND))
        w.write_events(5, make_trades(5, 5, step_ns=SECOND))
    hub = CollectingHub()
    start = trio.current_time()
    await TapeFeed(tmp_path / "t").run(hub)
    assert hub.times == [start, start]


@pytest.mark.parametrize("speed", [0, -1.0, float("nan"), float("inf"), "fast"])
def test_bad_speed(tmp_path: Path, speed: Any) -> None:
    TapeWriter(tmp_path / "t").close()
    with pytest.raises(flox.FeedError, match="speed must be a number > 0"):
        TapeFeed(tmp_path / "t", speed=speed)


def test_missing_tape_fails_when_the_feed_is_built(tmp_path: Path) -> None:
    with pytest.raises(flox.TapeError, match="no tape at"):
        TapeFeed(tmp_path / "nope")


class Counter(flox.Strategy):
    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.trades: list[str] = []

    def on_trade(self, ctx: flox.Context, trade: flox.Trade) -> None:
        self.trades.append(trade.trade_id)


async def test_record_through_the_runner_then_replay(tmp_path: Path) -> None:
    events = make_trades(3000) + make_trades(500, 5000, "ETHUSDT")
    path = tmp_path / "rec"
    first = Counter(["BTCUSDT"])
    async with flox.open_runner(flox.feeds.ListFeed(events, batch_size=256), tape=str(path)) as runner:
        runner.add_strategy(first)
    reader = TapeReader(path)
    assert list(reader.iter_events()) == events
    [slot] = reader.slot_records()
    assert (slot.seq, slot.slot, slot.action, slot.language) == (0, 0, "add", "python")
    assert slot.source is not None and "class Counter" in slot.source
    assert reader.meta["feed"] == "ListFeed"

    replayed = Counter(["BTCUSDT"])
    async with flox.open_runner(TapeFeed(path)) as runner:
        runner.add_strategy(replayed)
    assert replayed.trades == first.trades == [str(i) for i in range(3000)]


async def test_on_record_gets_every_other_record_where_it_was_written(tmp_path: Path) -> None:
    trades = make_trades(6)
    with TapeWriter(tmp_path / "t", flush_bytes=1 << 20) as w:
        w.write_slot(seq=0, slot=0, action="add", hash="a", language="python")
        w.write_events(0, trades[:3])
        w.write_events(3, [_update(1)])                  # not replayed, and not a record either
        w.write_control(seq=4, at_market_event=3, action="halt", reason="r", ts_ns=BASE_NS)
        w.write_events(4, trades[3:])
        w.write_connector("disconnect", {}, BASE_NS + 1)
    seen: list[Any] = []
    feed = TapeFeed(tmp_path / "t", on_batch=lambda b: seen.append(len(b)), on_record=seen.append)
    await feed.run(CollectingHub())
    assert [type(x).__name__ if not isinstance(x, int) else x for x in seen] == [
        "SlotRecord", 3, "ControlRecord", 3, "ConnectorRecord"]
    # Without on_record, only the batches: the same as before.
    plain: list[int] = []
    await TapeFeed(tmp_path / "t", on_batch=lambda b: plain.append(len(b))).run(CollectingHub())
    assert plain == [3, 3]
