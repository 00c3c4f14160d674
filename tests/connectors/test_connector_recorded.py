"""Real recorded Binance and Bybit traffic through the venue decoders, checked field by field.

The frames come from ``../shared/ext-data`` (``SOURCES.json`` there says where
each was captured). Trades and Bybit books go straight through the venue
objects (a venue only knows its wire format, so it runs without a
connection); the Binance depth book needs its REST snapshot, so it is played
by the simulator against a whole connector, with the recorded snapshot as the
one the REST endpoint serves.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from flox_trio import Book, Trade
from flox_trio.connectors import Binance, SessionOptions
from flox_trio.connectors._binance import BinanceVenue
from flox_trio.connectors._bybit import BybitVenue

from .conftest import (
    FAST,
    RecordingHub,
    RecordingLink,
    RecordingPort,
    running,
    simulator,
    wait_until,
)

EXT = Path(__file__).resolve().parents[2] / ".." / "shared" / "ext-data"
pytestmark = pytest.mark.skipif(not EXT.is_dir(), reason=f"recorded traffic not found at {EXT}")
MS = 1_000_000
RECV_NS = 1_723_161_254_000_000_000


def hftbacktest_frames(name: str, lines: int) -> list[str]:
    """``<local_ns> <frame>`` lines of an hftbacktest capture, the frames as received."""
    with gzip.open(EXT / name, "rt") as f:
        return [next(f).rstrip("\n").partition(" ")[2] for _ in range(lines)]


def binance_venue(*symbols: str, channels: tuple[str, ...]) -> tuple[BinanceVenue, RecordingPort]:
    venue = BinanceVenue("wss://stream.binance.com:9443", "https://api.binance.com", channels, SessionOptions())
    port = RecordingPort(symbols)
    venue.bind(port)
    venue.symbols_changed(frozenset(symbols), frozenset())
    return venue, port


def bybit_venue(*symbols: str, channels: tuple[str, ...]) -> tuple[BybitVenue, RecordingPort]:
    venue = BybitVenue("wss://stream.bybit.com/v5/public/spot", channels, SessionOptions())
    port = RecordingPort(symbols)
    venue.bind(port)
    venue.symbols_changed(frozenset(symbols), frozenset())
    return venue, port


def expected_trade(venue: str, symbol: str, raw: dict[str, Any], trade_id: str, side: str, qty: str) -> Trade:
    return Trade(symbol, float(raw["p"]), float(raw[qty]), side, trade_id,  # type: ignore[arg-type]
                 raw["T"] * MS, RECV_NS, venue)


class PlainBook:
    """A reference book from the venue docs' rules alone: qty 0 deletes, anything else sets."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def reset(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids, self.asks = {}, {}
        self.apply(bids, asks)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)

    def top(self) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
        return (tuple(sorted(self.bids.items(), reverse=True)), tuple(sorted(self.asks.items())))


# --- Binance --------------------------------------------------------------------------------------


def test_recorded_binance_trades_and_tickers() -> None:
    frames = [f for f in hftbacktest_frames("binance_spot_btcusdt_20240808.hftbacktest.gz", 1500)
              if '"stream"' in f and "@depth" not in f]
    frames += [json.dumps(json.loads((EXT / n).read_text())) for n in (
        "binance_nautilus_ws_spot_trade.json", "binance_nautilus_ws_spot_agg_trade.json",
        "binance_nautilus_ws_spot_ticker_book.json")]
    venue, port = binance_venue("BTCUSDT", "ETHUSDT", channels=("trade", "aggTrade", "bookTicker"))
    link = RecordingLink()
    trades = tickers = 0
    last_u: dict[str, int] = {}
    for text in frames:
        frame = json.loads(text)
        stream, raw = frame["stream"], frame["data"]
        events = venue.decode(link, text, RECV_NS)
        symbol = stream.split("@")[0].upper()
        if stream.endswith(("@trade", "@aggTrade")):
            trades += 1
            tid = raw["t"] if stream.endswith("@trade") else raw["a"]
            side = "sell" if raw["m"] else "buy"  # m: the buyer was the maker, so the taker sold
            assert events == [expected_trade("binance", symbol, raw, str(tid), side, "q")]
        else:
            # No depth channel: each newer ticker is the one-level top of book, older ones nothing.
            u = raw["u"]
            if u <= last_u.get(symbol, 0):
                assert events == []
                continue
            last_u[symbol] = u
            tickers += 1
            assert events == [Book(symbol, ((float(raw["b"]), float(raw["B"])),), ((float(raw["a"]), float(raw["A"])),),
                                   0, RECV_NS, "binance", u)]
    assert trades > 100 and tickers > 100
    assert port.errors == [] and port.late_frames == 0


async def test_recorded_binance_depth_syncs_to_the_recorded_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    """The capture's own REST snapshot and diffs: the synced book is the snapshot plus every later diff."""
    lines = hftbacktest_frames("binance_spot_btcusdt_20240808.hftbacktest.gz", 3000)
    (snapshot,) = [json.loads(f) for f in lines if f.startswith('{"lastUpdateId"')]
    frames = [f for f in lines if '"stream"' in f]
    diffs = [json.loads(f)["data"] for f in frames if "@depth@100ms" in f]
    trades = [json.loads(f)["data"] for f in frames if "@trade" in f]
    # The reference: steps 5-7 of "How to manage a local order book correctly".
    ref, seq = PlainBook(), snapshot["lastUpdateId"]
    ref.reset(snapshot["bids"], snapshot["asks"])
    applied = 0
    for d in diffs:
        if d["u"] <= seq:
            continue
        assert d["U"] <= seq + 1  # the capture has no gap
        ref.apply(d["b"], d["a"])
        seq = d["u"]
        applied += 1
    assert applied > 200 and diffs[0]["U"] <= snapshot["lastUpdateId"]  # diffs from before the snapshot too

    async with simulator(generate=False, rate=None, symbols=["BTCUSDT"]) as sim:
        sim.set_binance_book("BTCUSDT", snapshot["lastUpdateId"], snapshot["bids"], snapshot["asks"])
        hub = RecordingHub()
        feed = Binance(["BTCUSDT"], ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url,
                       **{**FAST, "stale_timeout": 10_000.0})
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == {"BTCUSDT"})
            # The REST endpoint keeps serving the recorded snapshot, whenever it is asked.
            await sim.play("binance", frames, update_books=False)
            await wait_until(lambda: (b := feed.book("BTCUSDT")) is not None and b.seq == seq)
        book = feed.book("BTCUSDT")
        assert book is not None and feed.book_synced("BTCUSDT")
        assert book.top(10**6) == ref.top()
        assert (feed.book_syncs, feed.stale_snapshots, feed.gaps, feed.errors) == (1, 0, 0, 0)
        assert sim.rest_requests == [("BTCUSDT", snapshot["lastUpdateId"], False)]
        assert [t.trade_id for t in hub.trades()] == [str(t["t"]) for t in trades]
        assert [t.exchange_ts_ns for t in hub.trades()] == [t["T"] * MS for t in trades]
        # One book for the sync (the diffs buffered meanwhile included), then one per later
        # diff, in update order, ending at the last one.
        depth_books = [b for b in hub.books() if b.exchange_ts_ns]
        seqs = [b.seq for b in depth_books]
        assert 2 <= len(depth_books) <= applied + 1
        assert seqs == sorted(set(seqs)) and seqs[-1] == seq
        assert depth_books[-1].exchange_ts_ns == diffs[-1]["E"] * MS


# --- Bybit ----------------------------------------------------------------------------------------


def bybit_lines(name: str) -> list[str]:
    return [line for line in (EXT / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("source", "symbols"), [
    ("bybit_spot_open_trader.jsonl", ("BTCUSDC",)), ("bybit_spot_rbot.jsonl", ("BTCUSDT",)),
])
def test_recorded_bybit_trades(source: str, symbols: tuple[str, ...]) -> None:
    frames = [f for f in bybit_lines(source) if '"publicTrade.' in f]
    venue, port = bybit_venue(*symbols, channels=("publicTrade",))
    link = RecordingLink()
    seen = 0
    for text in frames:
        frame = json.loads(text)
        events = venue.decode(link, text, RECV_NS)
        assert events == [expected_trade("bybit", t["s"], t, t["i"], t["S"].lower(), "v") for t in frame["data"]]
        seen += len(frame["data"])
    assert seen >= 2 and seen > len(frames) - 1
    assert port.errors == []


def test_recorded_bybit_subscribe_acks_answer_the_oldest_request() -> None:
    venue, port = bybit_venue("BTCUSDT", channels=("publicTrade",))
    link = RecordingLink()
    for source in ("bybit_spot_open_trader.jsonl", "bybit_spot_rbot.jsonl"):
        for text in bybit_lines(source):
            if '"op":"subscribe"' in text:
                assert venue.decode(link, text, RECV_NS) is None
    # Spot acks carry no req_id: each is matched to the oldest pending subscribe.
    assert link.replies == [(None, True, "Bybit: subscribe", "subscribe")] * 3
    assert port.errors == []


@pytest.mark.parametrize(("source", "depth", "symbol"), [
    ("bybit_spot_open_trader.jsonl", 50, "BTCUSDT"),
    ("bybit_spot_rbot.jsonl", 200, "BTCUSDT"),
    ("bybit_linear_xrpusdt_ob500_20241201.nautilus.zip", 500, "XRPUSDT"),
])
def test_recorded_bybit_books(source: str, depth: int, symbol: str) -> None:
    if source.endswith(".zip"):
        with zipfile.ZipFile(EXT / source) as z:
            lines = z.read(z.namelist()[0]).decode().splitlines()
        # Linear depth 500 of December 2024 is depth 1000 today; the messages are the same.
        lines = [line.replace('"orderbook.500.', '"orderbook.1000.') for line in lines]
        depth = 1000
    else:
        lines = [f for f in bybit_lines(source) if '"orderbook.' in f]
    venue, port = bybit_venue(symbol, channels=(f"orderbook.{depth}",))
    link = RecordingLink()
    ref = PlainBook()
    published: list[Book] = []
    for text in lines:
        frame = json.loads(text)
        data = frame["data"]
        if frame["type"] == "snapshot":
            ref.reset(data["b"], data["a"])
        else:
            ref.apply(data["b"], data["a"])
        events = venue.decode(link, text, RECV_NS)
        assert events is not None and len(events) == 1
        (book,) = events
        assert type(book) is Book
        # cts (the matching engine's time, the clock of trades' T), not ts (when it was sent).
        assert frame["cts"] != frame["ts"]
        assert book.exchange_ts_ns == frame["cts"] * MS
        assert (book.symbol, book.seq, book.venue, book.recv_ts_ns) == (symbol, data["u"], "bybit", RECV_NS)
        bids, asks = ref.top()
        assert (book.bids, book.asks) == (bids[:20], asks[:20])
        published.append(book)
    state = venue.books[symbol]
    assert state.synced
    assert state.book.top(10**6) == ref.top()
    assert state.book.seq == json.loads(lines[-1])["data"]["u"]
    assert len(published) == len(lines) >= 2
    assert (port.errors, port.gaps, port.resyncs, port.resync_requests) == ([], [], [], [])
