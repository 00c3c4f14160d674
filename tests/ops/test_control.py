"""The control socket: real Unix sockets in tmp_path, a real runner behind them."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.control import (
    ControlClient,
    ControlCommandError,
    ControlError,
    PeerRefusedError,
    _server,
    check_peer,
    peer_uid,
    serve_control,
)
from flox_trio.execution._risk import RiskExecutor

from .conftest import TAGGED_SOURCE, Scripted, trade

COUNTER = TAGGED_SOURCE.format(name="Counter")


@asynccontextmanager
async def engine(tmp_path: Path, executor: Any = None) -> AsyncIterator[tuple[flox.Runner, Any, ControlClient]]:
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    run_dir = tmp_path / "run"
    with trio.fail_after(20):
        async with flox.open_runner(feed, executor) as runner, trio.open_nursery() as nursery:
            await nursery.start(serve_control, runner, run_dir)
            async with ControlClient(run_dir) as client:
                yield runner, feed, client
            nursery.cancel_scope.cancel()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_swap_over_the_socket_hands_over_at_an_event_boundary(tmp_path: Path) -> None:
    """A good swap: the new strategy is a fresh import with the given params and sees the rest."""
    path = write(tmp_path, "counter.py", COUNTER)
    old = Scripted()
    async with engine(tmp_path) as (runner, feed, client):
        runner.add_strategy(old)
        await feed.push([trade("1"), trade("2")])
        await runner.wait_idle()
        reply = await client.call("swap", slot=0, path=f"{path}:Counter", params={"tag": "v2"})
        assert reply["ok"] is True and reply["v"] == 1 and reply["id"] == 1
        assert reply["report"]["at_event"] == 2 and reply["report"]["new_language"] == "python"
        await feed.push([trade("3")])
        await runner.wait_idle()
        new = runner.slots[0].strategy
        assert type(new).__name__ == "Counter" and new.tag == "v2" and new.seen == ["3"]
        assert old.trades == ["1", "2"]
        slots = (await client.call("slots"))["slots"]
        assert slots[0]["strategy"] == "Counter" and slots[0]["dispatched"] == 3
        status = (await client.call("status"))["status"]
        assert status["slots"][0]["swaps"] == 1 and status["feed"]["feed"] == "PushFeed"


async def test_socket_is_private_and_removed_at_exit(tmp_path: Path) -> None:
    """The socket file is 0600 in a 0700 run dir, and is unlinked when the server stops."""
    async with engine(tmp_path):
        sock = tmp_path / "run" / "control.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert not sock.exists()


@pytest.mark.parametrize(
    ("raw", "error_type", "fragment"),
    [
        (b"{not json\n", "RequestError", "not JSON"),
        (b"[1, 2]\n", "RequestError", "a JSON object"),
        (b'{"v": 2, "id": 9, "cmd": "status"}\n', "RequestError", "unsupported protocol version 2"),
        (b'{"id": 9, "cmd": "status"}\n', "RequestError", "unsupported protocol version None"),
        (b'{"v": 1, "id": 9, "cmd": "explode"}\n', "RequestError", "unknown command 'explode'"),
        (b'{"v": 1, "id": 9, "cmd": "swap", "slot": "0", "path": "x.py:X"}\n', "RequestError", "'slot' must be"),
        (b'{"v": 1, "id": 9, "cmd": "swap", "slot": 7, "path": "x.py:X"}\n', "UnknownSlotError", "no slot 7"),
        (b'{"v": 1, "id": 9, "cmd": "swap", "slot": 0}\n', "RequestError", "'path' must be"),
        (b'{"v": 1, "id": 9, "cmd": "swap", "slot": 0, "path": "nope.py:X"}\n', "StrategyLoadError",
         "no such strategy file"),
        (b'{"v": 1, "id": 9, "cmd": "swap", "slot": 0, "path": "a.py"}\n', "StrategyLoadError", "name the"),
        (b'{"v": 1, "id": 9, "cmd": "swap", "slot": 0, "path": "a.py:X", "params": [1]}\n', "RequestError",
         "'params' must be"),
        (b'{"v": 1, "id": 9, "cmd": "add", "path": "a.py:X", "symbols": "BTCUSDT"}\n', "RequestError", "'symbols' must be"),
        (b'{"v": 1, "id": 9, "cmd": "remove", "slot": -1}\n', "UnknownSlotError", "no slot -1"),
        (b'{"v": 1, "id": 9, "cmd": "halt"}\n', "ControlError", "no kill switch"),
    ],
)
async def test_bad_requests_get_an_error_and_change_nothing(
    tmp_path: Path, raw: bytes, error_type: str, fragment: str
) -> None:
    """Each bad request gets ok=false naming the problem; the slot, and the connection, live on."""
    strategy = Scripted()
    async with engine(tmp_path) as (runner, feed, client):
        runner.add_strategy(strategy)
        assert client._stream is not None
        await client._stream.send_all(raw)
        reply = await client.request({"v": 1, "id": 10, "cmd": "slots"})  # reads the error first
        assert reply["ok"] is False, reply
        assert reply["error"]["type"] == error_type
        assert fragment in reply["error"]["message"]
        assert reply["id"] in (None, 9)
        follow = json.loads(await _next_line(client))
        assert follow["ok"] is True and follow["id"] == 10
        assert runner.slots[0].strategy is strategy and runner.slots[0].swaps == 0
        assert runner.slots[0].state == "running"


async def _next_line(client: ControlClient) -> bytes:
    assert client._stream is not None
    while b"\n" not in client._buffer:
        client._buffer += await client._stream.receive_some(65536)
    end = client._buffer.index(b"\n")
    line = bytes(client._buffer[:end])
    del client._buffer[: end + 1]
    return line


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("import flox_trio as flox\n\nclass Counter(flox.Strategy)\n    pass\n", "broken.py:3: syntax error"),
        ("import flox_trio as flox\nx = 1\nraise RuntimeError('boom at import')\n",
         "broken.py:3: RuntimeError: boom at import"),
        ("import flox_trio as flox\nimport no_such_module_xyz\n", "broken.py:2: ModuleNotFoundError"),
        ("import flox_trio as flox\n\nclass Other(flox.Strategy):\n    pass\n", "defines no 'Counter'"),
        ("class Counter:\n    pass\n", "not a flox_trio.Strategy subclass"),
        ("import flox_trio as flox\n\nclass Counter(flox.Strategy):\n    def __init__(self, symbols):\n"
         "        super().__init__(symbols)\n        raise ValueError('bad params')\n",
         "broken.py:6: ValueError: bad params"),
    ],
)
async def test_broken_strategy_file_is_refused_and_the_old_one_keeps_running(
    tmp_path: Path, source: str, fragment: str
) -> None:
    """A file that fails to import or build is reported with file and line; the slot is untouched."""
    path = write(tmp_path, "broken.py", source)
    strategy = Scripted()
    async with engine(tmp_path) as (runner, feed, client):
        runner.add_strategy(strategy)
        with pytest.raises(ControlCommandError) as info:
            await client.call("swap", slot=0, path=f"{path}:Counter")
        # A file that loads but whose class refuses its parameters is a build error, a kind of load error.
        build = "bad params" in fragment
        assert info.value.error_type == ("StrategyBuildError" if build else "StrategyLoadError")
        assert fragment in str(info.value)
        await feed.push([trade("1")])
        await runner.wait_idle()
        assert runner.slots[0].strategy is strategy and strategy.trades == ["1"]


async def test_swap_with_other_symbols_is_refused(tmp_path: Path) -> None:
    """The replacement is built for the slot's symbols, so a symbol mismatch cannot happen by accident."""
    path = write(tmp_path, "counter.py", COUNTER.replace("super().__init__(symbols,", "super().__init__(['ETHUSDT'],"))
    async with engine(tmp_path) as (runner, _feed, client):
        runner.add_strategy(Scripted())
        with pytest.raises(ControlCommandError, match="watches") as info:
            await client.call("swap", slot=0, path=f"{path}:Counter")
        assert info.value.error_type == "SymbolMismatchError"
        assert runner.slots[0].swaps == 0


async def test_add_and_remove(tmp_path: Path) -> None:
    """add builds a new slot for the given symbols; remove retires it; a second remove is refused."""
    path = write(tmp_path, "counter.py", COUNTER)
    async with engine(tmp_path) as (runner, feed, client):
        reply = await client.call("add", path=f"{path}:Counter", symbols=["BTCUSDT"], params={"tag": "x"})
        assert reply["slot"] == 0
        await feed.push([trade("1")])
        await runner.wait_idle()
        assert runner.slots[0].strategy.seen == ["1"]
        assert (await client.call("remove", slot=0))["slot"] == 0
        assert runner.slots[0].state == "removed"
        with pytest.raises(ControlCommandError, match="slot 0 was removed"):
            await client.call("remove", slot=0)


async def test_halt_and_resume_over_the_socket(tmp_path: Path) -> None:
    """halt cancels open orders and refuses new ones; resume lifts it."""
    s = Scripted(plan={"1": lambda ctx: ctx.limit_buy(50, 1), "2": lambda ctx: ctx.market_buy(1)})
    risk = RiskExecutor(flox.PaperExecutor(latency=0))
    async with engine(tmp_path, risk) as (runner, feed, client):
        runner.add_strategy(s)
        await feed.push([trade("1")])
        await runner.wait_idle()
        while not s.status_of("0-1"):
            await trio.lowlevel.checkpoint()
            await runner.wait_idle()
        reply = await client.call("halt", reason="drill")
        assert reply == {"v": 1, "id": 1, "ok": True, "halted": True, "canceled": 1}
        await feed.push([trade("2")])
        await runner.wait_idle()
        assert s.status_of("0-2") == ["rejected"] and "drill" in s.reasons()[0]
        assert (await client.call("status"))["status"]["executor"]["halted"] is True
        assert (await client.call("resume"))["halted"] is False
        assert not risk.halted


async def test_a_client_that_hangs_up_mid_request_does_not_hurt_the_server(tmp_path: Path) -> None:
    """Half a line then EOF, then a new client: still served."""
    async with engine(tmp_path) as (_runner, _feed, client):
        async with ControlClient(tmp_path / "run") as rude:
            assert rude._stream is not None
            await rude._stream.send_all(b'{"v": 1, "cmd": "sta')
        assert (await client.call("slots"))["slots"] == []
        async with ControlClient(tmp_path / "run") as polite:
            assert (await polite.call("slots"))["ok"] is True


async def test_a_second_server_on_a_live_socket_is_refused_and_a_stale_one_replaced(tmp_path: Path) -> None:
    """Two engines cannot share a run dir; a socket left by a dead engine is cleaned up."""
    async with engine(tmp_path) as (runner, _feed, _client):
        with pytest.raises(ControlError, match="another engine is serving"):
            await serve_control(runner, tmp_path / "run")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "run" / "control.sock"))
    stale.close()  # the file stays, nobody listens
    async with engine(tmp_path) as (_runner, _feed, client):
        assert (await client.call("slots"))["ok"] is True


def test_peer_check_accepts_own_user_and_refuses_another() -> None:
    """SO_PEERCRED on a socketpair reports our uid; any other expected uid is refused."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_uid(a) == os.getuid()
        assert check_peer(a) == os.getuid()
        with pytest.raises(PeerRefusedError, match=f"peer uid {os.getuid()} is not the engine's user"):
            check_peer(a, expected_uid=os.getuid() + 1)


async def test_server_refuses_a_peer_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's accept path uses the check: a foreign uid gets a refusal and no command runs."""
    monkeypatch.setattr(_server, "peer_uid", lambda sock: os.getuid() + 1)
    strategy = Scripted()
    async with engine(tmp_path) as (runner, _feed, client):
        runner.add_strategy(strategy)
        with pytest.raises(ControlCommandError, match="refused: peer uid") as info:
            await client.call("remove", slot=0)
        assert info.value.error_type == "PeerRefusedError"
        assert runner.slots[0].state == "running"


async def test_client_without_engine_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"no engine is listening on .*flox-trio run"):
        async with ControlClient(tmp_path / "nowhere"):
            pass


async def test_swap_to_a_javascript_strategy(tmp_path: Path) -> None:
    """A .js path is loaded in a fresh context and swapped in like a Python one."""
    path = write(tmp_path, "count.js", "flox.register({symbols: ['BTCUSDT'], n: 0, onTrade(ctx, t) { this.n++; }});\n")
    async with engine(tmp_path) as (runner, feed, client):
        runner.add_strategy(Scripted())
        reply = await client.call("swap", slot=0, path=str(path))
        assert reply["report"]["new_language"] == "javascript"
        await feed.push([trade("1")])
        await runner.wait_idle()
        assert runner.slots[0].language == "javascript"
