"""The control server: one task in the runner's process, listening on ``RUN_DIR/control.sock``.

The socket file is created with mode 0600 inside a 0700 run directory, and
every connection's peer credentials are checked: a peer of another user is
refused. A bad request gets an error reply and changes nothing; no client can
crash the server.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from .._core._convert import to_jsonable
from .._core._runner import Runner
from .._errors import FloxError
from .._loader import load_strategy, parse_spec
from ..execution import RiskExecutor
from ._protocol import (
    COMMANDS,
    MAX_LINE,
    VERSION,
    ControlError,
    PeerRefusedError,
    RequestError,
    dumps,
    socket_path,
)

log = logging.getLogger("flox_trio.control")

_UNIX_PATH_MAX = 107


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def check_peer(sock: Any, expected_uid: int | None = None) -> int:
    """Refuse a peer that is not ``expected_uid`` (default: this process's user).

    Raises:
        PeerRefusedError: the peer runs as another user.
    """
    expected = os.getuid() if expected_uid is None else expected_uid
    uid = peer_uid(sock)
    if uid != expected:
        raise PeerRefusedError(f"control connection refused: peer uid {uid} is not the engine's user {expected}")
    return uid


class ControlServer:
    """Executes control commands against a runner. ``handle(request)`` never raises."""

    def __init__(self, runner: Runner, *, base_dir: Path | None = None, state_dir: Path | None = None,
                 on_change: Callable[[int, Any], None] | None = None) -> None:
        self.runner = runner
        self.base_dir = base_dir
        self.state_dir = state_dir
        #: Called with (slot, spec) after a successful swap/add, and (slot, None) after a remove.
        self.on_change = on_change
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "swap": self._swap, "status": self._status, "slots": self._slots, "add": self._add,
            "remove": self._remove, "halt": self._halt, "resume": self._resume,
        }

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(None, RequestError(f"request is not JSON ({exc}); send one JSON object per line"))
        return await self.handle(request)

    async def handle(self, request: Any) -> dict[str, Any]:
        rid = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict):
                raise RequestError(f"a request is a JSON object, got {type(request).__name__}")
            if request.get("v") != VERSION:
                raise RequestError(f"unsupported protocol version {request.get('v')!r}; this engine speaks v{VERSION}")
            cmd = request.get("cmd")
            handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
            if handler is None:
                raise RequestError(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
            result = await handler(request)
        except FloxError as exc:
            log.warning("control %s refused: %s", request.get("cmd") if isinstance(request, dict) else "?", exc)
            return _error(rid, exc)
        except Exception as exc:  # a bug must not take the engine down; report it to the client
            log.exception("control request %r failed", request)
            return _error(rid, exc)
        return {"v": VERSION, "id": rid, "ok": True, **result}

    # --- commands --------------------------------------------------------------------

    def _slot_arg(self, request: dict[str, Any]) -> int:
        slot = request.get("slot")
        if not isinstance(slot, int) or isinstance(slot, bool):
            raise RequestError(f"'slot' must be a slot index (an integer), got {slot!r}")
        self.runner.slot(slot)  # raises UnknownSlotError for unknown or removed slots
        return slot

    def _build(self, request: dict[str, Any], symbols: list[str]) -> tuple[Any, str]:
        path = request.get("path")
        params = request.get("params", {})
        args = request.get("args", [])
        if not isinstance(path, str):
            raise RequestError(f"'path' must be a strategy like \"file.py:Class\" or \"file.js\", got {path!r}")
        if not isinstance(params, dict):
            raise RequestError(f"'params' must be an object of keyword arguments, got {params!r}")
        if not isinstance(args, list):
            raise RequestError(f"'args' must be a list, got {args!r}")
        spec = parse_spec(path, self.base_dir)
        strategy = load_strategy(spec, symbols, params, args, state_dir=self.state_dir,
                                 runner=self.runner)
        return strategy, str(spec)

    async def _swap(self, request: dict[str, Any]) -> dict[str, Any]:
        index = self._slot_arg(request)
        symbols = [str(s) for s in self.runner.slots[index].symbols]
        strategy, spec = self._build(request, symbols)
        warmup = request.get("warmup")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int | float)):
            raise RequestError(f"'warmup' must be a number of events or seconds, got {warmup!r}")
        report = await self.runner.replace_strategy(index, strategy, warmup=warmup)
        if self.on_change is not None:
            self.on_change(index, request)
        return {"slot": index, "spec": spec, "report": to_jsonable(report)}

    async def _add(self, request: dict[str, Any]) -> dict[str, Any]:
        symbols = request.get("symbols")
        if not (isinstance(symbols, list) and symbols and all(isinstance(s, str) for s in symbols)):
            raise RequestError(f"'symbols' must be a non-empty list of symbols, got {symbols!r}")
        strategy, spec = self._build(request, symbols)
        index = self.runner.add_strategy(strategy)
        if self.on_change is not None:
            self.on_change(index, request)
        return {"slot": index, "spec": spec}

    async def _remove(self, request: dict[str, Any]) -> dict[str, Any]:
        index = self._slot_arg(request)
        await self.runner.remove_strategy(index)
        if self.on_change is not None:
            self.on_change(index, None)
        return {"slot": index}

    async def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"status": to_jsonable(self.runner.status())}

    async def _slots(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"slots": [
            {"index": s.index, "state": s.state.value, "language": s.language, "strategy": s.strategy,
             "spec": s.spec, "symbols": list(s.symbols), "params": s.params, "dispatched": s.dispatched}
            for s in self.runner.status().slots
        ]}

    def _risk(self) -> RiskExecutor:
        ex = self.runner.executor
        if not isinstance(ex, RiskExecutor):
            raise ControlError("this engine's executor has no kill switch: run it with a RiskExecutor "
                               "(a [risk] table in the config)")
        return ex

    async def _halt(self, request: dict[str, Any]) -> dict[str, Any]:
        reason = request.get("reason") or "halted by operator"
        if not isinstance(reason, str):
            raise RequestError(f"'reason' must be a string, got {reason!r}")
        canceled = self._risk().halt(reason)
        return {"halted": True, "canceled": canceled}

    async def _resume(self, request: dict[str, Any]) -> dict[str, Any]:
        self._risk().resume()
        return {"halted": False}


def _error(rid: Any, exc: BaseException) -> dict[str, Any]:
    return {"v": VERSION, "id": rid, "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}


# --- the socket side ------------------------------------------------------------------------


async def _prepare_path(path: Path) -> None:
    run_dir = path.parent
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_dir.stat().st_uid == os.getuid():
        os.chmod(run_dir, 0o700)
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ControlError(f"control socket path {path} is longer than {_UNIX_PATH_MAX} bytes; "
                           "use a shorter --run-dir")
    if path.exists() or path.is_symlink():
        probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            await probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                raise ControlError(f"cannot use control socket {path}: {exc}") from exc
            path.unlink(missing_ok=True)  # a stale socket from an engine that died
        else:
            raise ControlError(f"another engine is serving {path}; stop it or choose another --run-dir")
        finally:
            probe.close()


async def serve_control(
    runner: Runner,
    path: str | Path,
    *,
    base_dir: Path | None = None,
    state_dir: Path | None = None,
    on_change: Callable[[int, Any], None] | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control requests on the Unix socket ``path`` until cancelled.

    ``path`` may be a run directory (the socket is ``RUN_DIR/control.sock``).
    Calls ``task_status.started(socket_path)`` once it accepts connections.
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = socket_path(path)
    await _prepare_path(path)
    server = ControlServer(runner, base_dir=base_dir, state_dir=state_dir, on_change=on_change)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
        sock.listen(16)
        listener = trio.SocketListener(sock)
        log.info("control socket listening on %s", path)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(path)
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(_serve_client, server, stream)
        finally:
            try:
                if os.stat(path).st_ino == inode:
                    path.unlink()
            except FileNotFoundError:
                pass
    finally:
        sock.close()


async def _serve_client(server: ControlServer, stream: trio.SocketStream) -> None:
    try:
        try:
            check_peer(stream.socket)
        except (PeerRefusedError, OSError) as exc:
            log.warning("%s", exc)
            await stream.send_all(dumps(_error(None, exc)))
            return
        buffer = bytearray()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    break
                line = bytes(buffer[:end]).strip()
                del buffer[: end + 1]
                if line:
                    await stream.send_all(dumps(await server.handle_line(line)))
            if len(buffer) > MAX_LINE:
                await stream.send_all(dumps(_error(None, RequestError(
                    f"request line longer than {MAX_LINE} bytes; closing the connection"))))
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:
        log.exception("control connection failed")
    finally:
        await trio.aclose_forcefully(stream)


__all__ = ["ControlServer", "check_peer", "peer_uid", "serve_control"]
