"""Operate a running engine over a local Unix socket (``RUN_DIR/control.sock``).

Where ``RUN_DIR`` is, and how a command finds it: see ``_registry``.
"""

from ._client import ControlClient as ControlClient
from ._client import ControlCommandError as ControlCommandError
from ._client import call as call
from ._metrics import serve_metrics as serve_metrics
from ._protocol import VERSION as VERSION
from ._protocol import ControlBusyError as ControlBusyError
from ._protocol import ControlError as ControlError
from ._protocol import PeerRefusedError as PeerRefusedError
from ._protocol import RequestError as RequestError
from ._protocol import RunDirError as RunDirError
from ._protocol import socket_path as socket_path
from ._registry import RUNTIME_ENV as RUNTIME_ENV
from ._registry import RunningEngine as RunningEngine
from ._registry import announce_engine as announce_engine
from ._registry import find_run_dir as find_run_dir
from ._registry import named_run_dir as named_run_dir
from ._registry import running_engines as running_engines
from ._registry import runtime_root as runtime_root
from ._rundir import prepare_run_dir as prepare_run_dir
from ._server import ConnectionStats as ConnectionStats
from ._server import ControlServer as ControlServer
from ._server import check_peer as check_peer
from ._server import peer_uid as peer_uid
from ._server import serve_control as serve_control

__all__ = [
    "serve_metrics",
    "VERSION", "ConnectionStats", "ControlBusyError", "ControlClient", "ControlCommandError", "ControlError",
    "ControlServer", "PeerRefusedError", "RequestError", "RunDirError", "call", "check_peer", "peer_uid",
    "prepare_run_dir", "serve_control", "socket_path",
    "RUNTIME_ENV", "RunningEngine", "announce_engine", "find_run_dir", "named_run_dir", "running_engines",
    "runtime_root",
]

