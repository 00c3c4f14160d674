"""Keeping a session connected: one supervised connection per shard of its symbols.

Shape of one supervised session (all in the nursery the session's ``run()`` owns)::

    Supervisor.run            one _run_shard per shard; a new shard when the symbols outgrow the others
    └── _run_shard ×N         connect (within the connect budget) → follow → backoff → reconnect
        └── _connection_task ×1-2 one per open WebSocket (two only during a planned handover)
            ├── _reader       the only task that reads the socket; decodes and queues for the publisher
            ├── _watchdog     quiet for part of stale_timeout → ping; no pong either → reconnect
            ├── LiveSubscriptions.serve   SUBSCRIBE / UNSUBSCRIBE so the live set follows the shard's
            ├── _keepalive    venue pings (Bybit {"op":"ping"}, or protocol pings)
            └── _age_timer    planned reconnect before the venue's connection lifetime ends

The reader never waits for the engine: it queues each frame's batch with the
session's one ``Publisher``, whose own task publishes. So the socket is read
(and the venue's pings answered) however slow the strategies are, and since
no connection task publishes, no batch is ever cancelled half-published
because a connection went away. Every shard is supervised on its own (its
backoff, its watchdog, its handover); what they share is the publisher, the
session's counters and the connect budget (``ConnectBudget``), so opening
or reopening many connections never exceeds what the venue allows an IP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, ConnectionTimeout, HandshakeError

from .._core._clock import TrioClock
from .._core._events import Event
from .._core._ports import Clock
from .._errors import ConnectorError, first_leaf
from ._backoff import Backoff
from ._budget import ConnectBudget
from ._connection import Connection, describe, redact, split_url
from ._options import SessionOptions
from ._publisher import Publisher
from ._report import Reporter
from ._shards import Shard
from ._status import SessionState
from ._subscriptions import Subscriptions
from ._venue import Venue
from ._websocket import MarketSocket, connect

log = logging.getLogger("flox_trio.connectors")


class StaleFeedError(ConnectorError):
    """The venue went quiet: no message (or no pong) within the watchdog timeout."""


class HandshakeRefusedError(ConnectorError):
    """The venue refused the WebSocket handshake with a status that retrying will not fix."""


class RetriesExhaustedError(ConnectorError):
    """``max_retries`` consecutive connection attempts failed."""


# What ends one connection but not the session: the supervisor reconnects.
_TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionClosed,
    HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    StaleFeedError,
)
# Handshake statuses that mean "come back later", not "your URL is wrong".
_RETRYABLE_STATUS = frozenset({408, 418, 425, 429})
# Messages of one read decoded before the publisher gets a turn (a 64 KiB read holds ~400 trades).
_FRAMES_PER_TURN = 64


class Supervisor:
    """One session's connections over time, one shard each; the venue says what goes on the wire."""

    def __init__(self, venue: Venue, subscriptions: Subscriptions, publisher: Publisher, reporter: Reporter,
                 options: SessionOptions, backoff: Callable[[], Backoff], connect_budget: int) -> None:
        self._venue = venue
        self._subs = subscriptions
        self._publisher = publisher
        self._reporter = reporter
        self._options = options
        self._backoff = backoff
        #: Connection attempts, all shards together, within the venue's budget.
        self.connects = ConnectBudget(connect_budget)
        self._stopped = False
        self._connected_once = False
        self._fatal: ConnectorError | None = None
        #: Messages read, all connections together.
        self.messages = 0
        #: Receive time (``clock.wall_ns()``) of the last message from the venue, any connection.
        self.last_recv_ns: int | None = None
        #: Pings the watchdog sent on quiet connections.
        self.probes = 0
        #: Replaced by the engine's clock when the session runs.
        self.clock: Clock = TrioClock()

    # --- the session's view of its shards ---------------------------------------------------------

    @property
    def shards(self) -> list[Shard]:
        return self._subs.shards.shards

    @property
    def state(self) -> SessionState:
        """The least ready shard's state: "connected" once every shard with symbols is."""
        if self._stopped:
            return "stopped"
        # A shard with symbols whose task has not started yet is as good as connecting.
        busy = {"connecting" if sh.state == "idle" else sh.state
                for sh in self.shards if sh.symbols or sh.state != "idle"}
        for state in ("backoff", "connecting", "connected"):
            if state in busy:
                return state
        return "idle"

    @property
    def connection_id(self) -> int | None:
        """The connection serving the first shard (the only one, below one connection's worth of streams)."""
        return self.shards[0].connection_id if self.shards else None

    @property
    def connect_count(self) -> int:
        """WebSocket handshakes that succeeded, all shards together (planned handovers included)."""
        return sum(sh.connect_count for sh in self.shards)

    def serving(self) -> list[Connection]:
        """The connections serving data now, one per connected shard."""
        return [sh.serving for sh in self.shards if sh.serving is not None]

    def connection_for(self, symbol: str) -> int | None:
        """The connection carrying ``symbol`` now (the first shard's if no shard carries it)."""
        shard = self._subs.shards.shard_of(symbol)
        return shard.connection_id if shard is not None else self.connection_id

    # --- running --------------------------------------------------------------------------------------

    async def run(self, clock: Clock) -> None:
        """Keep every shard served until cancelled; raise only what retrying cannot fix."""
        self.clock = clock
        self._stopped = False
        async with trio.open_nursery() as nursery:
            started = 0
            while True:
                shards = self.shards
                while started < len(shards):
                    nursery.start_soon(self._shard_task, nursery, shards[started])
                    started += 1
                await self._subs.wait_new_shard()
        # Only a shard's fatal error cancels the nursery from inside.
        if self._fatal is not None:
            raise self._fatal

    def stopped(self) -> None:
        self._stopped = True
        for shard in self.shards:
            shard.serving = None
            shard.state = "idle"

    async def _shard_task(self, nursery: trio.Nursery, shard: Shard) -> None:
        try:
            await self._run_shard(nursery, shard)
        except (HandshakeRefusedError, RetriesExhaustedError) as exc:
            # Every shard talks to the same endpoint: what no retry fixes for one fixes none.
            self._fatal = exc
            nursery.cancel_scope.cancel(reason=str(exc))

    async def _run_shard(self, nursery: trio.Nursery, shard: Shard) -> None:
        """Keep a connection serving the shard's symbols until cancelled."""
        opts = self._options
        backoff = self._backoff()
        failures = 0
        while True:
            if not shard.symbols:
                shard.state = "idle"
                changed = shard.changed
                if not shard.symbols:
                    await changed.wait()
                continue
            shard.state = "connecting"
            try:
                conn = await self._open_connection(nursery, shard, hold=False)
            except (HandshakeError, OSError) as exc:
                self._raise_if_fatal(exc)
                failures += 1
                connected_once = self._connected_once
                limits = [opts.max_retries] if connected_once else [opts.max_retries, opts.initial_retries]
                limit = min((n for n in limits if n is not None), default=None)
                if limit is not None and failures > limit:
                    first = "" if connected_once else " before any connection succeeded"
                    raise RetriesExhaustedError(
                        f"{self._venue.name}: {failures} connection attempts to {self._venue.ws_url} failed in a "
                        f"row{first} (last: {describe(exc)}); check the URL and the network, or raise "
                        f"{'max_retries' if connected_once else 'initial_retries'}"
                    ) from exc
                delay = backoff.next_delay()
                self._reporter.error("connect failed", describe(exc), url=self._venue.ws_url,
                                     attempt=failures, retry_in=delay, shard=shard.index)
                shard.state = "backoff"
                await trio.sleep(delay)
                continue
            self._activate(shard, conn)
            self._connected_once = True
            conn = await self._follow(nursery, shard, conn)
            planned = conn.planned is not None
            if planned or conn.ended_at - conn.opened_at >= opts.healthy_after:
                backoff.reset()
                failures = 0
            if planned:
                self._deactivate(shard, conn, f"planned: {conn.planned}", retry_in=0.0)
                continue
            failures += 1
            delay = backoff.next_delay()
            self._deactivate(shard, conn, describe(conn.error) if conn.error else "closed", retry_in=delay)
            shard.state = "backoff"
            await trio.sleep(delay)

    # --- from one connection to the next ----------------------------------------------------------

    async def _follow(self, nursery: trio.Nursery, shard: Shard, conn: Connection) -> Connection:
        """Wait until ``conn`` ends, passing the baton to successors on planned reconnects."""
        while True:
            await conn.wake.wait()
            if conn.planned is not None and not conn.ended.is_set():
                successor = await self._handover(nursery, shard, conn)
                if successor is not None:
                    conn = successor
                    continue
            await conn.ended.wait()
            return conn

    async def _handover(self, nursery: trio.Nursery, shard: Shard, old: Connection) -> Connection | None:
        """Make before break: open the successor, let the old connection finish, then switch."""
        log.info("%s: planned reconnect of connection %d (%s)", self._venue.name, old.id, old.planned)
        try:
            new = await self._open_connection(nursery, shard, hold=True)
        except (HandshakeError, OSError) as exc:
            self._raise_if_fatal(exc)
            self._reporter.error("planned reconnect failed", describe(exc), connection_id=old.id)
            return None
        # Everything the venue sent on the old connection before the new one was
        # subscribed arrives within about one round trip; after that the new
        # connection carries the same data.
        with trio.move_on_after(self._options.handover_overlap):
            await old.ended.wait()
        old.stop(None)
        await old.ended.wait()
        self._deactivate(shard, old, f"planned: {old.planned}", retry_in=0.0, planned=True)
        self._activate(shard, new)
        self._venue.handover(frozenset(shard.symbols))
        held = new.held
        assert held is not None
        decode, queue = self._venue.decode, self._publisher.queue
        while held:
            msg, recv_ns = held.popleft()
            events = decode(new, msg, recv_ns)
            if events:
                queue(events, recv_ns)
        new.held = None
        return new

    def _raise_if_fatal(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionRejected) and 400 <= exc.status_code < 500 \
                and exc.status_code not in _RETRYABLE_STATUS:
            raise HandshakeRefusedError(
                f"{self._venue.name} refused the WebSocket handshake at {self._venue.ws_url} with HTTP "
                f"{exc.status_code}: the URL or the stream names are wrong; check ws_url and the channels"
            ) from exc

    def _activate(self, shard: Shard, conn: Connection) -> None:
        shard.serving = conn
        shard.connection_id = conn.id
        shard.state = "connected"

    def _deactivate(self, shard: Shard, conn: Connection, reason: str, *, retry_in: float,
                    planned: bool = False) -> None:
        if shard.serving is conn:
            shard.serving = None
            if not planned:  # a successor that carries the same streams takes over otherwise
                self._subs.connection_lost(shard)
                self._venue.connection_lost(frozenset(shard.symbols))
        self._reporter.event("disconnect", connection_id=conn.id, reason=reason, code=conn.close_code,
                             retry_in=retry_in, planned=planned or conn.planned is not None,
                             lived=round(conn.lived(), 6), shard=shard.index)
        log.info("%s connection %d closed (%s); reconnecting in %.3f s", self._venue.name, conn.id, reason, retry_in)

    # --- one connection ----------------------------------------------------------------------------

    async def _open_connection(self, nursery: trio.Nursery, shard: Shard, *, hold: bool) -> Connection:
        await self.connects.spend()
        url, initial = self._venue.connect_url(self._subs.subscribable(shard))
        conn = Connection(url, initial, self._subs, shard, hold=hold)
        await nursery.start(self._connection_task, conn)
        shard.connect_count += 1
        log.info("%s connection %d open: %s", self._venue.name, conn.id, redact(url))
        self._reporter.event("connect", connection_id=conn.id, url=redact(url), connect_count=self.connect_count,
                             planned=hold, shard=shard.index)
        return conn

    async def _connection_task(self, conn: Connection, *,
                               task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opts = self._options
        stream: trio.abc.Stream | None = None
        try:
            # Cancelled when the venue went silent: a close handshake it will not answer
            # would only delay the reconnect by disconnect_timeout.
            with conn.abort_scope:
                host, port, resource, ssl_context = split_url(conn.url, opts.ssl_context)
                try:
                    with trio.fail_after(opts.connect_timeout):
                        if ssl_context is None:
                            stream = await trio.open_tcp_stream(host, port)
                        else:
                            stream = await trio.open_ssl_over_tcp_stream(
                                host, port, ssl_context=ssl_context, https_compatible=True)
                        ws = await connect(stream, host if port in (80, 443) else f"{host}:{port}", resource,
                                           max_message_size=opts.max_message_size,
                                           receive_buffer_size=opts.receive_buffer_size)
                except trio.TooSlowError:
                    raise ConnectionTimeout(
                        f"no WebSocket handshake with {host}:{port} within {opts.connect_timeout:g} s") from None
                except OSError as exc:
                    raise HandshakeError(f"cannot connect to {host}:{port}: {exc}") from exc
                conn.ws = ws
                conn.opened_at = conn.idle_since = trio.current_time()
                conn.started = True
                self._subs.track(conn.subs)
                task_status.started()
                try:
                    await self._serve(conn, ws)
                finally:
                    with trio.move_on_after(opts.disconnect_timeout):
                        await ws.aclose()
        except* _TRANSIENT as group:
            # Anything else (a bug, a cancellation) propagates; connection trouble ends
            # this connection only.
            failure = first_leaf(group)
            if not conn.started:
                raise failure  # nursery.start() hands it to the supervisor, unwrapped
            conn.error = failure
            if isinstance(failure, ConnectionClosed) and failure.reason is not None and conn.close_code is None:
                conn.close_code, conn.close_reason = int(failure.reason.code), failure.reason.reason
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if conn.stop_reason is not None:
                conn.error = conn.stop_reason
            conn.ended_at = trio.current_time()
            self._subs.untrack(conn.subs)
            conn.ended.set()
            conn.wake.set()

    async def _serve(self, conn: Connection, ws: MarketSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog, conn, ws)
            nursery.start_soon(conn.subs.serve, conn.send_text)
            nursery.start_soon(self._keepalive, conn, ws)
            if self._options.max_connection_age is not None:
                nursery.start_soon(self._age_timer, conn, self._options.max_connection_age)
            try:
                await self._reader(conn, ws)
            finally:
                nursery.cancel_scope.cancel(reason="connection reader finished")

    async def _reader(self, conn: Connection, ws: MarketSocket) -> None:
        # The hot path: one iteration per read, so everything it calls is a local.
        decode, offer, now, wall_ns = self._venue.decode, self._publisher.offer, trio.current_time, self.clock.wall_ns
        shard = conn.shard
        receive = ws.receive
        turn = _FRAMES_PER_TURN
        yield_now = trio.lowlevel.cancel_shielded_checkpoint
        with trio.CancelScope() as scope:
            conn.recv_scope = scope
            while not conn.stopping:
                try:
                    msgs = await receive()
                except ConnectionClosed as exc:
                    if exc.reason is not None:
                        conn.close_code, conn.close_reason = int(exc.reason.code), exc.reason.reason
                    raise
                # Every message of one read arrived with it, at this moment.
                recv_ns = self.last_recv_ns = shard.last_recv_ns = wall_ns()
                n = len(msgs)
                conn.messages += n
                shard.messages += n
                self.messages += n
                if conn.held is not None:
                    conn.held.extend([(msg, recv_ns) for msg in msgs])
                elif n == 1:
                    events = decode(conn, msgs[0], recv_ns)
                    if events:
                        offer(events, recv_ns)
                else:
                    # What one read brought goes out as one batch (most frames carry a trade each,
                    # and a publish costs more than dispatching its events).
                    batch: list[Event] = []
                    for i, msg in enumerate(msgs, 1):
                        events = decode(conn, msg, recv_ns)
                        if events:
                            batch += events
                        if not i % turn and i < n:
                            # A long read lets the publisher start on what is decoded. Shielded:
                            # a stop lands at the next receive(), never inside a read.
                            if batch:
                                offer(batch, recv_ns)
                                batch = []
                            await yield_now()
                    if batch:
                        offer(batch, recv_ns)
                conn.idle_since = now()
        if conn.stop_reason is not None:
            conn.abort_scope.cancel(reason=str(conn.stop_reason))
            raise conn.stop_reason

    async def _watchdog(self, conn: Connection, ws: MarketSocket) -> None:
        """Quiet for ``stale_timeout - wait``: ping; no message and no pong within ``wait`` either: stale.

        A quiet line is not a dead one: a symbol may trade nothing for half a
        minute, and trio-websocket answers the venue's own pings without a
        word to us. The pong of our ping is the sign of life then, and the
        watchdog still fires ``stale_timeout`` after the last one.
        """
        opts = self._options
        timeout = opts.stale_timeout
        wait = min(opts.pong_timeout, timeout / 2)
        quiet = timeout - wait
        while True:
            await trio.sleep_until(conn.idle_since + quiet)
            now = trio.current_time()
            # Same expression as the deadline: `now - idle_since < quiet` can disagree
            # with it by a rounding error and spin.
            if now < conn.idle_since + quiet:
                continue
            if not conn.subs.live or conn.held is not None:
                # Nothing subscribed, or a successor parked during a handover: silence
                # here is not staleness.
                conn.idle_since = now
                continue
            self.probes += 1
            with trio.move_on_after(wait) as scope:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the reader sees the close
            if not scope.cancelled_caught:
                conn.idle_since = max(conn.idle_since, trio.current_time())
                continue
            if conn.idle_since > now:
                continue  # a message came meanwhile, the pong may be behind it
            conn.stop(StaleFeedError(
                f"{self._venue.name}: no message for {quiet:g} s and no pong within {wait:g} s on "
                f"connection {conn.id}; reconnecting"))
            return

    async def _keepalive(self, conn: Connection, ws: MarketSocket) -> None:
        """Ping every ``ping_interval``; a ping unanswered within ``pong_timeout`` ends the connection."""
        opts = self._options
        if not opts.ping_interval:
            return
        # A venue ping is answered by a message, which the reader may only see once the
        # ping is sent; a protocol ping's answer is awaited in place.
        wait = min(opts.pong_timeout, opts.ping_interval)
        await trio.sleep(opts.ping_interval)
        n = 0
        while True:
            n += 1
            text = self._venue.ping_text(n)
            if text is None:
                with trio.move_on_after(opts.pong_timeout) as scope:
                    try:
                        await ws.ping()
                    except ConnectionClosed:
                        return  # the reader sees the close
                answered, waited, pause = not scope.cancelled_caught, opts.pong_timeout, opts.ping_interval
            else:
                sent = conn.ping_sent_at = trio.current_time()
                if not await conn.send_text(text):
                    return
                await trio.sleep(wait)
                answered, waited, pause = conn.ping_sent_at != sent, wait, opts.ping_interval - wait
            if not answered:
                conn.stop(StaleFeedError(
                    f"{self._venue.name}: no pong within {waited:g} s on connection {conn.id}; reconnecting"))
                return
            await trio.sleep(pause)

    async def _age_timer(self, conn: Connection, max_age: float) -> None:
        await trio.sleep(max_age)
        conn.request_planned(f"connection older than {max_age:g} s")
