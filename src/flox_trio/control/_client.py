"""The control client: what ``flox-trio swap|status|slots|add|remove|halt|resume`` use."""

from __future__ import annotations

import itertools
import json
import socket as stdlib_socket
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from ._protocol import MAX_LINE, VERSION, ControlError, dumps, socket_path


class ControlCommandError(ControlError):
    """The engine answered a control request with an error."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class ControlClient:
    """A connection to a running engine's control socket.

    Use ``async with ControlClient(run_dir) as client: await client.call("status")``.
    """

    def __init__(self, run_dir: str | Path) -> None:
        path = Path(run_dir)
        self.path = path if path.suffix == ".sock" else socket_path(path)
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
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            await sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise ControlError(f"no engine is listening on {self.path} ({exc.strerror or exc}); "
                               "start one with `flox-trio run CONFIG.toml` or pass its --run-dir") from None
        self._stream = trio.SocketStream(sock)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one raw request object and return the raw reply object."""
        if self._stream is None:
            raise ControlError("the control client is not connected: use 'async with ControlClient(...)'")
        await self._stream.send_all(dumps(message))
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                raise ControlError(f"the engine at {self.path} closed the connection without a reply")
            self._buffer += data
            if len(self._buffer) > 64 * MAX_LINE:
                raise ControlError("the engine's reply is too long")
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Run a command; return the reply, or raise ``ControlCommandError`` with the engine's message."""
        rid = next(self._ids)
        reply = await self.request({"v": VERSION, "id": rid, "cmd": cmd, **fields})
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ControlCommandError(str(err.get("message", reply)), str(err.get("type", "")))
        return reply


def call(run_dir: str | Path, cmd: str, **fields: Any) -> dict[str, Any]:
    """Synchronous one-shot request (opens a Trio loop): ``call(".flox-run", "status")``."""

    async def once() -> dict[str, Any]:
        async with ControlClient(run_dir) as client:
            return await client.call(cmd, **fields)

    return trio.run(once)
