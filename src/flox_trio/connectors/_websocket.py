"""The client WebSocket of a market-data connection: an h11 handshake, and a frame reader that hands over every read.

Why not trio-websocket's connection (the simulator, the order-entry
executors and the benches still use it): a market-data connection reads
small text frames by the tens of thousands a second, and trio-websocket
spends about 18 µs on each on this project's 2-core machine, 7 µs of it in
wsproto's frame parser and most of the rest in the task switch it makes per
message between its reader task and ``get_message()``. Here ``receive()``
returns every message one read from the socket completed, parsed in about
0.4 µs each, so the connector decodes them without a task switch in between
(``bench/live.py`` prints both costs).

What it keeps of trio-websocket is the contract the supervisor relies on:
its exceptions (``ConnectionRejected`` with the HTTP status, ``HandshakeError``,
``ConnectionClosed`` carrying a ``CloseReason`` with the close code), messages
already read are returned before a remote close is raised, ``ping()`` waits
for its pong (a pong also answers every earlier ping), the venue's pings are
answered with its payload, and ``aclose()`` runs the close handshake.

Deliberate differences: a text frame is returned as the bytes it came as
(the JSON decoders read bytes and refuse invalid UTF-8 as a malformed frame,
which is counted, where a WebSocket library would fail the connection), and
no extension is offered (the venues send plain frames unless asked).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct

import h11
import trio
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected, HandshakeError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CONTINUATION = 1, 2, 0
_CLOSE, _PING, _PONG = 8, 9, 10
# Largest HTTP response head and rejection body read during the handshake.
_MAX_HANDSHAKE = 64 * 1024


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame from a client: masked, as RFC 6455 requires of every client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return head + mask
    # XOR as one big integer: byte i of the payload meets byte i % 4 of the mask.
    masked = int.from_bytes(payload, "little") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return head + mask + masked.to_bytes(n, "little")


class MarketSocket:
    """An open client WebSocket; ``receive()`` is called by one task only (the connection's reader)."""

    __slots__ = ("_close", "_closing_sent", "_frag_size", "_fragments", "_have", "_max_message_size", "_need",
                 "_out", "_pings", "_ready", "_receive_size", "_rest", "_send_lock", "_stream", "closed")

    def __init__(self, stream: trio.abc.Stream, trailing: bytes, *, max_message_size: int,
                 receive_buffer_size: int) -> None:
        self._stream = stream
        # Bytes read but not parsed yet (the start of a frame), and how many of them there are.
        self._rest: list[bytes] = []
        self._have = 0
        # Bytes the frame at the start of ``_rest`` takes in all (0: not known yet): a large frame
        # is joined once, when it is whole, not at every read.
        self._need = 0
        self._max_message_size = max_message_size
        self._receive_size = receive_buffer_size
        self._send_lock = trio.StrictFIFOLock()
        # A fragmented message being put together, and its size so far.
        self._fragments: list[bytes] | None = None
        self._frag_size = 0
        # Control frames owed to the peer (pongs, a close reply), sent before the next read.
        self._out: list[bytes] = []
        # In-flight pings, oldest first: payload → [woken, answered].
        self._pings: dict[bytes, list[trio.Event | bool]] = {}
        # Why the connection is over (set once, by whichever end closed first, or by a broken stream).
        self._close: CloseReason | None = None
        self._closing_sent = False
        #: The close reason once the connection is closed, None while it is open.
        self.closed: CloseReason | None = None
        # What came with the handshake's answer: returned by the first receive().
        self._ready: list[bytes] = []
        if trailing:
            self._keep(trailing, self._parse(trailing, self._ready))

    # --- reading ---------------------------------------------------------------------------------

    async def receive(self) -> list[bytes]:
        """Wait for the next read that completes messages; return them all, in order (never empty).

        Raises ``ConnectionClosed`` once the connection is closed and every
        message read before that was returned.
        """
        if self._ready:
            ready, self._ready = self._ready, []
            return ready
        while True:
            if self._out:
                await self._flush()
            if self._close is not None:
                self._finish()
                raise ConnectionClosed(self._close)
            try:
                data = await self._stream.receive_some(self._receive_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._set_close(CloseReason(1006, None))
                continue
            if type(data) is not bytes:
                data = bytes(data)
            if self._rest:
                self._rest.append(data)
                self._have += len(data)
                if self._have < self._need:
                    continue
                buf = b"".join(self._rest)
            else:
                buf = data
            out: list[bytes] = []
            self._keep(buf, self._parse(buf, out))
            if out:
                return out

    def _keep(self, buf: bytes, used: int) -> None:
        """Hold what ``_parse`` left of ``buf`` for the next read."""
        if used < len(buf):
            rest = buf[used:]
            self._rest = [rest]
            self._have = len(rest)
        else:
            self._rest = []
            self._have = 0

    def _parse(self, buf: bytes, out: list[bytes]) -> int:
        """Take the whole frames at the start of ``buf`` (messages into ``out``); return the bytes used."""
        i = 0
        n = len(buf)
        self._need = 0
        while n - i >= 2 and self._close is None:
            b0 = buf[i]
            b1 = buf[i + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - i < 4:
                    break
                length = int.from_bytes(buf[i + 2:i + 4], "big")
                head = 4
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2:i + 10], "big")
                head = 10
            opcode = b0 & 0x0F
            if b0 & 0x70 or b1 & 0x80:
                self._fail(1002, "reserved bits set" if b0 & 0x70 else "a masked frame from the server")
                break
            if opcode < _CLOSE and length + (self._frag_size if opcode == _CONTINUATION else 0) \
                    > self._max_message_size:
                # Refused before its payload arrives, so a huge frame is never buffered.
                self._fail(1009, f"Exceeded maximum message size: {self._max_message_size} bytes")
                break
            end = i + head + length
            if end > n:
                self._need = end - i
                break
            fin = b0 & 0x80
            if opcode in (_TEXT, _BINARY):
                if self._fragments is not None:
                    self._fail(1002, "a new message inside a fragmented one")
                    break
                if fin:
                    out.append(buf[i + head:end])
                else:
                    self._fragments = [buf[i + head:end]]
                    self._frag_size = length
            elif opcode == _CONTINUATION:
                fragments = self._fragments
                if fragments is None:
                    self._fail(1002, "a continuation frame without a message")
                    break
                fragments.append(buf[i + head:end])
                self._frag_size += length
                if fin:
                    out.append(b"".join(fragments))
                    self._fragments = None
                    self._frag_size = 0
            elif opcode >= _CLOSE:
                if not fin or length > 125:
                    self._fail(1002, "a fragmented or oversized control frame")
                    break
                payload = buf[i + head:end]
                if opcode == _PING:
                    self._out.append(client_frame(_PONG, payload))
                elif opcode == _PONG:
                    self._on_pong(payload)
                elif opcode == _CLOSE:
                    self._on_close(payload)
                else:
                    self._fail(1002, f"unknown control opcode {opcode}")
                    break
            else:
                self._fail(1002, f"unknown opcode {opcode}")
                break
            i = end
        return i

    def _on_pong(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited, or for a ping already answered
        while self._pings:
            key, state = next(iter(self._pings.items()))
            del self._pings[key]
            state[1] = True
            event = state[0]
            assert isinstance(event, trio.Event)
            event.set()
            if key == payload:
                break

    def _on_close(self, payload: bytes) -> None:
        if len(payload) == 1:
            self._fail(1002, "a close frame with a one-byte payload")
            return
        if payload:
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode("utf-8", "replace") or None
        else:
            code, reason = 1005, None
        self._set_close(CloseReason(code, reason))
        if not self._closing_sent:
            # Echo the code, as the close handshake asks.
            self._out.append(client_frame(_CLOSE, payload[:2]))
            self._closing_sent = True

    def _fail(self, code: int, why: str) -> None:
        self._set_close(CloseReason(code, why))
        if not self._closing_sent:
            self._out.append(client_frame(_CLOSE, code.to_bytes(2, "big") + why.encode()[:120]))
            self._closing_sent = True

    def _set_close(self, reason: CloseReason) -> None:
        if self._close is None:
            self._close = reason

    def _finish(self) -> None:
        """The connection is over: wake every ping still waiting (it raises ConnectionClosed)."""
        self.closed = self._close
        for event, _answered in self._pings.values():
            assert isinstance(event, trio.Event)
            event.set()
        self._pings.clear()

    # --- writing ---------------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._set_close(CloseReason(1006, None))
                self._finish()
                raise ConnectionClosed(self._close) from None

    async def _flush(self) -> None:
        out, self._out = self._out, []
        try:
            await self._send(b"".join(out))
        except ConnectionClosed:
            pass  # the read that follows reports it

    async def send_message(self, text: str) -> None:
        """Send one text message; ``ConnectionClosed`` if the connection is closing or closed."""
        if self._close is not None:
            raise ConnectionClosed(self._close)
        await self._send(client_frame(_TEXT, text.encode()))

    async def ping(self) -> None:
        """Send a ping and wait for its pong; ``ConnectionClosed`` if the connection ends first."""
        if self._close is not None:
            raise ConnectionClosed(self._close)
        payload = struct.pack("!I", random.getrandbits(32))
        while payload in self._pings:
            payload = struct.pack("!I", random.getrandbits(32))
        event = trio.Event()
        state: list[trio.Event | bool] = [event, False]
        self._pings[payload] = state
        try:
            await self._send(client_frame(_PING, payload))
            await event.wait()
        finally:
            self._pings.pop(payload, None)
        if not state[1]:
            raise ConnectionClosed(self._close)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """The close handshake: send a close frame (unless one was), then read until the venue's arrives.

        Messages that come meanwhile are discarded. The caller bounds the wait
        and closes the TCP stream afterwards.
        """
        if self._close is None:
            self._set_close(CloseReason(code, reason))
            if not self._closing_sent:
                self._closing_sent = True
                self._out.append(client_frame(_CLOSE, code.to_bytes(2, "big") + (reason or "").encode()[:120]))
            local = True
        else:
            local = False
        if self._out:
            await self._flush()
        self._finish()
        if not local:
            return  # the venue closed first (or the stream broke): nothing more to wait for
        while True:
            try:
                data = await self._stream.receive_some(self._receive_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            buf = b"".join(self._rest) + bytes(data)
            i = 0
            # Only the frame boundaries matter now: skip to the venue's close frame.
            while len(buf) - i >= 2:
                length = buf[i + 1] & 0x7F
                head = 2 if length < 126 else 4 if length == 126 else 10
                if len(buf) - i < head:
                    break
                if length >= 126:
                    length = int.from_bytes(buf[i + 2:i + head], "big")
                if len(buf) - i < head + length:
                    break
                if buf[i] & 0x0F == _CLOSE:
                    return
                i += head + length
            self._rest = [buf[i:]]


async def connect(stream: trio.abc.Stream, host: str, resource: str, *, max_message_size: int,
                  receive_buffer_size: int) -> MarketSocket:
    """The opening handshake on ``stream`` (``host`` as the Host header); the open socket.

    Raises ``ConnectionRejected`` for an answer other than 101 (with its
    status, headers and body), ``HandshakeError`` for anything else that is
    not a WebSocket handshake, and whatever the stream raises.
    """
    key = base64.b64encode(os.urandom(16))
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=resource, headers=[
        (b"Host", host.encode("idna")), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", key), (b"Sec-WebSocket-Version", b"13"), (b"User-Agent", b"flox-trio")])
    try:
        await stream.send_all(conn.send(request) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
    except trio.BrokenResourceError as exc:
        raise HandshakeError(f"the connection to {host} broke during the WebSocket handshake") from exc
    rejected: h11.Response | None = None
    body = b""
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HandshakeError(f"{host} answered the WebSocket handshake with bad HTTP: {exc}") from exc
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(receive_buffer_size)
            except trio.BrokenResourceError as exc:
                raise HandshakeError(f"the connection to {host} broke during the WebSocket handshake") from exc
            received += len(data)
            if received > 2 * _MAX_HANDSHAKE:
                raise HandshakeError(f"{host} sent more than {_MAX_HANDSHAKE} bytes of handshake answer")
            conn.receive_data(bytes(data))
            if not data and rejected is None:
                raise HandshakeError(f"{host} closed the connection during the WebSocket handshake")
            continue
        if isinstance(event, h11.InformationalResponse):
            if event.status_code != 101:
                raise ConnectionRejected(event.status_code, tuple(event.headers), None)
            _check_accept(event, key, host)
            trailing, _closed = conn.trailing_data
            return MarketSocket(stream, bytes(trailing), max_message_size=max_message_size,
                                receive_buffer_size=receive_buffer_size)
        if isinstance(event, h11.Response):
            rejected = event
        elif isinstance(event, h11.Data):
            if len(body) < _MAX_HANDSHAKE:
                body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.PAUSED:
            if rejected is None:
                raise HandshakeError(f"{host} closed the connection during the WebSocket handshake")
            raise ConnectionRejected(rejected.status_code, tuple(rejected.headers), body)


def _check_accept(event: h11.InformationalResponse, key: bytes, host: str) -> None:
    headers = {name.lower(): value for name, value in event.headers}
    expected = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    if headers.get(b"upgrade", b"").lower() != b"websocket" \
            or b"upgrade" not in headers.get(b"connection", b"").lower() \
            or headers.get(b"sec-websocket-accept") != expected:
        raise HandshakeError(f"{host} answered 101 without a valid WebSocket upgrade (Upgrade, Connection, "
                             "Sec-WebSocket-Accept)")
