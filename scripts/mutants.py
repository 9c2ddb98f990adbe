"""``make mutants``: mutation testing of the modules that hold the hub's rules.

docs/mutation-testing.md explains it. Runs the pinned mutmut (pyproject.toml, the ``test``
extra; its settings are ``[tool.mutmut]`` there) once per group of modules
(``[[tool.gatewayd-mutants.group]]``: the modules and the fast tests that cover them), each
in a copy of the tree under ``build/mutants/<group>/``, so the work tree is never touched;
then prints per module: mutants, killed, survived, time (the CPU seconds its
mutants' test runs took), the score, and every surviving mutant with its one-line diff.

Exit status 1 if a module scores under 80 % or a survivor is not listed (by name) in
docs/mutation-testing.md, where each one says why it is equivalent or harmless.

    .venv/bin/python scripts/mutants.py [--jobs N] [--keep] [--only GROUP] [--no-diffs]

``--keep`` reuses build/mutants/ (mutmut then re-tests only changed functions); ``--only``
runs some groups (named after their first module, e.g. ``state,publisher``); ``--report``
runs nothing and reports the last run of every group.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "build" / "mutants"
DOC = REPO / "docs" / "mutation-testing.md"
TARGET = 80.0

# A module's functions whose mutants count for it (default: all). ble_commission.py is
# counted for its window logic only: its GATT registration, advertisement updates and
# LAN-address lookup are exercised by the BlueZoo tests, which are not part of the fast set.
WINDOW_LOGIC = {"open_window", "authorize", "close_window", "on_hub_reset", "wait_for",
                "status", "_expire", "_close_soon", "_on_state"}
# The Zigbee library fixes are counted for the methods they put in place: ``install`` runs
# once per process, when the radio library is first imported (before mutmut switches to a
# mutant), and replaces the library's methods for good, so its mutants never run.
COUNTED: dict[str, set[str]] = {
    "gatewayd/ble_commission.py": WINDOW_LOGIC,
    "gatewayd/zigbee/ash_closing.py": {"cancel_pending_data_frames", "send_data",
                                       "send_data_done"},
    "gatewayd/zigbee/removals.py": {"let_go"},
}


@dataclass(frozen=True)
class Group:
    """Modules mutated together, against the tests given for them (pyproject.toml)."""

    name: str
    modules: list[str]
    tests: list[str]

    @property
    def work(self) -> Path:
        return WORK / self.name


def groups() -> list[Group]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = []
    for entry in config["tool"]["gatewayd-mutants"]["group"]:
        name = Path(entry["modules"][0]).stem
        found.append(Group(name, list(entry["modules"]), list(entry["tests"])))
    return found


KILLED = {"killed", "timeout", "caught by type check", "segfault"}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 35: "suspicious", 36: "timeout", 37: "caught by type check",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault",
          -9: "segfault"}


@dataclass
class Module:
    path: str
    killed: int = 0
    seconds: float = 0.0
    survivors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.killed + len(self.survivors)

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def function_of(mutant: str) -> str:
    """``gatewayd.x.xǁClassǁmethod__mutmut_3`` -> ``method``; ``gatewayd.x.x_f__mutmut_1``
    -> ``f``."""
    name = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[1]
    if "ǁ" in name:
        return name.rsplit("ǁ", 1)[1]
    return name.removeprefix("x_")


def prepare(group: Group, keep: bool) -> None:
    """A copy of the tree for the group, its pyproject.toml naming what to mutate."""
    if group.work.exists() and not keep:
        shutil.rmtree(group.work)
    group.work.mkdir(parents=True, exist_ok=True)
    for name in ("gatewayd", "tests", "docs"):
        target = group.work / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(REPO / name, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    text = (REPO / "pyproject.toml").read_text()
    settings = (f"only_mutate = {json.dumps(group.modules)}\n"
                f"pytest_add_cli_args_test_selection = {json.dumps(group.tests)}\n")
    text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + settings, 1)
    (group.work / "pyproject.toml").write_text(text)


def run_mutmut(group: Group, jobs: int) -> None:
    mutmut = Path(sys.executable).parent / "mutmut"
    # The mutated tree goes first on the path (tests import ``tests.*`` and ``gatewayd``
    # from it). It must exist before Python starts: a missing directory on the path is
    # remembered as having nothing to import.
    (group.work / "mutants").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(group.work / "mutants"),
               PYTHONDONTWRITEBYTECODE="1")
    log = group.work / "mutmut.log"
    with log.open("w") as out:
        done = subprocess.run([str(mutmut), "run", "--max-children", str(jobs)],
                              cwd=group.work, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"mutmut run failed ({done.returncode}); the end of {log}:\n{tail}")


def results(group: Group) -> list[Module]:
    modules = []
    for path in group.modules:
        module = Module(path)
        modules.append(module)
        meta = group.work / "mutants" / f"{path}.meta"
        if not meta.exists():
            continue  # nothing to mutate (e.g. a module that is one table)
        data = json.loads(meta.read_text())
        functions = COUNTED.get(path)
        for mutant, code in data["exit_code_by_key"].items():
            if functions is not None and function_of(mutant) not in functions:
                continue
            status = STATUS.get(code, "suspicious") if code is not None else "not checked"
            module.seconds += data.get("durations_by_key", {}).get(mutant, 0.0)
            if status in KILLED:
                module.killed += 1
            else:
                module.survivors.append(f"{mutant} ({status})" if status != "survived"
                                        else mutant)
    return modules


def diff_line(group: Group, mutant: str) -> str:
    """The mutant's changed line, as ``- old`` / ``+ new`` (from ``mutmut show``)."""
    mutmut = Path(sys.executable).parent / "mutmut"
    shown = subprocess.run([str(mutmut), "show", mutant.split(" ")[0]], cwd=group.work,
                           capture_output=True, text=True, check=False).stdout
    changed = [line for line in shown.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return " | ".join(" ".join(line.split()) for line in changed)[:160]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="reuse build/mutants")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors by name only")

    parser.add_argument("--only", help="run only these groups (named after their first "
                                           "module's stem, comma-separated)")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: report every group's last run in build/mutants")
    args = parser.parse_args()

    started = time.monotonic()
    ran: list[tuple[Group, list[Module]]] = []
    for group in groups():
        if args.only and group.name not in args.only.split(","):
            continue
        if args.report:
            ran.append((group, results(group)))
            continue
        began = time.monotonic()
        prepare(group, args.keep)
        run_mutmut(group, args.jobs)
        ran.append((group, results(group)))
        wall = time.monotonic() - began
        (group.work / "wall-seconds").write_text(f"{wall:.0f}\n")
        print(f"{group.name}: {wall:.0f} s", flush=True)
    documented = DOC.read_text() if DOC.exists() else ""
    modules = [m for _, found in ran for m in found]

    print(f"\n{'module':40} {'mutants':>7} {'killed':>6} {'survived':>8} {'time':>7} "
          f"{'score':>6}")
    failed = False
    for m in modules:
        flag = "" if m.score >= TARGET else "  < 80 %"
        failed |= m.score < TARGET
        print(f"{m.path:40} {m.total:7d} {m.killed:6d} {len(m.survivors):8d} "
              f"{m.seconds:6.0f}s {m.score:5.1f}%{flag}")
    total = sum(m.total for m in modules)
    killed = sum(m.killed for m in modules)
    print(f"{'all':40} {total:7d} {killed:6d} {total - killed:8d} "
          f"{sum(m.seconds for m in modules):6.0f}s {100.0 * killed / max(total, 1):5.1f}%")
    walls = {g.name: (g.work / "wall-seconds").read_text().strip()
             for g, _ in ran if (g.work / "wall-seconds").exists()}
    print("wall time per group: " + ", ".join(f"{n} {w} s" for n, w in walls.items()))
    if not args.report:
        print(f"wall time {time.monotonic() - started:.0f} s, {args.jobs} jobs")

    undocumented = []
    for group, found in ran:
        for m in found:
            if not m.survivors:
                continue
            print(f"\nsurvivors in {m.path}:")
            for mutant in m.survivors:
                name = mutant.split(" ")[0]
                known = re.search(rf"\b{re.escape(name)}\b", documented) is not None
                if not known:
                    undocumented.append(name)
                shown = "" if args.no_diffs else f"  {diff_line(group, mutant)}"
                print(f"  {'' if known else '(not in the docs) '}{mutant}{shown}")
    if undocumented:
        print(f"\n{len(undocumented)} survivor(s) not listed in {DOC.relative_to(REPO)}: "
              "add a test that kills each, or say there why it is equivalent or harmless.")
    if failed:
        print(f"\na module scores under {TARGET:.0f} %")
    return 1 if failed or undocumented else 0


if __name__ == "__main__":
    sys.exit(main())
