"""Run the EMA strategy as a script: against the embedded simulator by default, or a real venue.

    python py_strategies/run_ema.py                      # the simulator, 30 s, a swap half-way
    python py_strategies/run_ema.py --venue binance      # live Binance market data, paper executor
    python py_strategies/run_ema.py --venue bybit --seconds 120 --symbol ETHUSDT

Market data is real on binance/bybit; orders always go to the paper executor.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

import flox_trio as flox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ema import EmaStrategy  # a sibling file: this runs as a script


async def main(venue: str, symbol: str, seconds: float, state: Path) -> None:
    # The venue as a run config would name it: the simulator, or a real venue's public market data.
    config = flox.config.Config(venue=flox.config.VenueConfig(name=venue), symbols=(symbol,))
    async with flox.app.open_venue_feed(config) as feed, flox.open_runner(feed, drain=False) as runner:
        slot = runner.add_strategy(EmaStrategy([symbol], fast=12, slow=26, qty=0.01, snapshot=state / "ema.json"))
        await trio.sleep(seconds / 2)
        report = await runner.replace_strategy(slot, EmaStrategy([symbol], fast=8, slow=21, qty=0.01,
                                                                 snapshot=state / "ema.json"))
        session = getattr(feed, "connection_id", None), getattr(feed, "connect_count", None)
        print(f"swapped at event {report.at_event} in {report.pause_s * 1e3:.3f} ms; "
              f"connection {session[0]}, connects {session[1]}")
        await trio.sleep(seconds / 2)
        st = runner.status()
    s = st.slots[slot]
    print(f"{venue} {symbol}: {st.published} events, slot {slot} dispatched {s.dispatched}, "
          f"position {s.position}, realized PnL {s.realized_pnl}, unrealized {s.unrealized_pnl}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venue", choices=("sim", "binance", "bybit"), default="sim")
    ap.add_argument("--symbol", default="BTCUSDT")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--state", type=Path, default=Path("state"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, args.venue, args.symbol.upper(), args.seconds, args.state)
