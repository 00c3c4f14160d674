"""Whole-market feeds: a session's symbols sharded over connections within the venue's limits.

A connection carries at most ``max_streams_per_connection`` streams (the
venue's limit by default); more symbols open more connections, each
supervised on its own, opened within the venue's connection budget. The
simulator serves a whole market (``symbols=N``: a few very active symbols, a
long quiet tail) and enforces the same limits, so a connector that broke
them would be refused there.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
import trio
import trio.testing

from flox_trio import Gap
from flox_trio.connectors import Binance, Bybit, ConnectionStatus, Session
from flox_trio.sim import Simulator

from .conftest import FAST, RecordingHub, running, simulator, wait_until

VENUES = ["binance", "bybit"]


def make(venue: str, sim: Simulator, symbols: list[str], **options: Any) -> Session:
    if venue == "binance":
        return Binance(symbols, ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url, channels=("trade",),
                       **{**FAST, **options})
    return Bybit(symbols, ws_url=sim.bybit_ws_url, channels=("publicTrade",), **{**FAST, **options})


def stream(venue: str, symbol: str) -> str:
    return f"{symbol.lower()}@trade" if venue == "binance" else f"publicTrade.{symbol}"


async def drained(sim: Simulator) -> None:
    """Stop the market and let every connection's outbox reach the client."""
    sim.pause()
    await wait_until(lambda: all(c.queued == 0 for c in sim.open_connections()))
    await trio.sleep(1.0)


@pytest.mark.parametrize("venue", VENUES)
async def test_500_symbols_over_several_connections_lose_nothing(venue: str,
                                                                 autojump_clock: trio.testing.MockClock) -> None:
    # Every symbol trades once a tick; the simulator refuses a connection past 64 streams.
    async with simulator(symbols=500, skew=0.0, rate=5, book=False, trades_per_tick=(1, 1),
                         max_streams=64) as sim:
        symbols = list(sim.symbols)
        hub = RecordingHub()
        feed = make(venue, sim, symbols, max_streams_per_connection=64)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == set(symbols))
            await trio.sleep(5.0)
            await drained(sim)
            st = feed.status()
        # ceil(500 / 64) connections, each opened once.
        assert feed.connections == 8 == len(sim.connections) == feed.connect_count
        assert hub.kinds("disconnect") == [] and st.errors == 0
        assert sim.over_connect_limit == 0
        carried = [c.subs for c in sim.connections]
        assert all(0 < len(subs) <= 64 for subs in carried)
        assert sum(len(subs) for subs in carried) == 500
        assert set().union(*carried) == {stream(venue, s) for s in symbols}
        for s in symbols:
            sent = sim.sent_trade_ids(venue, s)
            assert len(sent) >= 5
            assert hub.trade_ids(s) == sent
            if venue == "binance":  # consecutive per symbol: nothing skipped, nothing twice
                ids = [int(i) for i in hub.trade_ids(s)]
                assert ids == list(range(ids[0], ids[0] + len(ids)))
        assert not [e for e in hub.events if type(e) is Gap]
        assert st.streams_per_connection == 64
        assert [c.shard for c in st.connections] == list(range(8))
        for c in st.connections:
            assert type(c) is ConnectionStatus
            assert (c.state, c.connect_count, c.subscribed) == ("connected", 1, c.symbols)
            assert c.streams == c.symbols <= 64 and c.messages > 0
        assert sum(c.symbols for c in st.connections) == 500
        assert len({c.connection_id for c in st.connections}) == 8


@pytest.mark.parametrize("venue", VENUES)
async def test_symbols_added_and_removed_at_runtime_go_to_the_right_connection(
        venue: str, autojump_clock: trio.testing.MockClock) -> None:
    async with simulator(symbols=300, skew=0.0, rate=2, book=False, max_streams=64) as sim:
        universe = list(sim.symbols)
        hub = RecordingHub(universe[:130])
        feed = make(venue, sim, [], max_streams_per_connection=64)

        def carrier(symbol: str) -> int:
            """The simulator connection subscribed to ``symbol`` (its place in sim.connections); -1 for none."""
            hits = [i for i, c in enumerate(sim.connections) if c.open and stream(venue, symbol) in c.subs]
            assert len(hits) <= 1, f"{symbol} on connections {hits}"
            return hits[0] if hits else -1

        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == set(universe[:130]))
            assert feed.connections == 3 == len(sim.connections)
            first = {s: carrier(s) for s in universe[:130]}
            # Shards fill in symbol order: BTC, ETH, S0004... on the first, ..., S0130 and SOL on the third.
            one, three = first["BTCUSDT"], first["SOLUSDT"]
            assert len({one, first["S0066USDT"], three}) == 3
            # Ten leave the first connection: it alone is told, and the others stay where they are.
            gone = universe[10:20]
            kept = [s for s in universe[:130] if s not in gone]
            hub.watch(*kept)
            await wait_until(lambda: all(carrier(s) == -1 for s in gone))
            assert {first[s] for s in gone} == {one}
            # Fifteen come: the first ten into the first connection's room, the rest where there is room.
            new = universe[130:145]
            hub.watch(*kept, *new)
            await wait_until(lambda: feed.subscribed == {*kept, *new})
            assert [carrier(s) for s in new] == [one] * 10 + [three] * 5
            assert all(carrier(s) == first[s] for s in kept)
            assert len(sim.connections) == 3
            # A hundred and fifty-five more open two new connections; nobody moves.
            more = universe[145:]
            hub.watch(*kept, *new, *more)
            await wait_until(lambda: feed.subscribed == {*kept, *new, *more})
            assert feed.connections == len(sim.connections) == 5
            assert all(carrier(s) == first[s] for s in kept)
            assert all(len(c.subs) <= 64 for c in sim.connections)
            # One that left comes back: to the connection it left, which has room again.
            last = carrier(more[-1])
            hub.watch(*kept, *new, *more[:-1])
            await wait_until(lambda: carrier(more[-1]) == -1)
            hub.watch(*kept, *new, *more)
            await wait_until(lambda: carrier(more[-1]) != -1)
            assert carrier(more[-1]) == last not in (one, three)
            await drained(sim)
            st = feed.status()
        assert feed.connect_count == 5 and hub.kinds("disconnect") == []
        assert st.errors == 0 and st.failing == {}
        told = [i for i, c in enumerate(sim.connections) for text in c.received if "nsubscribe" in text.lower()]
        assert told == sorted([one, last])
        assert [c.symbols for c in st.connections] == [64, 64, 64, 64, 33 + 1]
        # Every symbol got, on its connection, what the simulator wrote from its subscription on.
        for s in [*kept, *new]:
            assert hub.trade_ids(s) == sim.sent_trade_ids(venue, s)


@pytest.mark.parametrize("venue", VENUES)
async def test_quiet_symbols_in_the_tail_do_not_trip_the_watchdog(venue: str,
                                                                   autojump_clock: trio.testing.MockClock) -> None:
    # Zipf with skew 1.5: the last connection's 100 symbols move about once a minute between them.
    async with simulator(symbols=300, skew=1.5, rate=10, book=False, ping_interval=20.0) as sim:
        symbols = list(sim.symbols)
        hub = RecordingHub()
        feed = make(venue, sim, symbols, max_streams_per_connection=100, stale_timeout=5.0)
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == set(symbols))
            await trio.sleep(600.0)
            await drained(sim)
            st = feed.status()
        assert st.connect_count == 3 == len(sim.connections)
        assert hub.kinds("disconnect") == [] and st.errors == 0
        # The tail was quiet for longer than stale_timeout, many times: the watchdog pinged, the pong kept it.
        assert feed._supervisor.probes >= 10
        quiet = symbols[200:]
        assert 0 < sum(len(sim.sent_trade_ids(venue, s)) for s in quiet) < 600
        busy = symbols[0]
        assert len(sim.sent_trade_ids(venue, busy)) > 5000
        for s in symbols:
            assert hub.trade_ids(s) == sim.sent_trade_ids(venue, s)


async def test_connections_open_paced_within_the_connect_budget(autojump_clock: trio.testing.MockClock) -> None:
    # One stream per connection: 40 connections against a budget of 12 connections in 5 minutes,
    # which the simulator enforces too (a 41st attempt in the window would be refused with 429).
    async with simulator(symbols=40, skew=0.0, rate=None, book=False,
                         connect_limits={"binance": (12, 300.0)}) as sim:
        symbols = list(sim.symbols)
        hub = RecordingHub()
        feed = make("binance", sim, symbols, max_streams_per_connection=1, connect_budget=12,
                    stale_timeout=10_000.0)
        t0 = trio.current_time()
        async with running(feed, hub):
            await wait_until(lambda: feed.subscribed == set(symbols), timeout=2000.0, step=1.0)
            assert feed.status().connects_in_window <= 12
        opened = [t - t0 for t in hub.times("connect")]
        assert len(opened) == 40 == feed.connect_count == len(sim.connections)
        assert sim.over_connect_limit == 0 and hub.kinds("error") == []
        for i, t in enumerate(opened):
            assert sum(1 for u in opened[i:] if u < t + 300.0) <= 12
        # A burst of one, then one every 25 s (300 s / 12): paced, not 12 at once and then a wait.
        assert opened[0] == 0.0
        assert all(b - a >= 25.0 - 1e-6 for a, b in itertools.pairwise(opened))


def test_streams_per_connection_and_the_connect_budget_stay_within_the_venue() -> None:
    from flox_trio._errors import ConfigError

    assert Binance(["BTCUSDT"]).streams_per_connection == 1024
    assert Bybit(["BTCUSDT"]).streams_per_connection == 2000
    assert Binance(["BTCUSDT"], max_streams_per_connection=10).streams_per_connection == 10
    cases: list[tuple[type[Session], dict[str, Any], str]] = [
        (Binance, {"max_streams_per_connection": 2000},
         "Binance connector option max_streams_per_connection must be at most 1024 (the venue's streams per "
         "connection), got 2000"),
        (Binance, {"max_streams_per_connection": 2},
         "Binance connector option max_streams_per_connection (2) must be at least the streams of one symbol "
         "(3, one per channel)"),
        (Binance, {"max_streams_per_connection": 0},
         "connector option max_streams_per_connection must be a number > 0, got 0"),
        (Binance, {"max_streams_per_connection": 10.5},
         "connector option max_streams_per_connection must be an int, got 10.5"),
        (Bybit, {"connect_budget": 501},
         "Bybit connector option connect_budget must be at most 500 (the venue's connections per 300 s), got 501"),
        (Bybit, {"connect_budget": True}, "connector option connect_budget must be a number > 0, got True"),
    ]
    for feed, options, message in cases:
        with pytest.raises(ConfigError) as info:
            feed(["BTCUSDT"], **options)
        assert str(info.value) == message
        assert "\n" not in str(info.value)


async def test_status_shows_a_row_per_connection(autojump_clock: trio.testing.MockClock) -> None:
    # `flox-trio status` reads the status as JSON over the control socket: go the same way.
    from rich.console import Console
    from rich.table import Table

    import flox_trio as flox
    from flox_trio._core._convert import to_jsonable
    from flox_trio.cli._control import feed_line, read_status, render_status

    async with simulator(symbols=6, skew=0.0, rate=5, book=False, trades_per_tick=(1, 1)) as sim:
        feed = make("binance", sim, list(sim.symbols), max_streams_per_connection=2)
        with trio.CancelScope() as scope:
            async with flox.open_runner(feed, drain=False) as runner:
                await wait_until(lambda: len(feed.subscribed) == 6)
                await trio.sleep(2.0)
                status = read_status(to_jsonable(runner.status()))
                scope.cancel()
    parts = render_status(status)
    tables = {t.title: t for t in parts if isinstance(t, Table)}
    assert list(tables) == ["slots", "feed", "connections", "executor"]
    shards = tables["connections"]
    assert shards.row_count == 3
    out = Console(width=160, record=True, file=io.StringIO())
    out.print(shards)
    text = out.export_text()
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in text.splitlines()
            if line.startswith("│")]
    # shard, state, connection id, connects, symbols, streams, subscribed, messages, last message
    assert [(r[0], r[1], r[3], r[4], r[6]) for r in rows] == [(str(i), "connected", "1", "2", "2") for i in range(3)]
    assert len({r[2] for r in rows}) == 3 and all(r[2].isdigit() for r in rows)  # each shard its own connection
    assert all(int(r[7]) > 0 and r[8].endswith("s ago") for r in rows)
    feed_keys = tables["feed"].columns[0]._cells
    assert "connections" not in feed_keys  # no longer one long JSON cell
    assert "3 of 3 connections up" in str(feed_line(status))
