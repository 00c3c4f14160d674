"""The engine contract of a connector: status snapshots, receive times from the engine's clock, composition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from cattrs import transform_error
from cattrs.errors import ClassValidationError

from flox_trio._core._clock import TrioClock
from flox_trio._core._convert import converter, to_jsonable
from flox_trio._core._status import FeedStatus
from flox_trio.connectors import (
    Binance,
    BinanceStatus,
    BookStatus,
    Bybit,
    Session,
    SessionOptions,
    SessionStatus,
)
from flox_trio.connectors._binance import BinanceVenue
from flox_trio.connectors._bybit import BybitVenue
from flox_trio.connectors._venue import Venue
from flox_trio.feeds import Feed
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, running, simulator, wait_until

VENUES = ["binance", "bybit"]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
# Far from today's Unix time, so a stamp from time.time_ns() could not pass for one from the clock.
EPOCH_NS = 10**15


def make(venue: str, sim: Simulator, **options: Any) -> Session:
    if venue == "binance":
        return Binance(list(SYMBOLS), ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       **{**FAST, **options})
    return Bybit(list(SYMBOLS), ws_url=sim.bybit_ws_url, **{**FAST, **options})


class TimedHub(RecordingHub):
    """Records the Trio time each batch was published at."""

    def __init__(self, watched: Sequence[str] = ()) -> None:
        super().__init__(watched)
        self.clock = TrioClock(epoch_ns=EPOCH_NS)
        self.published_at: list[float] = []

    async def publish(self, events: Sequence[Any]) -> None:
        self.published_at.append(trio.current_time())
        await super().publish(events)


@pytest.mark.parametrize("venue", VENUES)
async def test_status_is_a_typed_snapshot(venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = make(venue, sim)
        async with running(feed, hub):
            await wait_until(lambda: all(feed.book_synced(s) and len(hub.trades(s)) >= 5 for s in SYMBOLS))
            sim.pause()
            await wait_until(lambda: all(c.queued == 0 for c in sim.open_connections()))
            await trio.sleep(1.0)
            st = feed.status()
        assert type(st) is (BinanceStatus if venue == "binance" else SessionStatus)
        assert isinstance(st, FeedStatus)
        assert (st.feed, st.venue, st.url, st.state) == (type(feed).__name__, venue, feed.ws_url, "connected")
        assert st.channels == feed.channels and isinstance(st.channels, tuple)
        assert (st.connection_id, st.connect_count) == (feed.connection_id, 1)
        assert st.symbols == SYMBOLS and st.subscribed == SYMBOLS
        assert st.failing == {}
        assert set(st.books) == set(SYMBOLS)
        for s, b in st.books.items():
            book = feed.book(s)
            assert book is not None
            assert b == BookStatus(True, book.seq, book.depth())
        assert st.published == len(hub.events) > 0
        assert st.messages == feed.messages > 0
        assert st.last_message_age is not None and 1.0 <= st.last_message_age < 2.0
        assert (st.gaps, st.resyncs, st.errors, st.late_frames, st.last_error) == (0, 0, 0, 0, None)
        if isinstance(st, BinanceStatus):
            assert (st.book_syncs, st.stale_snapshots) == (2, 0)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            st.state = "idle"  # type: ignore[misc]
        after = feed.status()
        assert after.state == "stopped"


@pytest.mark.parametrize("venue", VENUES)
async def test_status_round_trips_through_the_converter(venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = RecordingHub()
        feed = make(venue, sim)
        before = feed.status()
        async with running(feed, hub):
            await wait_until(lambda: all(feed.book_synced(s) for s in SYMBOLS))
            sim.faults.reject_subscribe(venue, msg="Invalid request: service busy (simulated)")
            hub.watch("SOLUSDT")
            await wait_until(lambda: "SOLUSDT" in feed.failing)
            live = feed.status()
    for st in (before, live, feed.status()):
        data = converter.unstructure(st)
        assert data["kind"] == type(st).__name__
        assert converter.structure(data, FeedStatus) == st
        # And through JSON, as the control client reads it.
        assert converter.structure(orjson.loads(orjson.dumps(to_jsonable(st))), FeedStatus) == st
    assert before.state == "idle" and before.connection_id is None and before.books == {}
    assert live.failing.keys() == {"SOLUSDT"} and live.last_error is not None
    assert "SOLUSDT" in live.symbols


def test_an_unknown_state_is_refused_when_read_back() -> None:
    data = converter.unstructure(Bybit(["BTCUSDT"]).status())
    with pytest.raises(ClassValidationError) as info:
        converter.structure({**data, "state": "sleeping"}, FeedStatus)
    (message,) = transform_error(info.value)
    assert "sleeping not in literal" in message and message.endswith("@ $.state")


@pytest.mark.parametrize("venue", VENUES)
async def test_receive_times_come_from_the_engine_clock(venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(rate=10) as sim:
        hub = TimedHub()
        feed = make(venue, sim)
        assert feed.stamps_receive_time is True
        async with running(feed, hub):
            await wait_until(lambda: all(feed.book_synced(s) and len(hub.trades(s)) >= 5 for s in SYMBOLS))
        assert hub.batches
        # Every event, Binance's REST-synced books included, was stamped on the engine's
        # clock before it was published.
        for t, batch in zip(hub.published_at, hub.batches, strict=True):
            for ev in batch:
                assert EPOCH_NS <= ev.recv_ts_ns <= EPOCH_NS + int(t * 1e9)
        stamps = [ev.recv_ts_ns for ev in hub.events]
        assert stamps == sorted(stamps)


def test_venues_are_composed_into_sessions() -> None:
    feeds = [Binance(["BTCUSDT"]), Bybit(["BTCUSDT"])]
    for feed in feeds:
        assert isinstance(feed, Session) and isinstance(feed, Feed)
        assert feed.stamps_receive_time is True
    # The wire formats are objects of their own, held by the session, not base classes of it.
    assert not issubclass(Binance, BinanceVenue) and not issubclass(Bybit, BybitVenue)
    venues: list[Venue] = [
        BinanceVenue("wss://stream.binance.com:9443", "https://api.binance.com", ("trade",), SessionOptions()),
        BybitVenue("wss://stream.bybit.com/v5/public/spot", ("publicTrade",), SessionOptions()),
    ]
    assert [v.name for v in venues] == ["binance", "bybit"]
    assert venues[0].topics("BTCUSDT") == ["btcusdt@trade"]
    assert venues[1].topics("BTCUSDT") == ["publicTrade.BTCUSDT"]
    assert venues[0].ping_text(1) is None  # the server pings; the client answers protocol pings
    assert orjson.loads(venues[1].ping_text(1) or "") == {"req_id": "ping-1", "op": "ping"}


def test_an_option_that_no_longer_does_anything_says_so(caplog: pytest.LogCaptureFixture) -> None:
    SessionOptions()
    assert "message_queue_size" not in caplog.text
    SessionOptions(message_queue_size=32)
    assert "message_queue_size has no effect" in caplog.text
