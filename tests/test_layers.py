"""The package's folders are its layers, and imports only go down them, without cycles.

Order, lowest first: runtime < the root modules (outcrop, config, csvfile, errors, io, fields, layout,
limits, locks, results, stages) < raster < learning <
search < figures < serve < cli. A module may import its own layer and any lower one; every import counts,
those inside functions too (they run all the same, only later).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "outcrop"
LAYERS = ["runtime", "root", "raster", "learning", "search", "figures", "serve", "cli"]
# results (outcrop.open_run) reads a finished run's files through io and layout only, so it sits
# at the root, where ``outcrop.open_run`` can reach it without importing upward.
ROOT_MODULES = {
    "outcrop",
    "outcrop.config",
    "outcrop.csvfile",
    "outcrop.errors",
    "outcrop.io",
    "outcrop.fields",
    "outcrop.layout",
    "outcrop.limits",
    "outcrop.locks",
    "outcrop.results",
    "outcrop.stages",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module == "outcrop.cli" or module == "outcrop.__main__":
        return "cli"
    if module in ROOT_MODULES:
        return "root"
    return module.split(".")[1]


def package_imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (anywhere in its body)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from outcrop.search import index` names a module; `from outcrop.io import x` a name.
                names = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            else:
                continue
            targets |= {n for n in names if n in modules and n != name}
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted(
        f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})"
        for a, targets in graph.items()
        for b in targets
        if rank[layer_of(b)] > rank[layer_of(a)]
    )


def test_every_module_belongs_to_a_layer():
    assert {layer_of(m) for m in package_imports()} <= set(LAYERS)


def test_no_import_cycle():
    assert cycles(package_imports()) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert upward_imports(package_imports()) == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The walker itself: a made-up graph with one cycle and one upward edge is caught."""
    graph = {
        "outcrop.search.a": {"outcrop.search.b"},
        "outcrop.search.b": {"outcrop.search.a"},
        "outcrop.raster.c": {"outcrop.figures.d"},
        "outcrop.figures.d": set(),
    }
    assert cycles(graph) == [["outcrop.search.a", "outcrop.search.b"]]
    assert upward_imports(graph) == ["outcrop.raster.c (raster) imports outcrop.figures.d (figures)"]
