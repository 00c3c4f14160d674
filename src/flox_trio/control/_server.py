"""The control server: one task in the runner's process, listening on ``RUN_DIR/control.sock``.

The socket file is created with mode 0600 inside a run directory that only
this user can write to (created 0700; one another user could write to is
refused, see ``_rundir``), and every connection's peer credentials are
checked: a peer of another user is refused. A bad request gets an error
reply and changes nothing; no client can crash or hang the server: file
descriptors running out, too many connections, idle or slow clients,
garbage, huge lines and hang-ups are all survived.
"""

from __future__ import annotations

import json
import logging
import os
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from .._core._convert import to_jsonable
from .._core._runner import Runner
from .._core._status import StrategyInfo
from .._errors import FloxError, describe_exception
from .._loader import load_strategy, parse_spec
from ..execution import RiskExecutor
from ._protocol import (
    COMMANDS,
    MAX_LINE,
    VERSION,
    ControlBusyError,
    ControlError,
    PeerRefusedError,
    RequestError,
    RunDirError,
    dumps,
    split_socket_path,
)
from ._rundir import claim_socket_path, prepare_run_dir

log = logging.getLogger("flox_trio.control")


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
        except RecursionError:
            return _error(None, RequestError("request is nested too deeply; send one flat JSON object per line"))
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
        except (Exception, SystemExit) as exc:
            # A bug, or strategy code run by a swap calling sys.exit(), must not take
            # the engine down: report it to the client.
            log.exception("control request %s failed", _short(request))
            return _error(rid, exc)
        return {"v": VERSION, "id": rid, "ok": True, **result}

    # --- commands --------------------------------------------------------------------

    def _slot_arg(self, request: dict[str, Any]) -> int:
        slot = request.get("slot")
        if not isinstance(slot, int) or isinstance(slot, bool):
            raise RequestError(f"'slot' must be a slot index (an integer), got {slot!r}")
        self.runner.slot(slot)  # raises UnknownSlotError for unknown or removed slots
        return slot

    def _build(self, request: dict[str, Any], symbols: list[str],
               replacing: StrategyInfo | None = None, declared: bool = False) -> tuple[Any, str]:
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
                                 runner=self.runner, replacing=replacing, declared=declared)
        return strategy, str(spec)

    async def _swap(self, request: dict[str, Any]) -> dict[str, Any]:
        index = self._slot_arg(request)
        symbols = [str(s) for s in self.runner.slots[index].symbols]
        warmup = request.get("warmup")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int | float)):
            raise RequestError(f"'warmup' must be a number of events or seconds, got {warmup!r}")
        old = self.runner.slot(index).host.info
        # A swap re-parameterises what runs: it starts from the slot's parameters
        # unless the client asks for the new strategy's defaults ("fresh").
        strategy, spec = self._build(request, symbols, None if request.get("fresh") else old)
        report = await self.runner.replace_strategy(index, strategy, warmup=warmup)
        new = self.runner.slot(index).host.info
        named = {**(request.get("params") or {}), "factory": None, **({"args": None} if "args" in request else {})}
        unnamed = unnamed_changes(old.params, new.params, named)
        for change in unnamed:
            log.warning("swap of slot %d changed %s, a parameter the request did not name", index, change)
        if self.on_change is not None:
            self.on_change(index, {**request, **_binding_fields(new)})
        return {"slot": index, "spec": spec, "report": to_jsonable(report),
                "params": {k: v for k, v in new.params.items() if k != "symbols"}, "unnamed_changes": unnamed}

    async def _add(self, request: dict[str, Any]) -> dict[str, Any]:
        symbols = request.get("symbols")
        declared = symbols is None
        if declared:
            # No symbols named: the strategy's own, or else the ones this engine trades.
            symbols = self._engine_symbols()
        if not (isinstance(symbols, list) and symbols and all(isinstance(s, str) for s in symbols)):
            raise RequestError(f"'symbols' must be a non-empty list of symbols, got {symbols!r}")
        strategy, spec = self._build(request, symbols, declared=declared)
        index = self.runner.add_strategy(strategy)
        if self.on_change is not None:
            self.on_change(index, request)
        return {"slot": index, "spec": spec, "symbols": [str(s) for s in self.runner.slots[index].symbols]}

    def _engine_symbols(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.runner.slots:
            if s.active:
                seen.update((str(sym), None) for sym in s.symbols)
        if not seen:
            raise RequestError("no slot is running to take symbols from: name them (--symbols BTCUSDT ...)")
        return list(seen)

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
        self.runner.record_control("halt", reason)
        return {"halted": True, "canceled": canceled}

    async def _resume(self, request: dict[str, Any]) -> dict[str, Any]:
        self._risk().resume()
        self.runner.record_control("resume", "")
        return {"halted": False}


def unnamed_changes(old: dict[str, Any], new: dict[str, Any], named: dict[str, Any]) -> list[str]:
    """``"qty 0.01→1.0"`` for each parameter a swap changed that the request did not name."""
    keys = (set(old) | set(new)) - set(named) - {"symbols"}
    return [f"{k} {old.get(k, '(unset)')!r}→{new.get(k, '(unset)')!r}"
            for k in sorted(keys, key=str) if old.get(k, _UNSET) != new.get(k, _UNSET)]


_UNSET = object()


def _binding_fields(info: StrategyInfo) -> dict[str, Any]:
    """What the slot now runs with, for ``--reload`` to build it again."""
    if info.language == "javascript":
        return {"params": {}, "args": list(info.params.get("args") or ())}
    return {"params": {k: v for k, v in info.params.items() if k != "symbols"}}


def _error(rid: Any, exc: BaseException) -> dict[str, Any]:
    # describe_exception: even an exception whose __str__ raises (strategy code) gives a message.
    text = describe_exception(exc)
    prefix = f"{type(exc).__name__}: "
    message = text[len(prefix):] if text.startswith(prefix) else text
    return {"v": VERSION, "id": rid, "ok": False, "error": {"type": type(exc).__name__, "message": message}}


def _short(value: Any, limit: int = 300) -> str:
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - JSON values always have a repr
        text = "<unprintable>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the socket side ------------------------------------------------------------------------

#: At most this many control connections at once; more are answered with an error and closed.
MAX_CONNECTIONS = 64
#: A connection with no complete request for this long (Trio clock, seconds) is closed.
IDLE_TIMEOUT = 60.0
#: A reply the client does not read within this long closes its connection.
SEND_TIMEOUT = 10.0
#: How long accept() rests after running out of file descriptors or memory, at first and at most.
ACCEPT_BACKOFF = 0.05
ACCEPT_BACKOFF_MAX = 1.0


@attrs.define
class ConnectionStats:
    """What the control socket has seen: connections now, and those it refused or closed."""

    active: int = 0
    accepted: int = 0
    refused_busy: int = 0
    closed_idle: int = 0
    closed_slow: int = 0
    accept_errors: int = 0


@attrs.frozen
class _Limits:
    max_connections: int
    idle_timeout: float
    send_timeout: float


async def serve_control(
    runner: Runner,
    path: str | Path,
    *,
    base_dir: Path | None = None,
    state_dir: Path | None = None,
    on_change: Callable[[int, Any], None] | None = None,
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    stats: ConnectionStats | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control requests on a Unix socket until cancelled.

    ``path`` is the run directory (the socket is ``RUN_DIR/control.sock``), or
    a socket path ending in ``.sock`` (its directory is the run directory).
    The run directory is created 0700 if missing and refused if another user
    could write to it (see ``prepare_run_dir``); a stale socket left by a dead
    engine is replaced, anything else at the socket path is refused.

    No client can stop or hang the server: accept() running out of file
    descriptors or memory is logged once and retried after a short rest;
    beyond ``max_connections`` a connection gets an error reply and is
    closed; a connection without a complete request for ``idle_timeout``
    seconds, or that does not read its reply within ``send_timeout``, is
    closed. Calls ``task_status.started(socket_path)`` once it accepts
    connections.
    """
    if not max_connections >= 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
    if not (idle_timeout > 0 and send_timeout > 0):
        raise ValueError("idle_timeout and send_timeout must be > 0")
    run_dir, path = split_socket_path(path)
    run_dir = prepare_run_dir(run_dir)
    path = run_dir / path.name
    await claim_socket_path(path)
    server = ControlServer(runner, base_dir=base_dir, state_dir=state_dir, on_change=on_change)
    limits = _Limits(max_connections, float(idle_timeout), float(send_timeout))
    stats = ConnectionStats() if stats is None else stats
    raw = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    sock = trio.socket.from_stdlib_socket(raw)
    try:
        # Bound here rather than with trio's bind, which walks the path in a worker
        # thread: a path inside our own private directory, nothing to wait for. Until
        # the chmod below only we can reach it anyway: the directory is private.
        try:
            raw.bind(str(path))
        except OSError as exc:
            raise RunDirError(f"cannot create control socket {path}: {exc.strerror or exc}") from None
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
        sock.listen(64)
        listener = trio.SocketListener(sock)
        log.info("control socket listening on %s", path)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(path)
                await _accept_loop(listener, server, nursery, limits, stats)
        finally:
            try:
                if os.stat(path).st_ino == inode:
                    path.unlink()
            except FileNotFoundError:
                pass
    finally:
        sock.close()


async def _accept_loop(listener: trio.SocketListener, server: ControlServer, nursery: trio.Nursery,
                       limits: _Limits, stats: ConnectionStats) -> None:
    backoff = 0.0
    busy_logged = False
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            # EMFILE/ENFILE/ENOBUFS/ENOMEM (or anything else accept() can say): the
            # engine goes on trading; control waits until there is room again.
            stats.accept_errors += 1
            if not backoff:
                log.error("control socket: accept() failed (%s); retrying, commands wait until it succeeds",
                          exc.strerror or exc)
            backoff = min(ACCEPT_BACKOFF_MAX, backoff * 2 or ACCEPT_BACKOFF)
            await trio.sleep(backoff)
            continue
        if backoff:
            log.warning("control socket: accepting connections again")
            backoff = 0.0
        stats.accepted += 1
        if stats.active >= limits.max_connections:
            stats.refused_busy += 1
            if not busy_logged:
                log.warning("control socket: %d connections open, refusing more until some close",
                            stats.active)
                busy_logged = True
            await _refuse(stream, limits, ControlBusyError(
                f"too many control connections ({limits.max_connections} open); close one and retry"))
            continue
        busy_logged = False
        stats.active += 1
        nursery.start_soon(_serve_client, server, stream, limits, stats)


async def _refuse(stream: trio.SocketStream, limits: _Limits, exc: BaseException) -> None:
    try:
        with trio.move_on_after(min(1.0, limits.send_timeout)):
            await stream.send_all(dumps(_error(None, exc)))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _send(stream: trio.SocketStream, reply: dict[str, Any], limits: _Limits, stats: ConnectionStats) -> bool:
    """Send one reply; False (and the connection is to be closed) when the client does not read it in time."""
    with trio.move_on_after(limits.send_timeout):
        await stream.send_all(dumps(reply))
        return True
    stats.closed_slow += 1
    log.warning("control connection closed: the client did not read its reply within %g s", limits.send_timeout)
    return False


async def _serve_client(server: ControlServer, stream: trio.SocketStream, limits: _Limits,
                        stats: ConnectionStats) -> None:
    try:
        try:
            check_peer(stream.socket)
        except (PeerRefusedError, OSError) as exc:
            log.warning("%s", exc)
            await _send(stream, _error(None, exc), limits, stats)
            return
        buffer = bytearray()
        deadline = trio.current_time() + limits.idle_timeout
        while True:
            data: bytes | bytearray | None = None
            with trio.move_on_at(deadline):
                data = await stream.receive_some(65536)
            if data is None:
                stats.closed_idle += 1
                log.info("control connection closed: no complete request for %g s", limits.idle_timeout)
                await _send(stream, _error(None, RequestError(
                    f"no complete request for {limits.idle_timeout:g} s; closing the connection")), limits, stats)
                return
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
                    if not await _send(stream, await server.handle_line(line), limits, stats):
                        return
                    deadline = trio.current_time() + limits.idle_timeout
            if len(buffer) > MAX_LINE:
                await _send(stream, _error(None, RequestError(
                    f"request line longer than {MAX_LINE} bytes; closing the connection")), limits, stats)
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:
        log.exception("control connection failed")
    finally:
        stats.active -= 1
        await trio.aclose_forcefully(stream)


__all__ = ["MAX_CONNECTIONS", "ConnectionStats", "ControlServer", "check_peer", "peer_uid", "serve_control"]
