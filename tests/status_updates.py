"""The ``update(Table)...values(...)`` statements of the product, found in its ASTs.

``test_shard_moves`` and ``test_batch_moves`` use it to check that every status update of their
table puts its guard (``shard_from``, ``batch_from``) in its ``WHERE``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def chain(node: ast.expr) -> list[ast.Call]:
    """The calls of a method chain, outermost first (``update(X).where(...).values(...)``)."""
    calls = []
    while isinstance(node, ast.Call):
        calls.append(node)
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return calls


def status_updates(
    table: str, sets_status: Callable[[ast.Call], bool], guarded: Callable[[ast.Call], bool]
) -> list[tuple[str, int, bool]]:
    """(path, line, guarded) of each ``update(table)`` whose ``.values`` call ``sets_status``;
    guarded when one of its ``.where`` calls is ``guarded``."""
    found = []
    for path in [*ROOT.glob("scheduler/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "values"
                and sets_status(node)
            ):
                continue
            calls = chain(node)
            root = calls[-1]
            if not (
                isinstance(root.func, ast.Name)
                and root.func.id == "update"
                and root.args
                and isinstance(root.args[0], ast.Name)
                and root.args[0].id == table
            ):
                continue
            wheres = [
                c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "where"
            ]
            found.append((str(path.relative_to(ROOT)), node.lineno, any(map(guarded, wheres))))
    return found
