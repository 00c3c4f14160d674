"""The control protocol: versioned JSON lines over a local Unix socket.

Request:  ``{"v": 1, "id": 7, "cmd": "swap", "slot": 0, "path": "py_strategies/ema.py:EmaStrategy",
"params": {"fast": 8}}``
Reply:    ``{"v": 1, "id": 7, "ok": true, ...}`` or
``{"v": 1, "id": 7, "ok": false, "error": {"type": "UnknownSlotError", "message": "..."}}``
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._errors import FloxError

VERSION = 1
SOCKET_NAME = "control.sock"
#: Longest request line the server reads.
MAX_LINE = 1 << 20
COMMANDS = ("swap", "status", "slots", "add", "remove", "halt", "resume")


class ControlError(FloxError):
    """A control request failed, or the control socket cannot be used."""


class PeerRefusedError(ControlError, PermissionError):
    """A control connection came from another user."""


class RequestError(ControlError, ValueError):
    """A control request is malformed (bad JSON, unknown command, wrong version, bad field)."""


class ControlBusyError(ControlError):
    """The engine is already serving as many control connections as it allows."""


class RunDirError(ControlError, PermissionError):
    """The run directory (or the control socket in it) is not safe to use: another user could
    impersonate the engine there, or it is not ours to create or remove."""


def socket_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SOCKET_NAME


def split_socket_path(path: str | Path) -> tuple[Path, Path]:
    """``(run_dir, socket)`` of a run directory, or of a socket path ending in ``.sock``."""
    path = Path(path)
    if path.suffix == ".sock":
        return path.parent, path
    return path, socket_path(path)


def dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, default=_default, separators=(",", ":")).encode() + b"\n"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal | Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)
