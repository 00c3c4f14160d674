"""Bybit orderbook rules, as ``bybit-docs_orderbook.mdx`` states them, and the two deliberate exceptions.

"If you receive a new snapshot message, you will have to reset your local
orderbook. If there is a problem on Bybit's end, a snapshot will be re-sent,
which is guaranteed to contain the latest data." A snapshot is not applied
only when it is not new: the level-1 repeat of an unchanged book ("the field
u will be the same as that in the previous message") and the subscription
snapshot of a planned successor connection, which trails the book its
predecessor delivered.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from flox_trio import Book
from flox_trio.connectors import Bybit, SessionOptions
from flox_trio.connectors._bybit import BybitVenue

from .conftest import (
    FAST,
    RecordingHub,
    RecordingLink,
    RecordingPort,
    assert_same_book,
    running,
    simulator,
    wait_until,
)

MS = 1_000_000


def venue(depth: int = 50) -> tuple[BybitVenue, RecordingPort]:
    v = BybitVenue("wss://stream.bybit.com/v5/public/spot", (f"orderbook.{depth}",), SessionOptions())
    port = RecordingPort(["BTCUSDT"])
    v.bind(port)
    v.symbols_changed(frozenset({"BTCUSDT"}), frozenset())
    return v, port


def message(kind: str, u: int, bids: list[list[str]], asks: list[list[str]], *, depth: int = 50,
            ts: int = 1_700_000_000_100, cts: int | None = 1_700_000_000_090) -> str:
    frame: dict[str, Any] = {"topic": f"orderbook.{depth}.BTCUSDT", "ts": ts, "type": kind,
                             "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": u * 10}}
    if cts is not None:
        frame["cts"] = cts
    return orjson.dumps(frame).decode()


def decode(v: BybitVenue, text: str) -> list[Book]:
    events = v.decode(RecordingLink(), text, 1)
    assert events is not None
    assert all(type(e) is Book for e in events)
    return events  # type: ignore[return-value]


def top(v: BybitVenue) -> tuple[Any, Any]:
    return v.books["BTCUSDT"].book.top(100)


def test_level_one_repeats_an_unchanged_book_every_3_s_and_it_is_not_republished() -> None:
    v, port = venue(depth=1)
    (first,) = decode(v, message("snapshot", 10, [["100", "1"]], [["101", "2"]], depth=1))
    assert first.seq == 10
    # Pushed again after 3 s without a change, with the same u: nothing new.
    assert decode(v, message("snapshot", 10, [["100", "1"]], [["101", "2"]], ts=1_700_000_003_100, depth=1)) == []
    assert top(v) == (((100.0, 1.0),), ((101.0, 2.0),))
    # The next change is a snapshot with a newer u, and it replaces the book.
    (second,) = decode(v, message("snapshot", 11, [["99", "3"]], [["101", "2"]], depth=1))
    assert (second.seq, second.bids, second.asks) == (11, ((99.0, 3.0),), ((101.0, 2.0),))
    assert (port.resyncs, port.gaps, port.errors) == ([], [], [])


def test_a_new_snapshot_resets_the_book() -> None:
    v, _ = venue()
    decode(v, message("snapshot", 100, [["100", "1"], ["99", "1"]], [["101", "1"], ["102", "1"]]))
    decode(v, message("delta", 101, [["98", "5"]], []))
    # Levels the new snapshot does not list are gone, whatever deltas said before.
    (book,) = decode(v, message("snapshot", 150, [["97", "2"]], [["103", "4"]]))
    assert (book.bids, book.asks, book.seq) == (((97.0, 2.0),), ((103.0, 4.0),), 150)
    assert top(v) == (((97.0, 2.0),), ((103.0, 4.0),))


def test_a_snapshot_re_sent_older_than_the_book_still_resets_it() -> None:
    """A snapshot "guaranteed to contain the latest data" wins even when its u is lower."""
    v, port = venue()
    decode(v, message("snapshot", 100, [["100", "1"]], [["101", "1"]]))
    decode(v, message("delta", 101, [["100", "2"]], []))
    (book,) = decode(v, message("snapshot", 60, [["90", "1"]], [["91", "1"]]))
    assert (book.seq, book.bids, book.asks) == (60, ((90.0, 1.0),), ((91.0, 1.0),))
    # The book started over: reported as a resync, and its deltas continue from there.
    assert port.resyncs == [("BTCUSDT", "orderbook.50.BTCUSDT", 60)]
    (after,) = decode(v, message("delta", 61, [["90", "0"], ["89", "1"]], []))
    assert (after.seq, after.bids) == (61, ((89.0, 1.0),))
    assert port.gaps == []


def test_u_1_is_the_service_restarting_even_as_a_delta() -> None:
    v, port = venue()
    decode(v, message("snapshot", 100, [["100", "1"]], [["101", "1"]]))
    (book,) = decode(v, message("delta", 1, [["50", "1"]], [["51", "1"]]))
    assert (book.seq, book.bids, book.asks) == (1, ((50.0, 1.0),), ((51.0, 1.0),))
    assert port.resyncs == [("BTCUSDT", "orderbook.50.BTCUSDT", 1)]


async def test_a_planned_successors_trailing_snapshot_is_not_applied() -> None:
    v, port = venue()
    decode(v, message("snapshot", 100, [["100", "1"]], [["101", "1"]]))
    for u in range(101, 106):
        decode(v, message("delta", u, [["100", str(u)]], []))
    v.handover(frozenset({"BTCUSDT"}))
    # The successor subscribed at u=102; the old connection delivered up to 105 meanwhile.
    assert decode(v, message("snapshot", 102, [["100", "102"]], [["101", "1"]])) == []
    assert decode(v, message("delta", 103, [["100", "103"]], [])) == []
    assert decode(v, message("delta", 105, [["100", "105"]], [])) == []
    (book,) = decode(v, message("delta", 106, [["100", "106"]], []))
    assert (book.seq, book.bids) == (106, ((100.0, 106.0),))
    assert (port.gaps, port.resyncs, port.resync_requests) == ([], [], [])
    # Only the successor's first snapshot is taken for a trailing one; a later re-send resets.
    (reset,) = decode(v, message("snapshot", 104, [["95", "1"]], [["96", "1"]]))
    assert (reset.seq, reset.bids) == (104, ((95.0, 1.0),))


async def test_at_level_1_a_successor_trails_with_every_message_until_it_catches_up() -> None:
    v, port = venue(depth=1)
    for u in range(100, 106):
        decode(v, message("snapshot", u, [["100", str(u)]], [["101", "1"]], depth=1))
    v.handover(frozenset({"BTCUSDT"}))
    # Level 1 is snapshots only: all the successor held before the switch is older than the book.
    for u in range(102, 106):
        assert decode(v, message("snapshot", u, [["100", str(u)]], [["101", "1"]], depth=1)) == []
    (book,) = decode(v, message("snapshot", 106, [["100", "106"]], [["101", "1"]], depth=1))
    assert (book.seq, book.bids) == (106, ((100.0, 106.0),))
    assert top(v) == (((100.0, 106.0),), ((101.0, 1.0),))
    assert (port.gaps, port.resyncs) == ([], [])


async def test_level_1_handover_never_steps_the_book_back(autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10, max_connection_age=60.0) as sim:
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("publicTrade", "orderbook.1"),
                     **{**FAST, "max_connection_age": 20.0})
        async with running(feed, hub):
            await wait_until(lambda: feed.connect_count == 2 and len(hub.kinds("disconnect")) == 1)
            await trio.sleep(5.0)
            sim.pause()
            await wait_until(lambda: (b := feed.book("BTCUSDT")) is not None
                             and b.seq == sim.bybit_book("BTCUSDT").seq)
        seqs = [b.seq for b in hub.books()]
        assert len(seqs) > 100
        assert seqs == sorted(set(seqs))  # no step back, no repeat
        assert (feed.gaps, feed.resyncs, feed.errors) == (0, 0, 0)
        assert hub.kinds("disconnect")[0]["planned"] is True


def test_book_time_is_the_matching_engines_else_the_send_time() -> None:
    v, _ = venue()
    (with_cts,) = decode(v, message("snapshot", 100, [["100", "1"]], [], ts=1_700_000_000_100,
                                    cts=1_700_000_000_090))
    assert with_cts.exchange_ts_ns == 1_700_000_000_090 * MS
    (without,) = decode(v, message("delta", 101, [["100", "2"]], [], ts=1_700_000_000_200, cts=None))
    assert without.exchange_ts_ns == 1_700_000_000_200 * MS


async def test_a_re_sent_snapshot_resets_the_connectors_book(autojump_clock: trio.testing.MockClock) -> None:
    """End to end: the simulator re-sends an older book mid-stream; the connector follows it."""
    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        sim.set_bybit_book("BTCUSDT", 500, [["100", "1"]], [["101", "1"]])
        hub = RecordingHub()
        feed = Bybit(["BTCUSDT"], ws_url=sim.bybit_ws_url, channels=("orderbook.50",),
                     **{**FAST, "stale_timeout": 10_000.0})
        async with running(feed, hub):
            await wait_until(lambda: feed.book_synced("BTCUSDT") and len(hub.books()) == 1)
            await sim.play("bybit", [message("delta", 501, [["100", "3"]], [])])
            await wait_until(lambda: len(hub.books()) == 2)
            await sim.play("bybit", [message("snapshot", 7, [["90", "1"]], [["91", "1"]])])
            await wait_until(lambda: len(hub.books()) == 3)
            assert_same_book(feed.book("BTCUSDT"), sim.bybit_book("BTCUSDT"))
        assert [b.seq for b in hub.books()] == [500, 501, 7]
        assert (feed.resyncs, feed.gaps, feed.errors) == (1, 0, 0)
        assert feed.status().resyncs == 1
