"""The package's shape: one package per concern, imports one way, modules one can read.

docs/architecture.md describes the layout; these checks keep it true. The import graph
counts every import of a gatewayd module, also inside functions (a function-level import
that closes a cycle is still a cycle); imports under ``if TYPE_CHECKING:`` are type
information only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gatewayd"
# The design card names these three modules: they front their concern's package.
CARD_MODULES = {"ap.py", "ble_commission.py", "bridge.py"}
MAX_TOP_LEVEL = 14
MAX_LINES = 470  # "about 450": a module a person reads in one sitting
# Modules exempt from MAX_LINES because they are data tables.
DATA_TABLES: set[str] = set()
# Modules over MAX_LINES that are being split on their own branch; empty when none is.
PENDING_SPLIT: set[str] = set()


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    return {m for m in found if m in known and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_gatewayd_modules() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the graph must cover the whole package"
    assert cycles(graph) == []


def test_the_cycle_finder_sees_function_level_imports_and_not_type_checking_ones(
        tmp_path: Path) -> None:
    # The check above must be able to fail: a cycle closed inside a function is found,
    # one closed under TYPE_CHECKING is not a cycle.
    pkg = tmp_path / "gatewayd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from gatewayd.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from gatewayd import a\n")
    (pkg / "c.py").write_text("from .sub import d\n")
    (pkg / "sub" / "d.py").write_text("from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from gatewayd import c\n")
    graph = import_graph(pkg)
    assert graph["gatewayd.sub.b"] == {"gatewayd.a"}
    assert graph["gatewayd.c"] == {"gatewayd.sub.d"} and graph["gatewayd.sub.d"] == set()
    assert cycles(graph) == [["gatewayd.a", "gatewayd.sub.b"]]


def test_few_modules_at_the_top_and_the_design_card_ones_among_them() -> None:
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert len(top) <= MAX_TOP_LEVEL, sorted(top)
    assert CARD_MODULES <= top


@pytest.mark.parametrize("init", sorted(PACKAGE.rglob("__init__.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_package_says_what_lives_there_and_what_it_may_import(init: Path) -> None:
    if init.parent == PACKAGE:
        return  # the package root holds the version only
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc) > 80, f"{init}: a docstring saying what lives here"
    assert "import" in doc.lower(), f"{init}: say what the package may import"


def test_modules_are_small_enough_to_read_in_one_sitting() -> None:
    too_long = {name: n for name, path in modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_LINES
                and name not in DATA_TABLES | PENDING_SPLIT}
    assert too_long == {}


def test_codecs_import_no_io_stack() -> None:
    # The phone side and the tests use the BLE codecs without sdbus or bleak.
    graph = import_graph()
    for codec in ("gatewayd.ble.improv_codec", "gatewayd.ble.secure_protocol"):
        assert graph[codec] == set(), codec
        tree = ast.parse(modules()[codec].read_text())
        third_party = {n.module.split(".")[0] for n in ast.walk(tree)
                       if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        third_party |= {a.name.split(".")[0] for n in ast.walk(tree)
                        if isinstance(n, ast.Import) for a in n.names}
        assert not third_party & {"sdbus", "sdbus_async", "bleak", "dbus_fast"}, codec
    phone = graph["gatewayd.ble.phone"]
    assert phone <= {"gatewayd.ble.improv_codec", "gatewayd.ble.secure_protocol"}, phone
