"""A script's state directory: the only files its ``require('fs')`` reaches.

The directory is mirrored into the script's context (QuickJS cannot call
Python while a time limit is set), and what the script writes comes back as
part of a call's result and is written here. Both directions are confined:
paths are resolved component by component relative to directory descriptors
opened with ``O_NOFOLLOW``, so neither a symlink nor a hard link planted in
the directory leads outside it; non-regular files are ignored; the total
size is capped. Every refusal is a ``SandboxError`` naming the path, which
quarantines the script's slot, never the engine.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .._errors import SandboxError

log = logging.getLogger("flox_trio.js")

#: The mirror lives in the context's memory: keep it well inside the memory limit.
MAX_STATE_BYTES = 1024 * 1024
MAX_FILES = 256
MAX_DEPTH = 8
#: Linux NAME_MAX; and a whole relative path well under PATH_MAX.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_relative(rel: str, where: str) -> list[str]:
    """The components of a path the script gave, or ``SandboxError`` saying what is wrong with it."""
    if not isinstance(rel, str) or not rel:
        raise SandboxError(f"{where}: a file path must be a non-empty string, got {rel!r}")
    if "\x00" in rel:
        raise SandboxError(f"{where}: file path {rel!r} holds a NUL byte")
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        raise SandboxError(f"{where}: file path {rel!r} is not valid text (a lone surrogate)") from None
    parts = rel.split("/")
    if size > MAX_PATH_BYTES or len(parts) > MAX_DEPTH:
        raise SandboxError(f"{where}: file path {rel[:80]!r}… is longer than {MAX_PATH_BYTES} bytes or "
                           f"{MAX_DEPTH} directories deep")
    for part in parts:
        if part in ("", ".", ".."):
            raise SandboxError(f"{where}: file path {rel!r} is not a plain relative path inside the state directory")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise SandboxError(f"{where}: a name in file path {rel[:80]!r}… is longer than {MAX_NAME_BYTES} bytes")
    return parts


class StateDir:
    """Reads and writes of one script's state directory, confined to it."""

    def __init__(self, root: Path, owner: str) -> None:
        self.root = root
        self.owner = owner
        #: rel -> (mtime, size) of what the mirror holds.
        self.stamps: dict[str, tuple[float, int]] = {}
        self._warned: set[str] = set()

    # --- reading: the mirror -------------------------------------------------------------

    def changes(self) -> dict[str, str | None]:
        """Files that changed since the last call (text, or None for a file that is gone)."""
        changes: dict[str, str | None] = {}
        seen: set[str] = set()
        total = 0
        for rel, fd_dir, name, st in self._walk():
            total += st.st_size
            seen.add(rel)
            if len(seen) > MAX_FILES or total > MAX_STATE_BYTES:
                raise SandboxError(f"{self.owner}: the state directory {self.root} holds more than {MAX_FILES} "
                                   f"files or {MAX_STATE_BYTES} bytes; strategies keep small snapshots there")
            stamp = (st.st_mtime, st.st_size)
            if self.stamps.get(rel) == stamp:
                continue
            changes[rel] = self._read(fd_dir, name, rel)
            self.stamps[rel] = stamp
        for rel in set(self.stamps) - seen:
            changes[rel] = None
            del self.stamps[rel]
        return changes

    def _walk(self) -> Iterator[tuple[str, int, str, os.stat_result]]:
        try:
            top = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SandboxError(f"{self.owner}: cannot open the state directory {self.root}: {exc.strerror}") from None
        yield from self._walk_dir(top, "", 0)

    def _walk_dir(self, fd: int, prefix: str, depth: int) -> Iterator[tuple[str, int, str, os.stat_result]]:
        try:
            for entry in sorted(os.listdir(fd)):
                rel = f"{prefix}{entry}"
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and depth + 1 < MAX_DEPTH:
                    sub = os.open(entry, _DIR_FLAGS, dir_fd=fd)
                    yield from self._walk_dir(sub, rel + "/", depth + 1)
                elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    yield rel, fd, entry, st
                else:
                    # A symlink, a hard link (st_nlink > 1: it may be a file from anywhere), a fifo...
                    self._skip(rel, st)
        finally:
            os.close(fd)

    def _skip(self, rel: str, st: os.stat_result) -> None:
        if rel not in self._warned:
            self._warned.add(rel)
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else ("a hard link" if stat.S_ISREG(st.st_mode)
                                                                 else "not a regular file")
            log.warning("%s: %s in the state directory is %s; the script does not see it", self.owner, rel, what)

    def _read(self, fd_dir: int, name: str, rel: str) -> str:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd_dir)
        except OSError as exc:
            raise SandboxError(f"{self.owner}: cannot read {rel} in the state directory: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
        return data.decode("utf-8", errors="replace")

    # --- writing -----------------------------------------------------------------------------

    def write(self, rel: str, text: str) -> None:
        parts = check_relative(rel, self.owner)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise SandboxError(f"{self.owner}: the text written to {rel!r} is not valid UTF-8 (a lone surrogate)") from None
        held = sum(size for r, (_, size) in self.stamps.items() if r != rel)
        if held + len(data) > MAX_STATE_BYTES:
            raise SandboxError(f"{self.owner}: writing {len(data)} bytes to {rel!r} would take the state directory "
                               f"over its quota of {MAX_STATE_BYTES} bytes")
        if rel not in self.stamps and len(self.stamps) >= MAX_FILES:
            raise SandboxError(f"{self.owner}: the state directory already holds {MAX_FILES} files")
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.root, _DIR_FLAGS)
            for part in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
            try:
                out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=fd)
                with os.fdopen(out, "wb") as f:
                    f.write(data)
                st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
        except OSError as exc:
            reason = "a link or not a directory on the way" if exc.errno in (errno.ELOOP, errno.ENOTDIR) \
                else exc.strerror
            raise SandboxError(f"{self.owner}: cannot write {rel!r} in the state directory: {reason}") from None
        self.stamps[rel] = (st.st_mtime, st.st_size)
