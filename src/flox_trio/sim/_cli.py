"""``flox-trio sim``: run the exchange simulator until interrupted."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import orjson
import trio

from .._errors import ConfigError
from ._replay import Recording, load_recording, replay
from ._server import Simulator

_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flox-trio sim",
        description="Serve Binance Spot and Bybit v5 public market data (and Binance REST: the depth "
                    "snapshot, exchangeInfo) on one local port, from a seeded market generator or recorded "
                    "frames.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--seed", type=int, default=0, help="market generator seed (default 0)")
    p.add_argument("--rate", type=float, default=10.0,
                   help="market steps (or replayed frames) per second; 0 = as fast as clients read")
    p.add_argument("--symbols", help=f"comma-separated symbols (default {_SYMBOLS}; with --replay, the "
                                     "recorded ones), or a number N: a whole market of N symbols, a few very "
                                     "active and a long quiet tail (see --skew)")
    p.add_argument("--skew", type=float, default=1.0,
                   help="with --symbols N: the symbol of rank r steps 1/r**skew times a tick (default 1; "
                        "0: every symbol alike)")
    p.add_argument("--activity", type=float, default=1.0,
                   help="with --symbols N: steps a tick of the most active symbol, within (0, 1] (default 1); "
                        "e.g. --symbols 200 --skew 0 --activity 0.05 moves 10 random symbols a tick")
    p.add_argument("--trades-per-tick", default="0,3", metavar="MIN,MAX",
                   help="taker trades per symbol per step (default 0,3)")
    p.add_argument("--no-book", action="store_true", help="trades only: no order book activity")
    p.add_argument("--stamp", action="store_true",
                   help="stamp Binance trade times (E, T) when the frame is written (latency benchmarks)")
    p.add_argument("--precise", action="store_true",
                   help="pace steps to the microsecond (a timerfd on Linux; for latency benchmarks)")
    p.add_argument("--one-frame-per-write", action="store_true",
                   help="one socket write per frame instead of coalescing queued frames")
    p.add_argument("--ping-interval", type=float, default=20.0, help="Binance server pings, seconds (0 = off)")
    p.add_argument("--replay", type=Path, metavar="FILE",
                   help='JSON lines {"venue": "binance"|"bybit", "frame": ...} played at --rate instead of '
                        'generating, once a client subscribes; {"venue": "binance", "rest": "/api/v3/depth?'
                        'symbol=...", "response": ...} lines are the REST snapshots served')
    p.add_argument("--loop", action="store_true", help="with --replay: start over at the end")
    p.add_argument("--json", action="store_true", help="print the URLs as one JSON line when ready")
    p.add_argument("--account-env", metavar="NAME", default=None,
                   help="open a Binance account for the API key and HMAC secret in the environment variable "
                        "NAME, as KEY:SECRET (never on the command line, where any user can read it)")
    p.add_argument("--log-level", default="warning", help="logging level (default warning)")
    return p


def _pair(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(",")
    try:
        return (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise ConfigError(f"--trades-per-tick must look like 0,3, got {text!r}") from None


async def _run(args: argparse.Namespace, recording: Recording | None) -> None:
    symbols = args.symbols or (",".join(recording.symbols) if recording and recording.symbols else _SYMBOLS)
    sim = Simulator(
        host=args.host, port=args.port, seed=args.seed,
        rate=None if recording else args.rate,
        symbols=int(symbols) if symbols.strip().isdigit() else
        [s.strip().upper() for s in symbols.split(",") if s.strip()], skew=args.skew, activity=args.activity,
        generate=recording is None, trades_per_tick=_pair(args.trades_per_tick), book=not args.no_book,
        stamp=args.stamp, precise=args.precise, coalesce=not args.one_frame_per_write,
        ping_interval=args.ping_interval,
    )
    if args.account_env:
        key, _, secret = os.environ.get(args.account_env, "").partition(":")
        if not key or not secret:
            raise ConfigError(f"--account-env {args.account_env}: the variable must hold KEY:SECRET")
        sim.binance_private.add_account(key, secret=secret, balances={"USDT": "10000000", "BTC": "1000"})
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        urls = {"port": sim.port, "binance_ws_url": sim.binance_ws_url,
                "binance_rest_url": sim.binance_rest_url, "bybit_ws_url": sim.bybit_ws_url,
                "binance_ws_api_url": sim.binance_ws_api_url}
        if args.json:
            sys.stdout.write(orjson.dumps(urls).decode() + "\n")
        else:
            sys.stdout.write(f"flox-trio sim listening on port {sim.port}\n"
                             f"  Binance WebSocket {sim.binance_ws_url}  REST {sim.binance_rest_url}\n"
                             f"  Bybit   WebSocket {sim.bybit_ws_url}\n")
        sys.stdout.flush()
        if recording:
            await replay(sim, recording, rate=args.rate, loop=args.loop)
            await trio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flox-trio sim``; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        recording = load_recording(args.replay) if args.replay else None
        trio.run(_run, args, recording)
    except ConfigError as exc:
        sys.stderr.write(f"flox-trio sim: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"flox-trio sim: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
