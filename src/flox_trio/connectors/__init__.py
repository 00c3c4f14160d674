"""Exchange connectors: live market data from Binance Spot and Bybit v5 public streams.

Each connector is a feed (``flox.open_runner(flox.connectors.Binance(["BTCUSDT"]))``)
that keeps one WebSocket session alive: reconnect with capped exponential
backoff and jitter, re-subscription, a stale-feed watchdog, venue pings,
sequence-gap detection with book resync, and live SUBSCRIBE/UNSUBSCRIBE as
the slots' symbols change. Point ``ws_url`` / ``rest_url`` at
``flox_trio.sim`` to run against the local simulator.
"""

from ._backoff import Backoff as Backoff
from ._binance import Binance as Binance
from ._binance import SnapshotError as SnapshotError
from ._bybit import Bybit as Bybit
from ._session import HandshakeRefusedError as HandshakeRefusedError
from ._session import RetriesExhaustedError as RetriesExhaustedError
from ._session import Session as Session
from ._session import SessionOptions as SessionOptions
from ._session import StaleFeedError as StaleFeedError
