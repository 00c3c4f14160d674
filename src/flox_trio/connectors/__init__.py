"""Exchange connectors: live market data from Binance Spot and Bybit v5 public streams.

Each connector is a feed (``flox.open_runner(flox.connectors.Binance(["BTCUSDT"]))``)
that keeps its WebSocket connections alive: reconnect with capped exponential
backoff and jitter, re-subscription, a stale-feed watchdog that pings a quiet
line before it calls it dead, venue pings, sequence-gap detection with book
resync, and live SUBSCRIBE/UNSUBSCRIBE as the slots' symbols change. A whole
market is sharded over as many connections as the venue's streams per
connection require (``max_streams_per_connection``), each supervised on its
own and opened within the venue's connection budget (``connect_budget``);
``status().connections`` shows each. Point ``ws_url`` / ``rest_url`` at
``flox_trio.sim`` to run against the local simulator.

Nothing the venue sends can stop the engine, and nothing is lost silently:
values no market could mean (NaN, inf, <= 0, beyond 1e15) are refused and
counted per reason; a jump in Binance's consecutive trade ids, on one
connection or across a reconnect, reaches the strategies as a ``flox.Gap``;
strategies slower than the market never stop the socket being read, and
what the bounded backlog (``max_backlog``) cannot hold is dropped oldest
first, counted per symbol and told as a ``Gap``; Binance REST snapshots stay
within a request-weight budget and honour Retry-After. ``status()`` shows all
of it (``refused``, ``missed``, ``dropped``, ``backlog``, ``backlog_age``,
Binance's ``resyncs_waiting``, ``rest_weight_used``, ``rate_limited``).

Layout: ``_session.py`` composes a venue (``_binance.py``, ``_bybit.py``: the
wire formats, decoded with typed msgspec structs, behind the ``Venue``
protocol of ``_venue.py``) with the parts every venue shares:
``_supervisor.py`` (a connection per shard: backoff, watchdog, keepalive,
planned handover), ``_shards.py`` (which connection carries which symbols),
``_subscriptions.py`` (desired vs live subscriptions, retries, resync
requests), ``_websocket.py`` (the client WebSocket: every message of a read
at once), ``_budget.py`` (REST weight, connection attempts) and
``_publisher.py`` (batches in production order, from a task of their own).
"""

from ._backoff import Backoff as Backoff
from ._binance import Binance as Binance
from ._binance import SnapshotError as SnapshotError
from ._bybit import Bybit as Bybit
from ._options import SessionOptions as SessionOptions
from ._session import Session as Session
from ._status import BinanceStatus as BinanceStatus
from ._status import BookStatus as BookStatus
from ._status import ConnectionStatus as ConnectionStatus
from ._status import SessionStatus as SessionStatus
from ._supervisor import HandshakeRefusedError as HandshakeRefusedError
from ._supervisor import RetriesExhaustedError as RetriesExhaustedError
from ._supervisor import StaleFeedError as StaleFeedError
