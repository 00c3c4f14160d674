"""The simulator's own tests: real recorded venue traffic to hold the simulator's output against.

The recordings live in ``../shared/ext-data`` next to the repository (see its
SOURCES.json for where each came from); they are read in place, never copied.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import orjson

EXT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "ext-data"

# cryptofeed's capture: '<receive time>: <frame>' (after a '<url> <-> <time>' line per connection)
# and '<url> -> <receive time>: <body>' for each REST answer.
_CRYPTOFEED_WS = re.compile(r"(\d+\.\d+): (\{.*\})")
_CRYPTOFEED_HTTP = re.compile(r"(\S+) -> (\d+\.\d+): (\{.*\})")


def ext_data(name: str) -> Path:
    path = EXT_DATA / name
    assert path.exists(), f"{path} is missing: the recorded venue data lives in ../shared/ext-data"
    return path


def cryptofeed_binance_ws() -> list[tuple[float, str]]:
    """(receive time, frame) of the 2021 cryptofeed Binance capture."""
    out = []
    for line in ext_data("binance_spot_2021.cryptofeed.ws.txt").read_text().splitlines():
        m = _CRYPTOFEED_WS.fullmatch(line)
        if m:
            out.append((float(m[1]), m[2]))
    return out


def cryptofeed_binance_rest() -> list[tuple[float, str, str]]:
    """(receive time, URL, body) of the REST depth snapshots taken during that capture."""
    out = []
    for line in ext_data("binance_spot_2021.cryptofeed.http.txt").read_text().splitlines():
        m = _CRYPTOFEED_HTTP.fullmatch(line)
        if m:
            out.append((float(m[2]), m[1], m[3]))
    return out


def hftbacktest_binance(name: str = "binance_spot_btcusdt_20240808.hftbacktest.gz") -> list[Any]:
    """The decoded messages of an hftbacktest Binance capture ('<local ns> <message>' lines)."""
    with gzip.open(ext_data(name), "rt") as f:
        return [orjson.loads(line.split(" ", 1)[1]) for line in f if line.strip()]


def jsonl(name: str) -> list[Any]:
    return [orjson.loads(line) for line in ext_data(name).read_text().splitlines() if line.strip()]


def cryptofeed_recording(path: Path) -> Path:
    """The cryptofeed capture as a ``--replay`` recording: frames and REST answers merged in time order."""
    records: list[tuple[float, dict[str, Any]]] = [
        (t, {"venue": "binance", "frame": frame}) for t, frame in cryptofeed_binance_ws()]
    for t, url, body in cryptofeed_binance_rest():
        records.append((t, {"venue": "binance", "rest": url, "response": orjson.loads(body)}))
    records.sort(key=lambda tr: tr[0])
    path.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for _, rec in records))
    return path


def decimals_of(text: str) -> int | None:
    """How many decimals a number string has (None: an integer without a point)."""
    whole, dot, frac = text.partition(".")
    assert whole.isdigit() and (not dot or frac.isdigit()), f"not a plain decimal: {text!r}"
    return len(frac) if dot else None
