"""The wheel carries what `flox-trio demo` needs, so it runs wherever flox-trio is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_demo_strategies_and_the_js_prelude(tmp_path: Path) -> None:
    # Built from a copy: an in-tree build would leave build/ and egg-info behind in the checkout.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(tree)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("flox_trio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("flox_trio/app/strategies/ema.py", "flox_trio/app/strategies/ema.js", "flox_trio/js/_prelude.js",
                 "flox_trio/py.typed"):
        assert name in names, name
    # The demo finds its strategies next to its own module, never in a source checkout.
    demo = zipfile.ZipFile(wheel).read("flox_trio/app/_demo.py").decode()
    assert "STRATEGIES = Path(__file__).resolve().with_name(\"strategies\")" in demo and "parents[" not in demo


def test_the_repository_strategy_files_are_the_shipped_ones() -> None:
    for link, target in (("py_strategies/ema.py", "ema.py"), ("js_strategies/ema.js", "ema.js")):
        assert (ROOT / link).resolve() == ROOT / "src/flox_trio/app/strategies" / target
