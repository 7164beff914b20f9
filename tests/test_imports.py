"""No module of ale_kernels or ale_pipeline imports another in a circle, counting imports inside functions.

An import hidden in a function to break a cycle still ties the two modules together, so every ``import`` and
``from ... import`` statement counts, wherever it stands. ``from package import name`` counts as importing
``package.name`` when that is a module, else ``package``. Importing ``a.b.c`` also runs ``a/b/__init__.py``, so
it counts as importing the packages between the top level and the module, except those the importing module
lives in (Python ran them before it). The top-level ``__init__`` files only re-export (lazily where they must)
and count only where they are imported by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ale_kernels", "ale_pipeline")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of :data:`PACKAGES` (a package is its ``__init__.py``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _resolve(module: str, path: Path, level: int, target: str | None) -> str:
    """The absolute dotted name of a (possibly relative) import written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _with_packages(name: str, importer: str, known: dict[str, Path]) -> set[str]:
    """``name`` and the packages between its top level and it that ``importer`` does not live in (those ran
    before ``importer`` did), restricted to ``known`` modules."""
    parts = name.split(".")
    packages = {".".join(parts[:i]) for i in range(2, len(parts))}
    packages = {p for p in packages if not importer.startswith(p + ".")}
    return ({name} | packages) & set(known)


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of :data:`PACKAGES` it imports."""
    graph = {}
    for module, path in known.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                edges |= _with_packages(target, module, known)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_module_imports_another_in_a_circle():
    known = module_files()
    assert "ale_pipeline.pipeline" in known and "ale_kernels.ops" in known
    cycle = find_cycle(import_graph(known))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, has_cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"d2"}, "d2": {"d"}}, True),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, has_cycle):
    assert (find_cycle(graph) is not None) == has_cycle


def test_the_graph_counts_imports_inside_functions_and_relative_imports(tmp_path):
    package = tmp_path / "ale_pipeline"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (package / "sub" / "leaf.py").write_text("def f():\n    from .. import top\n")
    (package / "top.py").write_text("from .sub.leaf import x\n")
    known = {
        "ale_pipeline": package / "__init__.py",
        "ale_pipeline.sub": package / "sub" / "__init__.py",
        "ale_pipeline.sub.leaf": package / "sub" / "leaf.py",
        "ale_pipeline.top": package / "top.py",
    }
    graph = import_graph(known)
    assert graph["ale_pipeline.top"] == {"ale_pipeline.sub", "ale_pipeline.sub.leaf"}
    assert graph["ale_pipeline.sub"] == {"ale_pipeline.sub.leaf"}
    assert find_cycle(graph) is not None  # top -> sub.leaf -> (inside a function) top
