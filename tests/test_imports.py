"""No import cycles among scim_server's modules (issue 13): each module stands on the ones
below it. Read from the source with `ast`, so a cycle is found whether or not it would fail
at import time."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "scim_server"
# The app factory (scim_server/__init__.create_app) registers the CLI, whose `main` makes
# the app: a deferred import each way, Flask's pattern, and the one cycle allowed below.
APP_FACTORY = "scim_server"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module, deferred: bool) -> list[str]:
    """The modules imported at the top of the module (TYPE_CHECKING blocks included), and
    with `deferred` those imported inside functions too."""
    nodes: list[ast.AST] = list(ast.walk(tree)) if deferred else []
    if not deferred:
        for node in tree.body:
            nodes.append(node)
            if isinstance(node, ast.If):  # if TYPE_CHECKING: …
                nodes.extend(node.body)
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _graph(deferred: bool) -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        found = {resolve(n) for n in _imports(ast.parse(path.read_text()), deferred)}
        graph[module] = {m for m in found if m is not None and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph(deferred=False)
    assert "scim_server.sync.worker" in graph["scim_server.sync.runtime"]  # the graph is read
    assert _cycles(graph) == []


def test_deferred_imports_make_no_cycle_either_but_the_app_factory() -> None:
    graph = _graph(deferred=True)
    assert _cycles(graph) != []  # counted: the app factory and the CLI
    without_factory = {
        m: {d for d in deps if d != APP_FACTORY} for m, deps in graph.items() if m != APP_FACTORY
    }
    assert _cycles(without_factory) == []
