"""Suite-wide: no test finds, or is found by, an engine of the user running the suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Engines started without a run_dir go to the per-user runtime directory; keep each
    # test's apart (a short path: a Unix socket path has at most 107 bytes).
    root = tmp_path_factory.mktemp("rt", numbered=True)
    monkeypatch.setenv("FLOX_TRIO_RUNTIME_DIR", str(root))
    return root
