"""Exchange connectors: live market data from Binance Spot and Bybit v5 public streams.

Each connector is a feed (``flox.open_runner(flox.connectors.Binance(["BTCUSDT"]))``)
that keeps one WebSocket session alive: reconnect with capped exponential
backoff and jitter, re-subscription, a stale-feed watchdog, venue pings,
sequence-gap detection with book resync, and live SUBSCRIBE/UNSUBSCRIBE as
the slots' symbols change. Point ``ws_url`` / ``rest_url`` at
``flox_trio.sim`` to run against the local simulator.

Layout: ``_session.py`` composes a venue (``_binance.py``, ``_bybit.py``: the
wire formats, behind the ``Venue`` protocol of ``_venue.py``) with the parts
every venue shares: ``_supervisor.py`` (connections, backoff, watchdog,
keepalive, planned handover), ``_subscriptions.py`` (desired vs live
subscriptions, retries, resync requests) and ``_publisher.py`` (batches in
production order).
"""

from ._backoff import Backoff as Backoff
from ._binance import Binance as Binance
from ._binance import SnapshotError as SnapshotError
from ._bybit import Bybit as Bybit
from ._options import SessionOptions as SessionOptions
from ._session import Session as Session
from ._status import BinanceStatus as BinanceStatus
from ._status import BookStatus as BookStatus
from ._status import SessionStatus as SessionStatus
from ._supervisor import HandshakeRefusedError as HandshakeRefusedError
from ._supervisor import RetriesExhaustedError as RetriesExhaustedError
from ._supervisor import StaleFeedError as StaleFeedError
