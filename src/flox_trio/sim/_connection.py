"""One client WebSocket as the simulator serves it: its outbox, sender, keepalive and limits.

Data goes out through one sender task per connection, which drains the
connection's outbox and writes whatever is queued as one batch of RFC 6455
text frames. So data, control replies and injected faults leave in the order
they were produced, the simulator can outrun the client it tests, and the
counters record exactly what reached the socket.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._core._clock import unix_time_ns
from ._transport import _SimStream, text_frame

log = logging.getLogger("flox_trio.sim")

#: The venues the simulator speaks.
Venue = Literal["binance", "bybit"]

_IDS = itertools.count(1)

#: Client messages a connection keeps (between this and twice as many; ``received_count`` counts all).
RECEIVED_KEPT: Final = 10_000

#: What a stamped frame (the latency benchmarks) renders in place of its time: replaced, in every
#: frame of a write, by the time the write starts, after all of them were rendered. JSON text never
#: holds a raw NUL, so nothing else matches.
STAMP: Final = "\x00"


#: A trade id as a frame carries it: an int as the generator counts it, or the text a recording holds.
TradeId = int | str


class SentIds:
    """The trade ids one connection wrote on one stream, in order, kept as runs of consecutive ids.

    A stream's ids count up by one, so what a connection sent of it is one run,
    or a few (a gap, a resubscription): a simulator serving a whole market for
    days holds a few numbers per stream, not a string per trade. Ids that are
    not decimal integers (a recording's) are kept one by one.
    """

    __slots__ = ("_runs", "n", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        #: Ids written.
        self.n = 0
        # [first, count] for a run of integers, the text of any other id.
        self._runs: list[list[int] | str] = []

    def add(self, ids: tuple[TradeId, ...]) -> None:
        runs = self._runs
        self.n += len(ids)
        for tid in ids:
            if isinstance(tid, str):
                # Only a canonical decimal reads back as the same text.
                if not (tid.isascii() and tid.isdigit() and (tid[0] != "0" or tid == "0")):
                    runs.append(tid)
                    continue
                num = int(tid)
            else:
                num = tid
            last = runs[-1] if runs else None
            if isinstance(last, list) and last[0] + last[1] == num:
                last[1] += 1
            else:
                runs.append([num, 1])

    def __iter__(self) -> Iterator[str]:
        for run in self._runs:
            if isinstance(run, str):
                yield run
            else:
                first, count = run
                yield from map(str, range(first, first + count))

    def __len__(self) -> int:
        return self.n

    @property
    def runs(self) -> int:
        """Entries held: runs of consecutive ids, and ids kept one by one."""
        return len(self._runs)


class Frame:
    """One outgoing data message: the same text for every connection it is routed to."""

    __slots__ = ("key", "symbol", "text", "trade_ids", "venue", "withheld")

    def __init__(self, venue: Venue, key: str, text: str, *, symbol: str = "",
                 trade_ids: tuple[TradeId, ...] = (), withheld: bool = False) -> None:
        self.venue: Venue = venue
        #: The stream (Binance) or topic (Bybit) it belongs to; "" goes to every connection of the venue.
        self.key = key
        self.text = text
        self.symbol = symbol
        #: The trade ids it carries: ints as generated, the venue's text as recorded.
        self.trade_ids = trade_ids
        #: Held back by a gap fault: counted as skipped, never written.
        self.withheld = withheld

    def render(self, conn: SimConnection) -> str:
        return self.text


@attrs.frozen
class Limits:
    """How a venue polices one connection."""

    outbox_size: int
    #: Write everything queued in one batch (else one write per frame).
    coalesce: bool = True
    #: Server ping frames every so many seconds (0 = none), and how long a pong may take.
    ping_interval: float = 0.0
    pong_timeout: float = 60.0
    #: Closed with 1001 after this long, whatever happens.
    max_age: float | None = None
    #: Closed after this long without a client ping or any data sent.
    idle_timeout: float | None = None
    #: Incoming messages allowed per second; more closes the connection with 1008.
    rate_limit: int | None = None


@attrs.frozen
class _End:
    """Queued behind the frames already queued: how the connection ends."""

    #: End the TCP connection without a close frame (the client sees 1006).
    drop: bool
    code: int = 1006
    reason: str = ""


_Item = Frame | str | _End


class SimConnection:
    """One client WebSocket as the simulator sees it; the counters are what it really sent."""

    def __init__(self, venue: Venue, path: str, ws: WebSocketConnection, stream: _SimStream,
                 limits: Limits) -> None:
        self.id = next(_IDS)
        self.conn_id = str(uuid.uuid4())
        self.venue: Venue = venue
        self.path = path
        self.ws = ws
        self.stream = stream
        self.limits = limits
        parts = urlsplit(path)
        self.combined = not parts.path.startswith("/ws")
        self.micros = parse_qs(parts.query).get("timeUnit", [""])[0].upper() == "MICROSECOND"
        #: Streams (Binance) or topics (Bybit) this connection is subscribed to.
        self.subs: set[str] = set()
        #: Frames written to the socket, in total and per stream/topic ("" for control replies).
        self.sent = 0
        self.sent_by_key: Counter[str] = Counter()
        #: Trade ids written to the socket, per stream/topic (see ``trade_ids``).
        self.sent_ids: dict[str, SentIds] = {}
        #: Depth frames withheld by a gap fault.
        self.skipped = 0
        #: Text messages the client sent, and when (Trio time): the latest ``RECEIVED_KEPT`` or more.
        self.received: list[str] = []
        self.received_at: list[float] = []
        #: Text messages the client sent, all of them.
        self.received_count = 0
        self.opened_at = trio.current_time()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.dropped = False
        self.closing = False
        self.last_ping_at = self.opened_at
        self.last_sent_at = self.opened_at
        self.scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._ctrl_times: deque[float] = deque()
        self._send, self._recv = trio.open_memory_channel[_Item](limits.outbox_size)

    @property
    def open(self) -> bool:
        """Still taking frames: not closed, and no drop or close under way."""
        return self.closed_at is None and not self.closing

    @property
    def trade_ids(self) -> dict[str, list[str]]:
        """Trade ids written to the socket, per symbol: each stream's in the order written (a
        symbol on two streams, ``trade`` and ``aggTrade``, has the first's, then the other's)."""
        out: dict[str, list[str]] = {}
        for rec in self.sent_ids.values():
            out.setdefault(rec.symbol, []).extend(rec)
        return out

    @property
    def queued(self) -> int:
        return self._recv.statistics().current_buffer_used

    # --- what the simulator asks of it ----------------------------------------------------------

    def push(self, item: Frame | str) -> None:
        """Queue a data frame or a text message (a control reply, a crafted frame)."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            log.warning("sim %s connection %d: outbox full (client too slow); disconnecting", self.venue, self.id)
            self.abort("slow consumer")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def push_later(self, delay: float, item: Frame | str) -> None:
        """Queue ``item`` ``delay`` seconds from now (a slow answer), if the connection still takes frames then."""
        if self._nursery is None:
            self.push(item)
        else:
            self._nursery.start_soon(self._push_later, delay, item)

    async def _push_later(self, delay: float, item: Frame | str) -> None:
        await trio.sleep(delay)
        if self.open:
            self.push(item)

    def drop(self) -> None:
        """End the TCP connection without a close frame, after the frames already queued.

        The socket is half-closed, so every frame counted as sent can be read by the client.
        """
        self._end(_End(drop=True))

    def close(self, code: int = 1000, reason: str = "", *, delay: float = 0.0) -> None:
        """Send a close frame carrying ``code`` after the frames already queued (and ``delay`` s)."""
        if delay > 0 and self._nursery is not None:
            self._nursery.start_soon(self._close_later, delay, code, reason)
        else:
            self._end(_End(drop=False, code=code, reason=reason))

    def abort(self, reason: str) -> None:
        """Cut the client off now, as a venue does: what is still queued is never sent, no close frame."""
        if self.closed_at is not None:
            return
        self.closing = True
        self.dropped = True
        self.close_code, self.close_reason = 1006, reason
        self.scope.cancel()

    def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``: no data, no pongs, no pings."""
        self.stream.stall(seconds)

    def _end(self, end: _End) -> None:
        try:
            self._send.send_nowait(end)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.scope.cancel()

    async def _close_later(self, delay: float, code: int, reason: str) -> None:
        await trio.sleep(delay)
        if self.open:
            self._end(_End(drop=False, code=code, reason=reason))

    # --- serving ----------------------------------------------------------------------------------

    async def run(self, on_message: Callable[[SimConnection, str], None],
                  on_written: Callable[[SimConnection], None],
                  on_closed: Callable[[SimConnection], None]) -> None:
        """Serve the connection until either side ends it.

        ``on_message`` gets each client text message, ``on_written`` runs after
        each write, ``on_closed`` once the connection takes no more frames.
        """
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._sender, on_written)
                    limits = self.limits
                    if limits.ping_interval:
                        nursery.start_soon(self._pinger)
                    if limits.max_age:
                        nursery.start_soon(self._age_limit, limits.max_age)
                    if limits.idle_timeout:
                        nursery.start_soon(self._idle_limit, limits.idle_timeout)
                    try:
                        await self._receiver(on_message)
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.closed_at = trio.current_time()
            self._send.close()
            on_closed(self)
            if not self.dropped:
                with trio.move_on_after(1.0) as cs:
                    cs.shield = True
                    await self.ws.aclose()
            if self.close_code is None and self.ws.closed is not None:
                self.close_code, self.close_reason = self.ws.closed.code, self.ws.closed.reason
            log.info("sim %s connection %d closed (code %s, sent %d)", self.venue, self.id, self.close_code,
                     self.sent)

    async def _receiver(self, on_message: Callable[[SimConnection, str], None]) -> None:
        rate_limit = self.limits.rate_limit
        while True:
            try:
                msg = await self.ws.get_message()
            except ConnectionClosed as exc:
                if exc.reason is not None and self.close_code is None:
                    self.close_code, self.close_reason = exc.reason.code, exc.reason.reason
                return
            text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
            now = trio.current_time()
            self.received.append(text)
            self.received_at.append(now)
            self.received_count += 1
            if len(self.received) >= 2 * RECEIVED_KEPT:
                # A client placing orders for days: what it sent lately, not all of it.
                del self.received[:RECEIVED_KEPT], self.received_at[:RECEIVED_KEPT]
            if rate_limit is not None:
                times = self._ctrl_times
                times.append(now)
                while times and now - times[0] > 1.0:
                    times.popleft()
                if len(times) > rate_limit:
                    log.warning("sim %s connection %d: more than %d messages/s; disconnecting", self.venue,
                                self.id, rate_limit)
                    self.close(1008, "Too many requests")
                    continue
            on_message(self, text)

    async def _sender(self, on_written: Callable[[SimConnection], None]) -> None:
        try:
            await self._send_loop(on_written)
        finally:
            # Whatever is still queued will never be written: stop queueing more.
            self.closing = True

    async def _send_loop(self, on_written: Callable[[SimConnection], None]) -> None:
        recv = self._recv
        limit = 512 if self.limits.coalesce else 1
        while True:
            try:
                item = await recv.receive()
            except trio.EndOfChannel:
                return
            # Everything already queued goes out in one write: at tens of thousands of
            # frames a second a syscall and a scheduler round trip per frame would make
            # the simulator, not the client under test, the bottleneck.
            batch: list[Frame | str] = []
            end: _End | None = None
            while True:
                if isinstance(item, _End):
                    end = item
                    break
                batch.append(item)
                if len(batch) >= limit:
                    break
                try:
                    item = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if batch:
                if not await self._write(batch):
                    return
                on_written(self)
            if end is not None:
                self.closing = True
                if end.drop:
                    await self._drop()
                else:
                    self.close_code, self.close_reason = end.code, end.reason or None
                    try:
                        await self.ws.aclose(end.code, end.reason or None)
                    except ConnectionClosed:
                        pass
                return

    async def _write(self, batch: list[Frame | str]) -> bool:
        if self.ws.closed is not None:
            return False  # no data frames after a close frame
        texts = [item if isinstance(item, str) else item.render(self) for item in batch]
        now = ""
        for i, t in enumerate(texts):
            if STAMP in t:
                now = now or str(unix_time_ns() // (1_000 if self.micros else 1_000_000))
                texts[i] = t.replace(STAMP, now)
        try:
            await self.stream.send_all(b"".join(text_frame(t.encode()) for t in texts))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        except trio.Cancelled:
            # Part of a frame may be on the wire: anything written after it (a close
            # frame) would read as that frame's payload. The connection is cut instead.
            self.dropped = True
            raise
        self.sent += len(batch)
        self.last_sent_at = trio.current_time()
        by_key = self.sent_by_key
        sent_ids = self.sent_ids
        for item in batch:
            if isinstance(item, str):
                by_key[""] += 1
                continue
            by_key[item.key] += 1
            if item.trade_ids:
                rec = sent_ids.get(item.key)
                if rec is None:
                    rec = sent_ids[item.key] = SentIds(item.symbol)
                rec.add(item.trade_ids)
        return True

    async def _drop(self) -> None:
        self.dropped = True
        self.close_code, self.close_reason = 1006, "dropped (simulated)"
        # Half-close: the client reads everything already sent, then EOF. A full
        # close with unread client bytes would reset the connection and could
        # discard frames the client had not read yet.
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.sleep(5.0)
        self.scope.cancel()

    async def _pinger(self) -> None:
        limits = self.limits
        while True:
            await trio.sleep(limits.ping_interval)
            with trio.move_on_after(limits.pong_timeout) as cs:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    return
            if cs.cancelled_caught:
                log.warning("sim %s connection %d: no pong within %g s; disconnecting", self.venue, self.id,
                            limits.pong_timeout)
                # Not drop(): a venue does not first deliver what it had queued for a client
                # too slow to answer its pings.
                self.abort(f"no pong within {limits.pong_timeout:g} s")
                return

    async def _age_limit(self, max_age: float) -> None:
        await trio.sleep(max_age)
        self.close(1001, "connection lifetime reached")

    async def _idle_limit(self, limit: float) -> None:
        while True:
            last = max(self.last_ping_at, self.last_sent_at)
            wait = last + limit - trio.current_time()
            if wait <= 0:
                log.info("sim %s connection %d: no ping and no data for %g s; closing", self.venue, self.id, limit)
                self.close(1000, "idle")
                return
            await trio.sleep(wait)

    def __repr__(self) -> str:
        return (f"<SimConnection {self.id} {self.venue} {self.path!r} sent={self.sent} "
                f"{'open' if self.open else f'closed code={self.close_code}'}>")
