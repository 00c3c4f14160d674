"""The control client: what ``flox-trio swap|status|slots|add|remove|halt|resume`` use."""

from __future__ import annotations

import itertools
import json
import os
import socket as stdlib_socket
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from ._protocol import MAX_LINE, VERSION, ControlError, RunDirError, dumps, split_socket_path
from ._rundir import check_client_socket


class ControlCommandError(ControlError):
    """The engine answered a control request with an error."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class ControlClient:
    """A connection to a running engine's control socket.

    Use ``async with ControlClient(run_dir) as client: await client.call("status")``.

    The client talks only to an engine of this user: a socket in a run
    directory that another user owns or can write to, a socket owned by
    another user, or a listening process of another user is refused with
    ``RunDirError`` before any command is sent (it could be answering in the
    engine's place).
    """

    def __init__(self, run_dir: str | Path) -> None:
        _, self.path = split_socket_path(run_dir)
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def connect(self) -> None:
        check_client_socket(self.path)
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            await sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise ControlError(f"no engine is listening on {self.path} ({exc.strerror or exc}); "
                               "start one with `flox-trio run CONFIG.toml` or pass its --run-dir") from None
        try:
            uid = _server_uid(sock)
        except OSError:
            uid = os.getuid()  # no SO_PEERCRED here: the directory check above stands
        if uid != os.getuid():
            sock.close()
            raise RunDirError(f"the process listening on {self.path} runs as uid {uid}, not as you "
                              f"(uid {os.getuid()}): another user could be answering in the engine's place")
        self._stream = trio.SocketStream(sock)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one raw request object and return the raw reply object."""
        if self._stream is None:
            raise ControlError("the control client is not connected: use 'async with ControlClient(...)'")
        try:
            await self._stream.send_all(dumps(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the engine may have answered (a refusal) and closed before reading: read the answer
        while b"\n" not in self._buffer:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                raise ControlError(f"the engine at {self.path} closed the connection without a reply")
            self._buffer += data
            if len(self._buffer) > 64 * MAX_LINE:
                raise ControlError("the engine's reply is too long")
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError):
            raise ControlError(f"the engine at {self.path} sent a reply that is not JSON") from None
        if not isinstance(reply, dict):
            raise ControlError(f"the engine at {self.path} sent a reply that is not a JSON object")
        return reply

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Run a command; return the reply, or raise ``ControlCommandError`` with the engine's message."""
        rid = next(self._ids)
        reply = await self.request({"v": VERSION, "id": rid, "cmd": cmd, **fields})
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ControlCommandError(str(err.get("message", reply)), str(err.get("type", "")))
        return reply


def _server_uid(sock: Any) -> int:
    import struct

    raw = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


def call(run_dir: str | Path, cmd: str, **fields: Any) -> dict[str, Any]:
    """Synchronous one-shot request (opens a Trio loop): ``call(".flox-run", "status")``."""

    async def once() -> dict[str, Any]:
        async with ControlClient(run_dir) as client:
            return await client.call(cmd, **fields)

    return trio.run(once)
