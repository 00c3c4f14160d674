"""Recorded traffic played back: frames as they were sent, REST snapshots as they were served.

A recording is JSON lines, one record each, in the order they happened::

    {"venue": "binance" | "bybit", "frame": <the frame as sent: a string or an object>}
    {"venue": "binance", "rest": "/api/v3/depth?symbol=BTCUSDT&limit=1000", "response": <the body>}

A recorded depth snapshot is what the REST endpoint serves for its symbol:
from the start of the replay (the diffs played before it in the recording are
already in it), and moved on by every diff newer than it, as the venue's
book is. Playback waits for a client to subscribe to one of the recording's
streams, so a client that connects and subscribes sees the recording from its
start.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
import trio

from .._errors import ConfigError
from ._connection import Venue
from ._market import WireLevel

if TYPE_CHECKING:
    from ._server import Simulator

_VENUES: tuple[Venue, ...] = ("binance", "bybit")


@attrs.frozen
class RecordedFrame:
    """A frame as a venue sent it."""

    venue: Venue
    text: str
    #: Its stream (Binance) or topic (Bybit); "" for one every connection gets.
    key: str
    symbol: str


@attrs.frozen
class RecordedSnapshot:
    """A ``GET /api/v3/depth`` answer as Binance served it."""

    symbol: str
    last_update_id: int
    bids: tuple[tuple[str, str], ...]
    asks: tuple[tuple[str, str], ...]

    def levels(self) -> tuple[list[WireLevel], list[WireLevel]]:
        return [[p, q] for p, q in self.bids], [[p, q] for p, q in self.asks]


Record = RecordedFrame | RecordedSnapshot


@attrs.frozen
class Recording:
    """Records in the order they happened."""

    records: tuple[Record, ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol recorded, in order of first appearance."""
        return tuple(dict.fromkeys(r.symbol for r in self.records if r.symbol))

    @property
    def keys(self) -> frozenset[tuple[Venue, str]]:
        """The (venue, stream/topic) pairs the recorded frames belong to."""
        return frozenset((r.venue, r.key) for r in self.records if isinstance(r, RecordedFrame) and r.key)

    def first_snapshots(self) -> list[RecordedSnapshot]:
        """Each symbol's first recorded snapshot: the book the REST endpoint starts from."""
        first: dict[str, RecordedSnapshot] = {}
        for r in self.records:
            if isinstance(r, RecordedSnapshot):
                first.setdefault(r.symbol, r)
        return list(first.values())


def _frame(venue: Venue, frame: Any) -> RecordedFrame:
    text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return RecordedFrame(venue, text, "", "")
    if type(msg) is not dict:
        return RecordedFrame(venue, text, "", "")
    if venue == "binance":
        key = msg.get("stream", "")
        data = msg.get("data") if "stream" in msg else msg
        key = key if type(key) is str and not key.startswith("!") else ""
        sym = data.get("s") if type(data) is dict else None
        symbol = sym.upper() if type(sym) is str else key.partition("@")[0].upper()
        return RecordedFrame(venue, text, key, symbol)
    key = msg.get("topic", "")
    key = key if type(key) is str else ""
    return RecordedFrame(venue, text, key, key.rpartition(".")[2] if key else "")


def _snapshot(target: str, response: Any) -> RecordedSnapshot:
    parts = urlsplit(target)
    if parts.path != "/api/v3/depth":
        raise ValueError(f"only GET /api/v3/depth answers are replayed, not {parts.path}")
    symbol = parse_qs(parts.query).get("symbol", [""])[-1]
    if not symbol:
        raise ValueError(f"no symbol= in {target!r}")
    body = orjson.loads(response) if isinstance(response, str) else response
    if type(body) is not dict or type(body.get("lastUpdateId")) is not int:
        raise ValueError("the response is not a depth snapshot (no lastUpdateId)")

    def side(name: str) -> tuple[tuple[str, str], ...]:
        return tuple((str(p), str(q)) for p, q in body.get(name, ()))

    return RecordedSnapshot(symbol, body["lastUpdateId"], side("bids"), side("asks"))


def parse_record(rec: Mapping[str, Any]) -> Record:
    """One JSON-lines record; ValueError (or KeyError, TypeError) says what is wrong with it."""
    venue = rec["venue"]
    if venue not in _VENUES:
        raise ValueError(f"venue must be 'binance' or 'bybit', got {venue!r}")
    if "rest" in rec:
        if venue != "binance":
            raise ValueError("only Binance REST answers are replayed")
        return _snapshot(str(rec["rest"]), rec["response"])
    return _frame(venue, rec["frame"])


def load_recording(path: Path) -> Recording:
    """Read a JSON-lines recording (see the module docstring); ConfigError names the bad line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --replay file {path}: {exc}") from exc
    records: list[Record] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
            if type(rec) is not dict:
                raise TypeError("a record is a JSON object")
            records.append(parse_record(rec))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}:{n}: expected {{\"venue\": ..., \"frame\": ...}} or "
                              f"{{\"venue\": \"binance\", \"rest\": ..., \"response\": ...}} ({exc})") from exc
    if not any(isinstance(r, RecordedFrame) for r in records):
        raise ConfigError(f"--replay file {path} holds no frames")
    return Recording(tuple(records))


async def replay(sim: Simulator, recording: Recording, *, rate: float, loop: bool = False) -> None:
    """Play ``recording`` to ``sim``'s clients at ``rate`` frames a second (0: no pause between them).

    Each pass starts from the recording's first snapshots; the first waits
    until a client subscribes to one of the recorded streams.
    """
    period = 1.0 / rate if rate > 0 else 0.0
    wanted = recording.keys
    first = True
    while True:
        for snap in recording.first_snapshots():
            sim.set_binance_book(snap.symbol, snap.last_update_id, *snap.levels())
        if first and wanted:
            await sim.wait_subscribed_any(wanted)
        first = False
        for rec in recording.records:
            if isinstance(rec, RecordedSnapshot):
                # A later snapshot replaces the book only if it is newer: the book already
                # holds every diff the recording has played.
                book = sim.binance_books.get(rec.symbol)
                if book is None or rec.last_update_id > book.update_id:
                    sim.set_binance_book(rec.symbol, rec.last_update_id, *rec.levels())
                continue
            await sim.play(rec.venue, [rec.text])
            await trio.sleep(period)
        if not loop:
            return
