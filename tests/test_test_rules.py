"""The suite's own rules, checked on its source (the handbook: unit tests never assert
timings; a "did not happen" waits on a positive signal, not a sleep; a test must not ask a
mock for what it may already have done by itself).

- No assertion compares a measured duration: ``elapsed``, ``monotonic() -``,
  ``perf_counter() -``, ``time() -`` or ``approx(..., abs=...)`` inside an ``assert``.
  Speed is a bench figure (bench/); only tests/test_bench.py's smoke checks are exempt.
- No fixed sleep directly before an assertion.
- No ``drop_wifi()`` right after ``remove_ap()``: removing the network the hub is on drops
  the link by itself, so the mock may have dropped it already when the test asks (issue 18,
  item 13: a test that lost that race under load).
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
EXEMPT = {"test_bench.py"}  # its smoke checks bound the bench's own run time
TIMING = re.compile(r"\belapsed\b|monotonic\(\)\s*-|perf_counter\(\)\s*-|\btime\(\)\s*-"
                    r"|approx\([^()]*(\([^()]*\)[^()]*)*\babs\s*=")


def _calls(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Attribute) and n.func.attr == name)
        or (isinstance(n.func, ast.Name) and n.func.id == name)) for n in ast.walk(node))


def _is_sleep(stmt: ast.stmt) -> bool:
    """``time.sleep(c)`` or ``await asyncio.sleep(c)`` with a positive constant."""
    value = stmt.value if isinstance(stmt, ast.Expr) else None
    if isinstance(value, ast.Await):
        value = value.value
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "sleep" and len(value.args) == 1
            and isinstance(value.args[0], ast.Constant)
            and isinstance(value.args[0].value, int | float) and value.args[0].value > 0)


def violations(source: str, name: str = "<test>") -> list[str]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            text = ast.get_source_segment(source, node) or ""
            if TIMING.search(text):
                found.append(f"{name}:{node.lineno}: a timing assertion: {text.strip()[:80]}")
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for first, second in itertools.pairwise(body):
                if _is_sleep(first) and isinstance(second, ast.Assert):
                    found.append(f"{name}:{second.lineno}: an assertion after a fixed sleep")
                if _calls(first, "remove_ap") and _calls(second, "drop_wifi"):
                    found.append(f"{name}:{second.lineno}: drop_wifi() after remove_ap(): the "
                                 "removal may have dropped the link already")
    return found


def test_the_suite_keeps_its_rules() -> None:
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name not in EXEMPT:
            found += violations(path.read_text(), path.name)
    assert found == []


@pytest.mark.parametrize("bad", [
    "def t():\n    assert elapsed < 1.5\n",
    "def t():\n    assert time.monotonic() - start < TIMEOUT + 1.5\n",
    "def t():\n    assert 0.5 <= time.perf_counter() - t0 < 1.5\n",
    "async def t():\n    assert loop.time() - began < 2\n",
    "def t():\n    assert remaining[0] == pytest.approx(0.3, abs=0.05)\n",
    "def t():\n    assert x == approx(f(1), abs=0.1)\n",
    "async def t():\n    await asyncio.sleep(0.25)\n    assert count == 3\n",
    "def t():\n    time.sleep(1)\n    assert not fired\n",
    "def t():\n    nm.remove_ap('HomeNet')\n    nm.drop_wifi()\n",
    "async def t():\n    with x:\n        nm.remove_ap('A')\n        nm.drop_wifi()\n",
])
def test_the_rules_catch_what_they_forbid(bad: str) -> None:
    assert violations(bad)


@pytest.mark.parametrize("good", [
    "def t():\n    assert value == pytest.approx(0.3)\n",  # a value, not a duration bound
    "async def t():\n    await asyncio.sleep(0)\n    assert x\n",  # a yield, not a wait
    "def t():\n    nm.remove_ap('HomeNet')\n    wait_until_offline()\n    nm.drop_wifi()\n",
    "def t():\n    assert t1 >= t0\n",
])
def test_the_rules_leave_the_rest_alone(good: str) -> None:
    assert violations(good) == []
