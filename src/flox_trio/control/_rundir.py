"""The run directory: where the control socket lives, and who may put one there.

Whoever can create files in the run directory can put a socket of their own
at ``RUN_DIR/control.sock`` and answer ``flox-trio halt`` with "halted" while
the real engine keeps trading. So the engine (``prepare_run_dir``) and the
control client (``check_client_socket``) use a run directory only when:

- it is a directory owned by this user and not writable by group or others;
- every directory above it is owned by this user or root, and is not
  writable by others unless it is sticky (like ``/tmp``), so nobody else can
  rename it away and put theirs in its place.

The engine creates a missing run directory (and missing parents) with mode
0700. It never chmods or deletes anything it did not create: an existing
directory with loose permissions is refused, not "fixed"; a shared sticky
parent is left alone; at the socket path, only a socket nobody listens on (a
stale one from an engine that died) is removed; a regular file there is
refused.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
from pathlib import Path

import trio

from ._protocol import ControlError, RunDirError

_UNIX_PATH_MAX = 107


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symbolic link"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"  # pragma: no cover


def _who(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and any missing parents with mode 0700; return the ones created."""
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:  # pragma: no cover - the root always exists
            break
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # someone else made it meanwhile: not ours, checked below like any other
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {d}: {exc.strerror or exc}") from None
        # Ours: set the mode the umask may have narrowed (never widened: 0700 at most).
        os.chmod(d, 0o700)
        created.append(d)
    return created


def check_run_dir(run_dir: Path, *, purpose: str) -> None:
    """Refuse a run directory another user could write to or replace.

    Raises:
        RunDirError: it is not a directory, is owned by someone else, or is
            writable by group or others; or a directory above it is.
    """
    uid = os.getuid()
    try:
        link = os.lstat(run_dir)
    except FileNotFoundError:
        raise RunDirError(f"run directory {run_dir} does not exist") from None
    except OSError as exc:
        raise RunDirError(f"cannot use run directory {run_dir}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (uid, 0):
        raise RunDirError(f"run directory {run_dir} is a symbolic link owned by {_who(link.st_uid)}, not by you "
                          f"({_who(uid)}): {purpose}")
    real = Path(os.path.realpath(run_dir))
    try:
        st = os.stat(real)
    except OSError as exc:
        raise RunDirError(f"cannot use run directory {run_dir}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"run_dir {run_dir} is {_kind(st.st_mode)}, not a directory: "
                          "point run_dir at a directory (it is created if missing)")
    if st.st_uid != uid:
        raise RunDirError(f"run directory {run_dir} is owned by {_who(st.st_uid)}, not by you ({_who(uid)}): "
                          f"{purpose}; use a run_dir of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RunDirError(f"run directory {run_dir} is writable by {_writers(st.st_mode)} "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}): {purpose}; "
                          f"run `chmod 700 {run_dir}` or use another run_dir")
    for parent in real.parents:
        try:
            pst = os.stat(parent)
        except OSError as exc:
            raise RunDirError(f"cannot check {parent}, above run directory {run_dir}: "
                              f"{exc.strerror or exc}") from None
        if pst.st_uid not in (uid, 0):
            raise RunDirError(f"{parent}, above run directory {run_dir}, is owned by {_who(pst.st_uid)}, who "
                              f"could replace the run directory: {purpose}; use a run_dir of your own")
        if pst.st_mode & stat.S_IWOTH and not pst.st_mode & stat.S_ISVTX:
            raise RunDirError(f"{parent}, above run directory {run_dir}, is writable by anyone and not sticky, "
                              f"so anyone could replace the run directory: {purpose}; use another run_dir")


def _writers(mode: int) -> str:
    both = mode & stat.S_IWGRP and mode & stat.S_IWOTH
    return "group and others" if both else ("its group" if mode & stat.S_IWGRP else "others")


_SERVER_RISK = "another user could put a socket there and answer for this engine"
_CLIENT_RISK = "another user could be answering in the engine's place"


def prepare_run_dir(run_dir: str | Path) -> Path:
    """The engine's run directory, created with mode 0700 if missing, and checked; its absolute path.

    Raises:
        RunDirError: the directory cannot be created, or is not safe (see the
            module docstring); the message says which and why.
    """
    path = Path(os.path.abspath(Path(run_dir).expanduser()))
    _make_dirs(path)
    check_run_dir(path, purpose=_SERVER_RISK)
    return path


async def claim_socket_path(path: Path) -> None:
    """Make ``path`` free for a new control socket, removing only a stale socket.

    Raises:
        RunDirError: something other than a socket is there (it is never
            removed), or the path is too long for a Unix socket.
        ControlError: another engine is listening on it.
    """
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise RunDirError(f"control socket path {path} is longer than {_UNIX_PATH_MAX} bytes; "
                          "use a shorter run_dir")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RunDirError(f"{path} exists and is {_kind(st.st_mode)}, not a control socket; flox-trio only "
                          "removes a socket an engine left behind: move it away or use another run_dir")
    probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        with trio.move_on_after(5):
            await probe.connect(str(path))
            raise ControlError(f"another engine is serving {path}; stop it or choose another run_dir")
        raise ControlError(f"{path} accepts connections but does not answer; is another engine starting there?")
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise RunDirError(f"cannot use control socket {path}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    # A stale socket from an engine that died: remove it, if it is still the same file.
    try:
        again = os.lstat(path)
    except FileNotFoundError:
        return
    if (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino) and stat.S_ISSOCK(again.st_mode):
        os.unlink(path)


def check_client_socket(path: Path) -> None:
    """Before connecting to ``path``: refuse a socket in a run directory that is not safely ours.

    Raises:
        RunDirError: the directory, or the socket, belongs to someone else or
            can be written by others.
    """
    run_dir = path.parent
    if not os.path.lexists(run_dir):
        return  # nothing to impersonate with; the connect says no engine is listening
    check_run_dir(run_dir, purpose=_CLIENT_RISK)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        return  # the connect reports it
    uid = os.getuid()
    if stat.S_ISSOCK(st.st_mode) and st.st_uid != uid:
        raise RunDirError(f"control socket {path} is owned by {_who(st.st_uid)}, not by you ({_who(uid)}): "
                          f"{_CLIENT_RISK}")


__all__ = ["check_client_socket", "check_run_dir", "claim_socket_path", "prepare_run_dir"]
