"""No import circles anywhere in ``src/descent``: every module's imports of the package,
including lazy ones inside functions, form a graph without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = SRC) -> set[str]:
    """The package modules ``path`` imports, anywhere in the file. ``from . import x``
    names the submodule ``x`` when there is one; a parent package imported only on the
    way to a submodule is not counted."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            found.update(subs)
            if target in modules and len(subs) < len(node.names):
                found.add(target)
    found.discard(name)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def graph(root: Path = SRC, package: str = "descent") -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    return {m: imports_of(p, set(files), root) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycles():
    edges = graph()
    assert len(edges) > 50 and edges["descent.arena.session"]
    assert cycles(edges) == []


@pytest.mark.parametrize("lazy", [False, True])
def test_a_cycle_is_caught(tmp_path, lazy):
    pkg = tmp_path / "descent" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "descent" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    body = "def f():\n    from .a import x\n" if lazy else "from descent.sub.a import x\n"
    (pkg / "b.py").write_text(body)
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .a import y\nif TYPE_CHECKING:\n    from . import d\n"
    )
    (pkg / "d.py").write_text("from . import c\n")
    edges = graph(tmp_path)
    assert edges["descent.sub.a"] == {"descent.sub.b"} and edges["descent.sub.c"] == {"descent.sub.a"}
    assert edges["descent.sub.d"] == {"descent.sub.c"}  # a TYPE_CHECKING import runs nothing
    assert cycles(edges) == [["descent.sub.a", "descent.sub.b"]]


def _all_imports(path: Path, modules: set[str]) -> set[str]:
    """Like :func:`imports_of`, type-only imports (``if TYPE_CHECKING:``) included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("descent"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("descent"):
                found.add(target)
                found.update({f"{target}.{a.name}" for a in node.names} & modules)
    return found


def test_the_engine_knows_nothing_above_it():
    """The engine runs rule chains over params, state and gradients: it imports only
    itself, the rules and the version string — no optimizer class, not even for typing."""
    modules = {module_name(p) for p in (SRC / "descent").rglob("*.py")}
    engine = sorted((SRC / "descent" / "engine").rglob("*.py"))
    assert len(engine) >= 8
    allowed = ("descent.engine", "descent.rules", "descent._version")
    for path in engine:
        outside = {m for m in _all_imports(path, modules) if not m.startswith(allowed)}
        assert not outside, f"{module_name(path)} imports {sorted(outside)}"
