"""The embedded exchange simulator: Binance Spot and Bybit v5 public market data on loopback.

    async with flox_trio.sim.open_simulator(seed=1, rate=10) as sim:
        feed = flox_trio.connectors.Binance(["BTCUSDT"], ws_url=sim.binance_ws_url,
                                            rest_url=sim.binance_rest_url)
        sim.faults.drop()            # and stall, malformed, gap, close, server_shutdown, ...

Market data comes from a seeded generator (trades that eat the top of an L2
book, makers that refill it, correct Binance ``U``/``u`` and Bybit ``u``
sequencing; ``symbols=500`` is a whole market, a few symbols very active and
a long quiet tail) or from recorded frames (``await sim.play(venue, frames)``, or a
recording replayed by ``flox-trio sim --replay``). Every connection counts
what it really wrote, so tests can check that a client lost nothing the
server sent.

Layout: ``_server`` composes the simulator (the market clock, routing frames
to subscribers, the public API) from ``_transport`` (TCP, HTTP or WebSocket),
``_connection`` (one client's sender, keepalive and limits), ``_binance`` and
``_bybit`` (each venue's wire format and book mirror), ``_faults``,
``_market`` (the generator) and ``_replay`` (recordings).
"""

from ._binance_private import BinancePrivate as BinancePrivate
from ._binance_private import PrivateFaults as PrivateFaults
from ._bybit_private import BybitFaults as BybitFaults
from ._bybit_private import BybitPrivate as BybitPrivate
from ._cli import main as main
from ._connection import SimConnection as SimConnection
from ._faults import Faults as Faults
from ._market import DEFAULT_SYMBOLS as DEFAULT_SYMBOLS
from ._market import BookView as BookView
from ._market import SymbolSpec as SymbolSpec
from ._market import whole_market as whole_market
from ._server import Simulator as Simulator
from ._server import open_simulator as open_simulator
from ._server import serve_simulator as serve_simulator
