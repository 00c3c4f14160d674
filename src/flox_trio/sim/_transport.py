"""The simulator's transport: one TCP listener for WebSockets and plain HTTP.

The request head decides: a WebSocket upgrade goes to trio-websocket (which
does the handshake, reads client messages and answers pings), anything else is
HTTP/1.1 through h11 (the Binance REST endpoints). Every client's socket is
wrapped in a ``_SimStream``, which replays the head it was routed by and can
stall like a hung server.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Awaitable, Callable

import h11
import trio
import trio_websocket
from trio_websocket import WebSocketRequest

_MAX_HEAD = 64 * 1024

#: One HTTP answer: status, JSON body, and headers beyond content-type and content-length.
HttpResponse = tuple[int, bytes, list[tuple[bytes, bytes]]]
#: Answers one HTTP request: (method, target) → response.
HttpHandler = Callable[[str, str], Awaitable[HttpResponse]]
#: Takes one WebSocket handshake: accepts or rejects it, and serves it until it ends.
WebSocketHandler = Callable[[WebSocketRequest, "_SimStream"], Awaitable[None]]
#: Answers one HTTP request that needs its headers (signed REST): (method, target, lower-case headers) → response.
SignedHttpHandler = Callable[[str, str, dict[str, str]], Awaitable[HttpResponse]]


class _SimStream(trio.abc.HalfCloseableStream):
    """The TCP stream under one client: replays the bytes read to route the request, and can stall."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.prefix = b""
        self.stall_until = -math.inf
        # The sender writes pre-framed batches while trio-websocket writes pongs and
        # close frames: whole writes, one at a time.
        self._lock = trio.StrictFIFOLock()

    def stall(self, seconds: float) -> None:
        """Hold every outgoing byte for ``seconds`` from now."""
        self.stall_until = trio.current_time() + seconds

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            # A stall holds every outgoing byte (data, pongs, pings, close frames), like a hung server.
            if self.stall_until > trio.current_time():
                await trio.sleep_until(self.stall_until)
                # A client that gave up meanwhile has closed its end. The first write to it
                # would still be taken by the kernel and lost, and counted as sent: refuse it,
                # as the write after it would fail.
                if self._peer_closed():
                    raise trio.BrokenResourceError("the client closed the connection during the stall")
            await self.inner.send_all(data)

    def _peer_closed(self) -> bool:
        try:
            with socket.socket(fileno=os.dup(self.inner.socket.fileno())) as sock:
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # open, nothing to read
        except OSError:
            return True  # reset

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def text_frame(payload: bytes) -> bytes:
    """An unfragmented, unmasked server text frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Transport:
    """The handler of every accepted TCP connection (``trio.serve_listeners(transport, ...)``)."""

    def __init__(self, on_websocket: WebSocketHandler, on_http: HttpHandler,
                 on_signed_http: SignedHttpHandler | None = None, signed_paths: frozenset[str] = frozenset()) -> None:
        self._on_websocket = on_websocket
        self._on_http = on_http
        self._on_signed_http = on_signed_http
        self._signed_paths = signed_paths

    async def __call__(self, tcp: trio.SocketStream) -> None:
        stream = _SimStream(tcp)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await tcp.receive_some(65536)
                if not data:
                    return
                head += data
                if len(head) > _MAX_HEAD:
                    return
            probe = h11.Connection(h11.SERVER)
            probe.receive_data(head)
            event = probe.next_event()
            if not isinstance(event, h11.Request):
                return
            headers = {k.lower(): v.lower() for k, v in event.headers}
            stream.prefix = head
            if headers.get(b"upgrade") == b"websocket":
                await self._serve_websocket(stream)
            else:
                await self._serve_http(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(tcp)

    async def _serve_websocket(self, stream: _SimStream) -> None:
        async with trio.open_nursery() as ws_nursery:
            request = await trio_websocket.wrap_server_stream(ws_nursery, stream, message_queue_size=64)
            try:
                await self._on_websocket(request, stream)
            finally:
                # trio-websocket's reader task lives in this nursery; the connection is over.
                ws_nursery.cancel_scope.cancel()

    async def _serve_http(self, stream: _SimStream) -> None:
        h = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                method, target = request.method.decode(), request.target.decode()
                if self._on_signed_http is not None and target.split("?", 1)[0] in self._signed_paths:
                    headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                    status, body, extra = await self._on_signed_http(method, target, headers)
                else:
                    status, body, extra = await self._on_http(method, target)
                h_out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *extra]
                await stream.send_all(h.send(h11.Response(status_code=status, headers=h_out)) or b"")
                await stream.send_all(h.send(h11.Data(data=body)) or b"")
                await stream.send_all(h.send(h11.EndOfMessage()) or b"")
                if h.our_state is h11.MUST_CLOSE:
                    return
                h.start_next_cycle()
                request = None
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
