"""Suite-wide: no test finds, or is found by, an engine of the user running the suite."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _private_runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Engines started without a run_dir go to the per-user runtime directory; keep each
    # test's apart (a short path: a Unix socket path has at most 107 bytes).
    root = tmp_path_factory.mktemp("rt", numbered=True)
    monkeypatch.setenv("FLOX_TRIO_RUNTIME_DIR", str(root))
    return root


@pytest.fixture
def unpack() -> Callable[[Path, Path], None]:
    """Extract an archive (a replay bundle) as Python 3.14 will by default, with the "data" filter.

    Unfiltered extraction warns on 3.12 and 3.13, and the suite makes warnings errors.
    The filter came in 3.11.4 (and to older 3.11 builds by backport); without it, none.
    """

    def run(archive: Path, dest: Path) -> None:
        kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        shutil.unpack_archive(archive, dest, **kwargs)

    return run
