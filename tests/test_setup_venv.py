"""scripts/setup-venv.sh, the Python side of the README's two commands: installs once per
pyproject.toml, and extras installed already count.

Before, the stamp named exactly the extras asked for, so ``scripts/demo.sh``
(test,gpio,bench) after ``scripts/test.sh`` (test,gpio,bench,peers) ran ``pip install``
again, and the next test run once more: every alternation needed the package registry.
Here pip is a stand-in that records what it was asked: what is under test is the script's
decision, not pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tree(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup-venv.sh", tmp_path / "scripts")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    pip = bin_dir / "pip"
    pip.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "pip.log"}\n')
    pip.chmod(0o755)
    return tmp_path


def setup(root: Path, extras: str) -> list[str]:
    """Runs the script asking for ``extras``; the pip installs it made."""
    log = root / "pip.log"
    log.unlink(missing_ok=True)
    subprocess.run(["bash", str(root / "scripts" / "setup-venv.sh")], check=True,
                   env=dict(os.environ, GATEWAYD_EXTRAS=extras), timeout=60,
                   stdout=subprocess.DEVNULL)
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith("install -q -e")]


def test_the_demo_after_the_test_run_installs_nothing_and_more_extras_install_the_union(
        tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert setup(root, "test,gpio,bench,peers") == ["install -q -e .[bench,gpio,peers,test]"]
    assert setup(root, "test,gpio,bench") == []  # scripts/demo.sh after scripts/test.sh
    assert setup(root, "test,gpio,bench,peers") == []  # and the test run again
    assert setup(root, "gpio") == []


def test_a_missing_extra_installs_it_with_those_already_there(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert setup(root, "test,gpio,bench") == ["install -q -e .[bench,gpio,test]"]
    assert setup(root, "test,gpio,bench,peers") == ["install -q -e .[bench,gpio,peers,test]"]
    assert setup(root, "test") == []


def test_a_changed_pyproject_installs_again(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert setup(root, "test,gpio,bench,peers")
    with (root / "pyproject.toml").open("a") as out:
        out.write("\n# a pin moved\n")
    # only what is asked now: the old stamp's extras were for another pyproject.toml
    assert setup(root, "test,gpio,bench") == ["install -q -e .[bench,gpio,test]"]
