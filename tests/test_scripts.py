"""The newcomer's scripts (issue 18, item 15): the demo never writes secrets into the
repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def demo_default_workdir(env: dict[str, str]) -> Path:
    """The work directory scripts/demo.sh uses without an argument (its own line, run)."""
    text = (ROOT / "scripts/demo.sh").read_text()
    line = next(m.group(0) for m in re.finditer(r"^workdir=.*$", text, re.M))
    out = subprocess.run(["bash", "-c", f'set -- ; cd "{ROOT}"; {line}; '
                          'realpath -m "$workdir"'], capture_output=True, text=True,
                         env=env, check=True)
    return Path(out.stdout.strip())


def test_the_demo_workdir_is_outside_the_repository() -> None:
    for env in ({"PATH": "/usr/bin:/bin"},
                {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": "/run/user/1000"}):
        workdir = demo_default_workdir(env)
        assert ROOT not in workdir.parents and workdir != ROOT, workdir


def test_a_workdir_left_in_the_repository_is_ignored() -> None:
    # The old default (./sim): a checkout that still has one must not commit it.
    result = subprocess.run(["git", "check-ignore", "-q", "sim/state/state.json"], cwd=ROOT,
                            check=False)
    assert result.returncode == 0
