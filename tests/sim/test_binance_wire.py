"""Binance as the simulator serves it, held against real Binance traffic and the venue's docs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import trio
import trio.testing

from flox_trio.sim import DEFAULT_SYMBOLS, Simulator, SymbolSpec, open_simulator

from ..connectors.conftest import ws_client
from .conftest import (
    cryptofeed_binance_rest,
    cryptofeed_binance_ws,
    decimals_of,
    ext_data,
    hftbacktest_binance,
)

OPTIONS: dict[str, Any] = {"seed": 7, "start_ms": 1_700_000_000_000, "rate": None}
STREAMS = ("trade", "aggTrade", "depth@100ms", "bookTicker", "kline_1s")


def numbers(payload: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(payload kind, price or quantity string) of one Binance payload or REST depth body."""
    if "lastUpdateId" in payload:
        for p, q in payload["bids"] + payload["asks"]:
            yield from (("rest depth", p), ("rest depth", q))
    elif payload.get("e") == "depthUpdate":
        for p, q in payload["b"] + payload["a"]:
            yield from (("depthUpdate", p), ("depthUpdate", q))
    elif payload.get("e") in ("trade", "aggTrade"):
        yield from ((payload["e"], payload["p"]), (payload["e"], payload["q"]))
    elif payload.get("e") == "kline":
        yield from (("kline", payload["k"][f]) for f in "ochlvqVQ")  # not "B": "Ignore"
    elif "u" in payload and "b" in payload:
        yield from (("bookTicker", payload[f]) for f in "bBaA")


def decimals_by_kind(payloads: list[dict[str, Any]]) -> dict[str, set[int | None]]:
    out: dict[str, set[int | None]] = {}
    for payload in payloads:
        for kind, text in numbers(payload):
            out.setdefault(kind, set()).add(decimals_of(text))
    return out


def recorded_payloads() -> list[dict[str, Any]]:
    """Every Binance payload and REST depth body recorded in ../shared/ext-data."""
    out = [orjson.loads(frame)["data"] for _, frame in cryptofeed_binance_ws()]
    out += [orjson.loads(body) for _, _, body in cryptofeed_binance_rest()]
    out += [m.get("data", m) for m in hftbacktest_binance()]
    for name in ("binance_nautilus_ws_spot_trade.json", "binance_nautilus_ws_spot_agg_trade.json",
                 "binance_nautilus_ws_spot_ticker_book.json"):
        out.append(orjson.loads(ext_data(name).read_bytes())["data"])
    return out


async def generated_payloads(sim: Simulator, symbol: str = "btcusdt") -> list[dict[str, Any]]:
    """What the simulator sends on every Binance stream of ``symbol`` over 60 steps, and its REST depth."""
    url = f"{sim.binance_ws_url}/stream?streams=" + "/".join(f"{symbol}@{s}" for s in STREAMS)
    async with ws_client(url) as ws:
        for _ in range(60):
            await sim.tick()
            await trio.sleep(0.1)  # klines close at each second
        conn = sim.connections[-1]
        frames = [orjson.loads(await ws.get_message()) for _ in range(conn.sent)]
    async with httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        rest = (await http.get("/api/v3/depth", params={"symbol": symbol.upper(), "limit": 1000})).json()
    return [f["data"] for f in frames] + [rest]


async def test_every_price_and_quantity_has_the_venues_eight_decimals(
        autojump_clock: trio.testing.MockClock) -> None:
    recorded = decimals_by_kind(recorded_payloads())
    # The real venue: 8 decimals everywhere, in 2021 and 2024 captures alike.
    assert recorded == {kind: {8} for kind in
                        ("depthUpdate", "bookTicker", "kline", "aggTrade", "trade", "rest depth")}
    async with open_simulator(**OPTIONS) as sim:
        generated = decimals_by_kind(await generated_payloads(sim))
    assert generated == recorded


class PythonBinanceDepthCache:
    """A book kept the way python-binance's DepthCache keeps it (binance/depthcache.py).

    Levels are keyed by the price string as received, and a level is deleted
    only when its quantity is the string ``"0.00000000"``: any other spelling
    of zero leaves a level of quantity 0.0 behind.
    """

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.last_update_id = snapshot["lastUpdateId"]
        self.bids: dict[str, float] = {}
        self.asks: dict[str, float] = {}
        self._apply(snapshot["bids"], snapshot["asks"])

    def _apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for levels, side in ((bids, self.bids), (asks, self.asks)):
            for price, qty in levels:
                side[price] = float(qty)
                if qty == "0.00000000":
                    del side[price]

    def depth_event(self, msg: dict[str, Any]) -> None:
        if msg["u"] <= self.last_update_id:
            return
        self._apply(msg["b"], msg["a"])
        self.last_update_id = msg["u"]

    def top(self) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
        bids = sorted(((float(p), q) for p, q in self.bids.items()), reverse=True)
        asks = sorted((float(p), q) for p, q in self.asks.items())
        return tuple(bids), tuple(asks)


async def test_a_python_binance_depth_cache_stays_equal_to_the_book(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(**OPTIONS) as sim, \
            ws_client(f"{sim.binance_ws_url}/ws/ethusdt@depth@100ms") as ws, \
            httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        await sim.tick(5)
        await trio.testing.wait_all_tasks_blocked()
        buffered = [orjson.loads(await ws.get_message()) for _ in range(sim.connections[0].sent)]
        snapshot = (await http.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 5000})).json()
        cache = PythonBinanceDepthCache(snapshot)
        for msg in buffered:
            cache.depth_event(msg)
        seen = len(buffered)
        for _ in range(20):
            await sim.tick(20)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(sim.connections[0].sent - seen):
                cache.depth_event(orjson.loads(await ws.get_message()))
            seen = sim.connections[0].sent
            book = sim.binance_book("ETHUSDT")
            assert cache.last_update_id == book.seq
            assert cache.top() == (book.bids, book.asks)


async def test_rest_depth_clamps_limits_above_5000(autojump_clock: trio.testing.MockClock) -> None:
    docs = ext_data("binance-docs_rest-api.md").read_text()
    assert "Default: 100; Maximum: 5000. <br/> If limit > 5000, only 5000 entries will be returned." in docs
    levels = 6000
    async with open_simulator(**OPTIONS) as sim, httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        sim.set_binance_book("BTCUSDT", 1027024,
                             [[f"{40000 - i * 0.01:.8f}", "1.00000000"] for i in range(levels)],
                             [[f"{40001 + i * 0.01:.8f}", "2.00000000"] for i in range(levels)])
        for limit, served in ((6000, 5000), (5001, 5000), (99_999_999_999, 5000), (5000, 5000), (1000, 1000),
                              (None, 100), (1, 1)):
            params: dict[str, Any] = {"symbol": "BTCUSDT"} if limit is None else {"symbol": "BTCUSDT", "limit": limit}
            r = await http.get("/api/v3/depth", params=params)
            assert r.status_code == 200, (limit, r.text)
            body = r.json()
            assert body["lastUpdateId"] == 1027024
            assert len(body["bids"]) == len(body["asks"]) == served
            assert body["bids"][0] == ["40000.00000000", "1.00000000"]
            assert body["asks"][0] == ["40001.00000000", "2.00000000"]
        for bad in ("-1", "abc", "0", "1.5"):
            r = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": bad})
            assert (r.status_code, r.json()["code"]) == (400, -1100)


def documented(section: str) -> Any:
    """The response example of a section of the REST docs, as JSON (comments and trailing commas removed)."""
    docs = ext_data("binance-docs_rest-api.md").read_text()
    after = docs[docs.index(section):]
    block = after[after.index("**Response:**"):]
    text = block[block.index("```javascript") + len("```javascript"):]
    text = text[:text.index("```")]
    text = re.sub(r"//[^\n]*", "", text)
    return orjson.loads(re.sub(r",(\s*[\]}])", r"\1", text))


async def test_exchange_info_lists_the_simulated_symbols_as_the_venue_does(
        autojump_clock: trio.testing.MockClock) -> None:
    doc = documented("### Exchange information")
    specs = {s.symbol: s for s in (*DEFAULT_SYMBOLS, SymbolSpec("ABCBTC", 12.5, tick=0.5, lot=1.0))}
    async with open_simulator(**OPTIONS, symbols=list(specs.values())) as sim, \
            httpx.AsyncClient(base_url=sim.binance_rest_url) as http:
        r = await http.get("/api/v3/exchangeInfo")
        assert r.status_code == 200
        info = r.json()
        assert set(doc) - {"sors"} <= set(info)  # "sors": "Present only when SOR is available."
        assert info["timezone"] == "UTC"
        assert sim.start_ms <= info["serverTime"] <= sim.now_ms()
        assert {limit["rateLimitType"] for limit in info["rateLimits"]} == {"REQUEST_WEIGHT", "ORDERS", "RAW_REQUESTS"}
        assert [s["symbol"] for s in info["symbols"]] == list(specs)
        for entry in info["symbols"]:
            assert set(doc["symbols"][0]) <= set(entry)
            spec = specs[entry["symbol"]]
            assert entry["status"] == "TRADING"
            assert entry["baseAsset"] + entry["quoteAsset"] == spec.symbol
            assert entry["quoteAsset"] == ("BTC" if spec.symbol == "ABCBTC" else "USDT")
            assert entry["baseAssetPrecision"] == entry["quoteAssetPrecision"] == 8
            filters = {f["filterType"]: f for f in entry["filters"]}
            # cryptofeed reads the tick size as filters[0]["tickSize"].
            assert entry["filters"][0]["filterType"] == "PRICE_FILTER"
            tick, step = Decimal(filters["PRICE_FILTER"]["tickSize"]), Decimal(filters["LOT_SIZE"]["stepSize"])
            assert (tick, step) == (Decimal(repr(spec.tick)), Decimal(repr(spec.lot)))
            assert {"NOTIONAL", "LOT_SIZE", "MARKET_LOT_SIZE"} <= set(filters)
            assert all(decimals_of(v) == 8 for f in entry["filters"] for k, v in f.items()
                       if k.endswith(("Price", "Qty", "Size", "Notional")))
            # The book's prices and sizes obey the filters the venue publishes.
            book = sim.binance_book(spec.symbol)
            for price, qty in book.bids + book.asks:
                assert Decimal(repr(price)) % tick == 0
                assert Decimal(filters["PRICE_FILTER"]["minPrice"]) <= Decimal(repr(price)) \
                    <= Decimal(filters["PRICE_FILTER"]["maxPrice"])
                assert Decimal(repr(qty)) % step == 0

        async def listed(**params: str) -> list[str]:
            r = await http.get("/api/v3/exchangeInfo", params=params)
            assert r.status_code == 200, r.text
            return [s["symbol"] for s in r.json()["symbols"]]

        async def refused(**params: str) -> int:
            r = await http.get("/api/v3/exchangeInfo", params=params)
            assert r.status_code == 400
            code: int = r.json()["code"]
            return code

        assert await listed(symbol="ETHUSDT") == ["ETHUSDT"]
        assert await listed(symbols='["SOLUSDT","BTCUSDT"]') == ["SOLUSDT", "BTCUSDT"]
        assert await listed(permissions="SPOT") == list(specs)
        assert await listed(permissions='["MARGIN","LEVERAGED"]') == []
        assert await listed(symbolStatus="TRADING") == list(specs)
        assert await listed(symbolStatus="HALT") == []
        assert await refused(symbol="NOPEUSDT") == -1121
        assert await refused(symbols='["BTCUSDT","NOPEUSDT"]') == -1121
        assert await refused(symbols="BTCUSDT") == -1100
        assert await refused(symbol="btcusdt") == -1100
        assert await refused(symbols='["BTCUSDT","BTCUSDT"]') == -1151
        assert await refused(symbol="BTCUSDT", permissions="SPOT") == -1128
        assert await refused(symbolStatus="SLEEPING") == -1122
        r = await http.get("/api/v3/exchangeInfo", params={"symbol": "BTCUSDT", "showPermissionSets": "false"})
        assert r.json()["symbols"][0]["permissionSets"] == []


async def test_stamped_frames_carry_their_write_time_and_every_other_field(
        autojump_clock: trio.testing.MockClock) -> None:
    """``stamp=True`` (latency benchmarks) renders a trade's fields once and sets E and T when it is written:
    frames queued together go out in one write, with the one time it started, after all were rendered."""
    import time

    async with open_simulator(**{**OPTIONS, "stamp": True}) as stamping, open_simulator(**OPTIONS) as sim:
        frames = []
        for s in (stamping, sim):
            async with ws_client(f"{s.binance_ws_url}/stream?streams=btcusdt@trade&timeUnit=MICROSECOND") as ws:
                await s.wait_subscribed("binance", "btcusdt@trade")
                if s is stamping:
                    before = time.time_ns() // 1000
                await s.tick(20)
                frames.append([orjson.loads(await ws.get_message()) for _ in range(5)])
                if s is stamping:
                    after = time.time_ns() // 1000
        assert len({f["data"]["E"] for f in frames[0]}) == 1
        for stamped, plain in zip(*frames, strict=True):
            data = stamped["data"]
            assert before <= data["E"] == data["T"] <= after
            assert {k: v for k, v in data.items() if k not in "ET"} == \
                {k: v for k, v in plain["data"].items() if k not in "ET"}
            assert stamped["stream"] == plain["stream"] == "btcusdt@trade"


def test_prices_and_sizes_read_the_same_from_the_text_cache_and_past_its_bound() -> None:
    # The simulator renders each price and size once; past the cache's bound it starts over.
    from flox_trio.sim._binance import _TEXTS_MAX, _Units

    units = _Units(SymbolSpec("BTCUSDT", 65_000.0, tick=0.01, lot=0.00001))
    for _ in range(2):
        for n in (*range(1, _TEXTS_MAX + 50), 7):
            assert Decimal(units.price(n)) == Decimal(n) * Decimal("0.01")
            assert Decimal(units.qty(n)) == Decimal(n) * Decimal("0.00001")
    assert units.price(6_500_012) == "65000.12000000" and units.qty(35_130) == "0.35130000"
