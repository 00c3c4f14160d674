"""The market-data WebSocket client (``connectors._websocket``) against a hand-made server on a memory stream.

The connectors' other tests run it against the simulator's real
trio-websocket server; these write the frames a server could send byte by
byte (fragments, control frames between them, frames split anywhere,
protocol violations) and read what the client answers with wsproto's own
frame parser, so both directions are checked by an implementation that is
not ours.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from flox_trio.connectors._websocket import MarketSocket, connect

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False, rsv: int = 0) -> bytes:
    """A frame as a server writes it (unmasked unless asked)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if masked:
        key = b"\x01\x02\x03\x04"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(payload: str | bytes, **kw: Any) -> bytes:
    return frame(1, payload.encode() if isinstance(payload, str) else payload, **kw)


class Server:
    """The server end: answers the handshake, writes raw bytes, reads the client's frames with wsproto."""

    def __init__(self, stream: trio.testing.MemorySendStream | Any) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.SERVER)
        self.request: h11.Request | None = None

    async def handshake(self, *, status: int = 101, accept: bytes | None = None, extra: bytes = b"",
                        body: bytes = b"") -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some())
                continue
            assert isinstance(event, h11.Request)
            self.request = event
            break
        key = dict(self.request.headers)[b"sec-websocket-key"]
        if status != 101:
            await self.stream.send_all(
                f"HTTP/1.1 {status} Nope\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
            return
        token = accept if accept is not None else base64.b64encode(hashlib.sha1(key + GUID).digest())
        await self.stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + token + b"\r\n\r\n" + extra)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def events(self) -> list[Any]:
        """What the client sent since the last call (waits for something)."""
        self.ws.receive_data(await self.stream.receive_some())
        return list(self.ws.events())


async def pair(**kw: Any) -> tuple[MarketSocket, Server]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handshake)
        ws = await connect(client_stream, "venue.test", "/stream?streams=a@trade", max_message_size=kw.get(
            "max_message_size", 1 << 20), receive_buffer_size=kw.get("receive_buffer_size", 65536))
    return ws, server


async def test_the_handshake_asks_for_the_resource_with_a_key() -> None:
    ws, server = await pair()
    assert server.request is not None
    headers = dict(server.request.headers)
    assert server.request.target == b"/stream?streams=a@trade"
    assert headers[b"host"] == b"venue.test" and headers[b"upgrade"] == b"websocket"
    assert len(base64.b64decode(headers[b"sec-websocket-key"])) == 16
    assert ws.closed is None


async def test_every_message_of_one_read_comes_back_at_once_in_order() -> None:
    ws, server = await pair()
    await server.send(b"".join(text(f'{{"n":{i}}}') for i in range(300)))
    got = await ws.receive()
    assert got == [f'{{"n":{i}}}'.encode() for i in range(300)]


async def test_lengths_of_every_size_class() -> None:
    ws, server = await pair()
    payloads = [b"x" * n for n in (0, 1, 125, 126, 65535, 65536, 200_000)]
    for p in payloads:
        await server.send(text(p))
    got: list[bytes] = []
    while len(got) < len(payloads):
        got += await ws.receive()
    assert got == payloads


async def test_fragments_are_joined_and_a_ping_between_them_is_answered() -> None:
    ws, server = await pair()
    await server.send(text("ab", fin=False) + frame(9, b"hi") + frame(0, b"cd", fin=False) + frame(0, b"ef"))
    assert await ws.receive() == [b"abcdef"]
    # The pong goes out before the next read.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.receive)
        (pong,) = await server.events()
        nursery.cancel_scope.cancel()
    assert isinstance(pong, Pong) and bytes(pong.payload) == b"hi"


async def test_the_pong_carries_the_pings_payload() -> None:
    ws, server = await pair()
    await server.send(frame(9, b"payload-1") + text("m"))
    assert await ws.receive() == [b"m"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.receive)
        events = await server.events()
        nursery.cancel_scope.cancel()
    pongs = [e for e in events if isinstance(e, Pong)]
    assert [bytes(p.payload) for p in pongs] == [b"payload-1"]


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.binary(max_size=300), min_size=1, max_size=30),
       cuts=st.lists(st.integers(1, 50), min_size=1, max_size=200))
def test_frames_split_anywhere_come_out_whole(messages: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(text(m) for m in messages)

    async def main() -> None:
        ws, server = await pair()
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            async def write() -> None:
                i = 0
                for n in itertools_cycle(cuts):
                    if i >= len(wire):
                        return
                    await server.send(wire[i:i + n])
                    i += n
            nursery.start_soon(write)
            while len(got) < len(messages):
                got += await ws.receive()
        assert got == messages

    trio.run(main)


def itertools_cycle(values: list[int]) -> Any:
    while True:
        yield from values


async def test_client_frames_are_masked_as_the_rfc_asks() -> None:
    ws, server = await pair()
    await ws.send_message('{"method":"SUBSCRIBE","params":["a@trade"],"id":1}')
    await ws.send_message("x" * 70_000)
    events: list[Any] = []
    while len(events) < 2:
        events += await server.events()
    assert [e.data for e in events] == ['{"method":"SUBSCRIBE","params":["a@trade"],"id":1}', "x" * 70_000]
    assert all(isinstance(e, TextMessage) for e in events)


async def test_ping_waits_for_its_pong_and_a_pong_answers_earlier_pings() -> None:
    ws, server = await pair()
    done: list[int] = []

    async def ping(n: int) -> None:
        await ws.ping()
        done.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping, 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ping, 2)
        await trio.testing.wait_all_tasks_blocked()
        pings = [e for e in await server.events() if isinstance(e, Ping)]
        assert len(pings) == 2 and done == []
        nursery.start_soon(ws.receive)
        # Only the second ping is answered: both return.
        await server.send(frame(10, bytes(pings[1].payload)))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(done) == [1, 2]
        nursery.cancel_scope.cancel()


async def test_a_remote_close_comes_after_the_messages_before_it_and_is_echoed() -> None:
    ws, server = await pair()
    await server.send(text("last") + frame(8, (4000).to_bytes(2, "big") + b"maintenance"))
    assert await ws.receive() == [b"last"]
    with pytest.raises(ConnectionClosed) as info:
        await ws.receive()
    assert info.value.reason is not None
    assert (info.value.reason.code, info.value.reason.reason) == (4000, "maintenance")
    (echo,) = await server.events()
    assert isinstance(echo, CloseConnection) and echo.code == 4000
    with pytest.raises(ConnectionClosed):
        await ws.send_message("too late")
    with pytest.raises(ConnectionClosed):
        await ws.ping()


async def test_a_close_without_a_code_and_a_dropped_stream() -> None:
    ws, server = await pair()
    await server.send(frame(8, b""))
    with pytest.raises(ConnectionClosed) as info:
        await ws.receive()
    assert info.value.reason is not None and info.value.reason.code == 1005
    ws, server = await pair()
    await server.send(text("a"))
    await server.stream.aclose()
    assert await ws.receive() == [b"a"]
    with pytest.raises(ConnectionClosed) as info:
        await ws.receive()
    assert info.value.reason is not None and info.value.reason.code == 1006


@pytest.mark.parametrize(("wire", "code"), [
    (text("x", masked=True), 1002),
    (text("x", rsv=4), 1002),
    (frame(0, b"orphan"), 1002),
    (text("a", fin=False) + text("b"), 1002),
    (frame(9, b"p", fin=False), 1002),
    (frame(9, b"p" * 126), 1002),
    (frame(3, b"?"), 1002),
    (frame(8, b"\x03"), 1002),
    # Refused from its header: the 2 MB payload is never waited for.
    (text(b"").replace(b"\x81\x00", b"\x81\x7f" + (2_000_000).to_bytes(8, "big")), 1009),
    (text("a" * 600, fin=False) + frame(0, b"b" * 600), 1009),
])
async def test_protocol_violations_close_the_connection_with_the_rfc_code(wire: bytes, code: int) -> None:
    ws, server = await pair(max_message_size=1000)
    await server.send(text("before") + wire)
    assert await ws.receive() == [b"before"]
    with pytest.raises(ConnectionClosed) as info:
        await ws.receive()
    assert info.value.reason is not None and info.value.reason.code == code
    (close,) = [e for e in await server.events() if isinstance(e, CloseConnection)]
    assert close.code == code


async def test_aclose_runs_the_close_handshake() -> None:
    ws, server = await pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.aclose)
        (close,) = await server.events()
        assert isinstance(close, CloseConnection) and close.code == 1000
        # Data still on the wire is skipped; the server's close ends the handshake.
        await server.send(text("late") + frame(8, (1000).to_bytes(2, "big")))
    assert ws.closed is not None and ws.closed.code == 1000
    with pytest.raises(ConnectionClosed):
        await ws.receive()


@pytest.mark.parametrize(("status", "accept", "error"), [
    (404, None, ConnectionRejected),
    (503, None, ConnectionRejected),
    (101, b"bm90IHRoZSB0b2tlbg==", HandshakeError),
])
async def test_a_refused_or_wrong_handshake_raises(status: int, accept: bytes | None, error: type) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: server.handshake(status=status, accept=accept, body=b'{"msg":"no"}'))
        with pytest.raises(error) as info:
            await connect(client_stream, "venue.test", "/", max_message_size=1000, receive_buffer_size=1000)
    if isinstance(info.value, ConnectionRejected):
        assert info.value.status_code == status and info.value.body == b'{"msg":"no"}'


async def test_a_connection_closed_during_the_handshake_raises() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def hang_up() -> None:
        await server_stream.receive_some()
        await server_stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        with pytest.raises(HandshakeError, match="closed the connection during the WebSocket handshake"):
            await connect(client_stream, "venue.test", "/", max_message_size=1000, receive_buffer_size=1000)


async def test_bytes_after_the_handshake_response_are_the_first_frames() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: server.handshake(extra=text("early")))
        ws = await connect(client_stream, "venue.test", "/", max_message_size=1000, receive_buffer_size=1000)
    assert await ws.receive() == [b"early"]
