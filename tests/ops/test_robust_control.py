"""The control socket against hostile or careless local clients, and the run directory against other users.

Real Unix sockets in tmp_path and a real runner behind them. The only OS
behaviour simulated is a resource limit: an accept() that fails with EMFILE
once, and a subprocess whose RLIMIT_NOFILE is low. Ownership by another
user is real too (``os.chown``), so those tests need root.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import flox_trio as flox
from flox_trio.app import open_engine
from flox_trio.config import load_config
from flox_trio.control import (
    ConnectionStats,
    ControlClient,
    ControlError,
    RunDirError,
    prepare_run_dir,
    serve_control,
)

from .conftest import Scripted, trade

OTHER_UID = 54321
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="making a file another user's needs root")


@asynccontextmanager
async def served(tmp_path: Path, *, timeout: float = 30, **options: Any
                 ) -> AsyncIterator[tuple[flox.Runner, Any, ConnectionStats, Path]]:
    """A runner with one Scripted slot and its control socket in tmp_path/run; fails after ``timeout``.

    With ``autojump_clock`` the timeout is virtual: a test waiting for
    something that never happens fails at once instead of hanging.
    """
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    stats = ConnectionStats()
    with trio.fail_after(timeout):
        async with flox.open_runner(feed) as runner, trio.open_nursery() as nursery:
            runner.add_strategy(Scripted())
            path = await nursery.start(lambda task_status: serve_control(
                runner, tmp_path / "run", stats=stats, task_status=task_status, **options))
            yield runner, feed, stats, path
            nursery.cancel_scope.cancel()


async def raw(path: Path) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    return trio.SocketStream(sock)


async def read_line(stream: trio.SocketStream, buffer: bytearray | None = None) -> bytes:
    """One reply line, or b"" at EOF."""
    buf = bytearray() if buffer is None else buffer
    while b"\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return b""
        buf += data
    end = buf.index(b"\n")
    line = bytes(buf[:end])
    del buf[: end + 1]
    return line


async def at_eof(stream: trio.SocketStream) -> bool:
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return True
    except trio.BrokenResourceError:
        return True


async def still_serving(path: Path) -> None:
    async with ControlClient(path) as client:
        reply = await client.call("slots")
    assert reply["ok"] and reply["slots"][0]["state"] == "running"


# --- accept() ------------------------------------------------------------------------------------


async def test_accept_running_out_of_file_descriptors_is_logged_once_and_survived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    """EMFILE from accept() used to end serve_control, and with it the engine."""
    real_accept = trio.SocketListener.accept
    failures = [OSError(errno.EMFILE, "Too many open files"), OSError(errno.ENFILE, "File table overflow"),
                OSError(errno.ENOMEM, "Cannot allocate memory")]

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        if failures:
            await trio.lowlevel.checkpoint()
            raise failures.pop(0)
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    with caplog.at_level(logging.WARNING, logger="flox_trio.control"):
        async with served(tmp_path, timeout=1000) as (runner, _feed, stats, path):
            await still_serving(path)
            assert stats.accept_errors == 3 and runner.slots[0].state == "running"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Too many open files" in errors[0].getMessage()
    assert any("accepting connections again" in r.getMessage() for r in caplog.records)


def test_a_thousand_idle_connections_do_not_end_an_engine_short_of_file_descriptors(tmp_path: Path) -> None:
    """The reported case, for real: RLIMIT_NOFILE 256 in the engine, 1,010 idle clients.

    Before, accept() failed with EMFILE around the 250th and the engine process
    ended. Now connections beyond the cap are refused with an error reply, and
    once the idle ones close, commands are served again.
    """
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import resource, sys, trio
        import flox_trio as flox
        from flox_trio.control import serve_control
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

        async def main():
            feed = flox.feeds.PushFeed(["BTCUSDT"])
            async with flox.open_runner(feed) as runner, trio.open_nursery() as nursery:
                await nursery.start(serve_control, runner, {str(run_dir)!r})
                print("ready", flush=True)
                await trio.sleep_forever()

        trio.run(main)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        refused = 0
        for _ in range(1010):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(str(run_dir / "control.sock"))
            except OSError:
                s.close()
                continue
            idle.append(s)
        assert proc.poll() is None, proc.communicate()[1]
        # The last ones were answered "too many" and closed by the engine.
        for s in idle[-20:]:
            data = s.recv(65536)
            if data:
                reply = json.loads(data.splitlines()[0])
                assert reply["error"]["type"] == "ControlBusyError"
                refused += 1
        assert refused == 20
        for s in idle:
            s.close()
        idle.clear()
        deadline = time.monotonic() + 20
        while True:  # the engine notices the hang-ups, then serves again
            try:
                reply = flox.control.call(run_dir, "slots")
                break
            except ControlError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply["ok"] is True
        assert proc.poll() is None
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# --- the connection cap and timeouts --------------------------------------------------------------


async def test_connections_beyond_the_cap_get_an_error_reply_and_are_closed(tmp_path: Path) -> None:
    async with served(tmp_path, max_connections=3) as (_runner, _feed, stats, path):
        held = [await raw(path) for _ in range(3)]
        await held[0].send_all(b'{"v": 1, "id": 1, "cmd": "slots"}\n')
        assert json.loads(await read_line(held[0]))["ok"] is True  # all three are being served
        extra = await raw(path)
        reply = json.loads(await read_line(extra))
        assert reply["ok"] is False and reply["error"]["type"] == "ControlBusyError"
        assert "too many control connections (3 open)" in reply["error"]["message"]
        assert await at_eof(extra)
        await extra.aclose()
        assert stats.refused_busy == 1
        with pytest.raises(ControlError, match="too many control connections"):
            async with ControlClient(path) as client:
                await client.call("slots")
        await held.pop().aclose()
        with trio.fail_after(5):
            while stats.active >= 3:
                await trio.sleep(0.01)
        await still_serving(path)
        for s in held:
            await s.aclose()


async def test_an_idle_connection_is_closed_after_the_timeout(tmp_path: Path, autojump_clock: Any) -> None:
    """Idle (no complete request) for 60 s on the Trio clock: closed; a chatty client is not."""
    async with served(tmp_path, timeout=1000) as (_runner, _feed, stats, path):
        start = trio.current_time()
        idle = await raw(path)
        half = await raw(path)
        await half.send_all(b'{"v": 1, "cmd": "sl')  # half a request never completed
        chatty = await raw(path)
        buf = bytearray()
        for _ in range(4):
            await trio.sleep(45)
            await chatty.send_all(b'{"v": 1, "id": 2, "cmd": "slots"}\n')
            assert json.loads(await read_line(chatty, buf))["ok"] is True
        # By now (180 s) the idle ones were told why and closed, at 60 s.
        for stream in (idle, half):
            reply = json.loads(await read_line(stream))
            assert "no complete request for 60 s" in reply["error"]["message"]
            assert await at_eof(stream)
            await stream.aclose()
        assert stats.closed_idle == 2 and stats.active == 1
        assert trio.current_time() - start == pytest.approx(180)
        await chatty.aclose()


async def test_idle_timeout_is_configurable(tmp_path: Path, autojump_clock: Any) -> None:
    async with served(tmp_path, timeout=1000, idle_timeout=5) as (_runner, _feed, _stats, path):
        start = trio.current_time()
        stream = await raw(path)
        assert b"no complete request for 5 s" in await read_line(stream)
        assert trio.current_time() - start == pytest.approx(5)
        await stream.aclose()


async def test_a_client_that_never_reads_its_replies_is_cut_off(tmp_path: Path, autojump_clock: Any) -> None:
    async with served(tmp_path, timeout=1000) as (runner, _feed, stats, path):
        for _ in range(20):
            runner.add_strategy(Scripted())  # a status reply of some size
        greedy = await raw(path)
        requests = b'{"v": 1, "id": 1, "cmd": "status"}\n' * 5000

        async def flood() -> None:
            try:
                await greedy.send_all(requests)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            with trio.fail_after(120):
                while not stats.closed_slow:
                    await trio.sleep(1)
            nursery.cancel_scope.cancel()
        await still_serving(path)
        await greedy.aclose()


# --- what a client sends ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_line", "fragment"),
    [
        (b"\xff\xfe\x00garbage\x81\n", "not JSON"),
        (b"[" * 100_000 + b"\n", "nested too deeply"),
        (b'{"v": 1, "id": ' + b"[" * 50_000 + b"]" * 50_000 + b', "cmd": "slots"}\n', "nested too deeply"),
        (b'{"v": 1, "id": 1, "cmd": "remove", "slot": ' + b"9" * 5000 + b"}\n", "not JSON"),
        (b'{"v": 1, "id": 1, "cmd": "halt", "reason": {"a": 1}}\n', "'reason' must be a string"),
        (b'{"v": 1, "id": 1, "cmd": "add", "path": "x.py:X", "symbols": [1, 2]}\n', "'symbols' must be"),
    ],
)
async def test_garbage_gets_an_error_and_changes_nothing(tmp_path: Path, raw_line: bytes, fragment: str) -> None:
    async with served(tmp_path) as (runner, feed, _stats, path):
        strategy = runner.slots[0].strategy
        stream = await raw(path)
        await stream.send_all(raw_line)
        reply = json.loads(await read_line(stream))
        assert reply["ok"] is False and fragment in reply["error"]["message"], reply
        await stream.send_all(b'{"v": 1, "id": 2, "cmd": "slots"}\n')
        assert json.loads(await read_line(stream))["ok"] is True  # the connection lives on
        await feed.push([trade("1")])
        await runner.wait_idle()
        assert runner.slots[0].strategy is strategy and strategy.trades == ["1"]
        await stream.aclose()


async def test_a_huge_line_is_refused_and_the_connection_closed(tmp_path: Path) -> None:
    async with served(tmp_path) as (_runner, _feed, _stats, path):
        stream = await raw(path)

        async def send() -> None:
            try:
                await stream.send_all(b"x" * (3 << 20))
            except trio.BrokenResourceError:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            reply = json.loads(await read_line(stream))
            assert "longer than 1048576 bytes" in reply["error"]["message"]
            assert await at_eof(stream)
        await stream.aclose()
        await still_serving(path)


async def test_hanging_up_mid_request_and_mid_reply_changes_nothing(tmp_path: Path) -> None:
    async with served(tmp_path) as (runner, _feed, stats, path):
        for _ in range(20):
            half = await raw(path)
            await half.send_all(b'{"v": 1, "id": 1, "cmd": "stat')
            await half.aclose()
            rude = await raw(path)
            await rude.send_all(b'{"v": 1, "id": 1, "cmd": "status"}\n' * 50)
            await rude.aclose()  # before reading any reply
        with trio.fail_after(5):
            while stats.active:
                await trio.sleep(0.01)
        await still_serving(path)
        assert runner.slots[0].state == "running"


async def test_a_strategy_that_exits_the_interpreter_on_swap_does_not_stop_the_engine(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nsys.exit(3)\n")
    async with served(tmp_path) as (runner, _feed, _stats, path):
        async with ControlClient(path) as client:
            with pytest.raises(flox.control.ControlCommandError):
                await client.call("swap", slot=0, path=f"{bad}:X")
        await still_serving(path)
        assert runner.slots[0].swaps == 0


# --- the run directory -----------------------------------------------------------------------------


async def _refused(runner: flox.Runner, run_dir: Path, fragment: str) -> RunDirError:
    with pytest.raises(RunDirError, match=fragment) as info, trio.fail_after(10):
        await serve_control(runner, run_dir)
    assert "\n" not in str(info.value)
    return info.value


async def test_a_missing_run_dir_is_created_0700_with_its_parents(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    async with served(tmp_path / "a" / "b") as (_runner, _feed, _stats, path):
        for d in (tmp_path / "a", tmp_path / "a" / "b", path.parent):
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o755  # not ours to chmod


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777])
async def test_a_run_dir_writable_by_group_or_others_is_refused_and_left_as_it_is(tmp_path: Path, mode: int) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chmod(run_dir, mode)
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
        await _refused(runner, run_dir, rf"run directory {run_dir} is writable by .* \(mode {mode:04o}\): "
                       "another user could put a socket there")
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == mode
    assert not (run_dir / "control.sock").exists()


async def test_a_shared_sticky_parent_is_never_chmodded(tmp_path: Path) -> None:
    """Like /tmp: a run dir created inside it is ours (0700); the parent keeps its mode."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    async with served(shared) as (_runner, _feed, _stats, path):
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
        await _refused(runner, shared, "is writable by group and others")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777


async def test_a_run_dir_that_is_a_file_is_refused_and_kept(tmp_path: Path) -> None:
    """`run_dir = "notes.txt"` used to delete notes.txt (the stale-socket cleanup unlinked it)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
        await _refused(runner, notes, rf"run_dir {notes} is a regular file, not a directory")
    assert notes.read_text() == "my notes\n"


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo", "directory"])
async def test_only_a_stale_socket_is_removed_from_the_socket_path(tmp_path: Path, kind: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    target = run_dir / "control.sock"
    elsewhere = tmp_path / "precious"
    elsewhere.write_text("keep me\n")
    if kind == "file":
        target.write_text("keep me too\n")
    elif kind == "symlink":
        target.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
        await _refused(runner, run_dir, rf"{target} exists and is a .*, not a control socket")
    assert os.path.lexists(target) and elsewhere.read_text() == "keep me\n"
    if kind == "file":
        assert target.read_text() == "keep me too\n"


@needs_root
async def test_a_run_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, OTHER_UID, OTHER_UID)
    async with flox.open_runner(flox.feeds.PushFeed(["BTCUSDT"])) as runner:
        await _refused(runner, run_dir, rf"run directory {run_dir} is owned by uid {OTHER_UID}, not by you")
        os.chown(run_dir, 0, 0)
        os.chown(tmp_path, OTHER_UID, OTHER_UID)  # a parent another user could rename it in
        try:
            await _refused(runner, run_dir, rf"{tmp_path}, above run directory {run_dir}, is owned by uid "
                           f"{OTHER_UID}")
        finally:
            os.chown(tmp_path, 0, 0)
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700 and os.stat(run_dir).st_uid == 0


def _config(tmp_path: Path, run_dir: str) -> Path:
    (tmp_path / "strat.py").write_text("import flox_trio as flox\n\nclass S(flox.Strategy):\n    pass\n")
    path = tmp_path / "run.toml"
    path.write_text(f'symbols = ["BTCUSDT"]\nrun_dir = "{run_dir}"\n\n[venue]\nname = "sim"\n\n'
                    '[[slots]]\nstrategy = "strat.py:S"\n')
    return path


async def test_the_engine_refuses_an_unsafe_run_dir_before_starting_anything(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    config = load_config(_config(tmp_path, "notes.txt"))
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    with pytest.raises(RunDirError, match="is a regular file, not a directory"), trio.fail_after(10):
        async with open_engine(config, feed=feed):
            pytest.fail("the engine started")
    assert notes.read_text() == "my notes\n"
    assert prepare_run_dir(tmp_path / "fresh") == tmp_path / "fresh"


@pytest.mark.parametrize("setup", ["file", "loose"])
def test_flox_trio_run_with_an_unsafe_run_dir_is_one_line(tmp_path: Path, setup: str) -> None:
    if setup == "file":
        (tmp_path / "notes.txt").write_text("my notes\n")
        cfg, fragment = _config(tmp_path, "notes.txt"), "is a regular file, not a directory"
    else:
        (tmp_path / "loose").mkdir()
        os.chmod(tmp_path / "loose", 0o777)
        cfg, fragment = _config(tmp_path, "loose"), "is writable by group and others (mode 0777)"
    done = subprocess.run([sys.executable, "-m", "flox_trio.cli", "run", str(cfg)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flox-trio run: ") and fragment in lines[0], done.stderr
    if setup == "file":
        assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    else:
        assert stat.S_IMODE(os.stat(tmp_path / "loose").st_mode) == 0o777


# --- the client refuses an impostor ----------------------------------------------------------------


_IMPOSTOR = """
import json, os, socket, sys
path, uid, listen_as = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
if listen_as == "other":
    os.setuid(uid)  # SO_PEERCRED reports who called listen()
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    data = c.recv(65536)
    rid = json.loads(data.splitlines()[0]).get("id")
    c.sendall(json.dumps({"v": 1, "id": rid, "ok": True, "halted": True, "canceled": 0}).encode() + b"\\n")
    c.close()
"""


def _impostor(run_dir: Path, listen_as: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _IMPOSTOR, str(run_dir / "control.sock"), str(OTHER_UID),
                             listen_as], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _halt(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flox_trio.cli", "halt", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=60)


@needs_root
@pytest.mark.parametrize("owned", ["directory", "socket", "listener"])
def test_the_client_refuses_an_engine_of_another_user(tmp_path: Path, owned: str) -> None:
    """`flox-trio halt` used to print "trading halted" from a socket another user put there."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    proc = _impostor(run_dir, "other" if owned == "listener" else "me")
    try:
        if owned == "directory":
            os.chown(run_dir, OTHER_UID, OTHER_UID)
            fragment = f"run directory {run_dir} is owned by uid {OTHER_UID}, not by you"
        elif owned == "socket":
            os.chown(run_dir / "control.sock", OTHER_UID, OTHER_UID)
            fragment = f"control socket {run_dir / 'control.sock'} is owned by uid {OTHER_UID}"
        else:
            fragment = f"listening on {run_dir / 'control.sock'} runs as uid {OTHER_UID}"
        done = _halt(run_dir)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "halted" not in done.stdout
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and fragment in lines[0], done.stderr
        assert "another user could be answering in the engine's place" in lines[0]
    finally:
        proc.kill()
        proc.communicate()


async def test_the_client_refuses_a_run_dir_others_can_write(tmp_path: Path) -> None:
    async with served(tmp_path) as (_runner, _feed, _stats, path):
        os.chmod(path.parent, 0o777)
        with pytest.raises(RunDirError, match=r"is writable by group and others .* answering in the engine's place"):
            async with ControlClient(path.parent):
                pass
        os.chmod(path.parent, 0o700)
        await still_serving(path.parent)


# --- the metrics endpoint ---------------------------------------------------------------------------


async def test_the_metrics_endpoint_caps_connections_and_survives_a_failing_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    from flox_trio.control import _metrics

    monkeypatch.setattr(_metrics, "MAX_CONNECTIONS", 4)
    feed = flox.feeds.PushFeed(["BTCUSDT"])
    with trio.fail_after(30):
        async with flox.open_runner(feed) as runner, trio.open_nursery() as nursery:
            port = await nursery.start(flox.control.serve_metrics, runner, 0)
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            assert await at_eof(extra)  # closed at once: four are open
            await extra.aclose()
            for s in idle:
                await s.aclose()
            async with httpx.AsyncClient() as client:
                for _ in range(50):  # the server notices the hang-ups
                    try:
                        page = await client.get(f"http://127.0.0.1:{port}/metrics")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
                assert page.status_code == 200

                def broken() -> Any:
                    raise RuntimeError("a collector bug")

                monkeypatch.setattr(runner, "status", broken)
                with pytest.raises(httpx.TransportError):
                    await client.get(f"http://127.0.0.1:{port}/metrics")
                monkeypatch.undo()
                assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
            nursery.cancel_scope.cancel()
