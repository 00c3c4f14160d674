from __future__ import annotations

from pathlib import Path

import pytest

import flox_trio as flox

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js_strategies"
BASE_NS = 1_700_000_000_000_000_000


def trades(n: int, start: int = 0, symbol: str = "BTCUSDT", price: float = 100.0) -> list[flox.Trade]:
    return [flox.Trade(symbol, price + (i % 10), 1.0, "buy" if i % 2 else "sell", str(i),
                       BASE_NS + i * 1_000_000, BASE_NS + i * 1_000_000 + 1) for i in range(start, start + n)]


@pytest.fixture
def script_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(source: str, name: str = "s.js") -> Path:
        p = tmp_path / name
        p.write_text(source)
        return p

    return write
