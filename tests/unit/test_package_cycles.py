"""The scheduler's packages import one another without cycles (read from the source's ASTs).

A node is a package under ``scheduler/`` (``scheduler.dispatch``) or a top-level module
(``scheduler.slots``); an edge is any import from one node's files into another node, function-
level imports included (a lazy import still couples the packages). Shared pieces belong in the
package both sides may depend on (slot arithmetic in ``scheduler.slots``, a site's carbon factor
type in ``scheduler.forecasts.service``), not in one side of a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "scheduler"

Graph = dict[str, dict[str, list[str]]]


def _node(module: str) -> str | None:
    """The graph node of a dotted ``scheduler.*`` module name (None outside the scheduler)."""
    parts = module.split(".")
    if parts[0] != "scheduler" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path, package: str) -> list[tuple[str, int]]:
    """Absolute module names imported anywhere in ``path`` (relative imports resolved)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
    return out


def import_graph(root: Path = ROOT) -> Graph:
    """node -> imported node -> where ("file:line"), over every ``*.py`` under ``root``."""
    graph: Graph = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        package = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts[:-1])
        source = _node(".".join(rel.parts))
        if source is None or source == "__init__":
            continue
        for name, line in _imports(path, package):
            target = _node(name)
            if target is not None and target != source and target != "__init__":
                graph[source][target].append(f"{path.relative_to(root.parent)}:{line}")
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


KNOWN_CYCLES = [["dispatch", "review"]]
"""Cycles still to break, each named so that a new one fails: dispatch's metrics exporter imports
``scheduler.review.metrics`` while review imports ``dispatch.poison`` and ``dispatch.signals``."""


def test_scheduler_packages_have_no_import_cycle_but_the_known_ones() -> None:
    graph = import_graph()
    assert "dispatch" in graph and "intake" in graph["dispatch"], "the scan found no imports"
    found = [c for c in cycles(graph) if c not in KNOWN_CYCLES]
    where = {
        tuple(c): {f"{a} -> {b}": graph[a][b][:3] for a in c for b in c if b in graph.get(a, {})}
        for c in found
    }
    assert not found, f"import cycles among scheduler packages: {where}"


def test_dispatch_forecasts_and_intake_import_one_another_without_a_cycle() -> None:
    """Issue 18's cycle: intake -> dispatch (slots) and forecasts -> dispatch (factor type)."""
    graph = import_graph()
    three = {"dispatch", "forecasts", "intake"}
    sub = {a: {b: w for b, w in graph[a].items() if b in three} for a in three}
    assert cycles(sub) == [], {a: list(sub[a]) for a in three}


def test_the_scan_sees_a_cycle_when_one_exists(tmp_path: Path) -> None:
    """The detector itself: a lazy import back from ``b`` to ``a`` is a cycle."""
    root = tmp_path / "scheduler"
    for pkg, body in {
        "a": "from scheduler.b.x import f\n",
        "b": "def g():\n    from scheduler.a import h\n",
        "c": "from scheduler.a import h\n",
    }.items():
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
        (root / pkg / "x.py").write_text(body)
    assert cycles(import_graph(root)) == [["a", "b"]]
