"""The package's imports follow the documented order (CONTRIBUTING.md, "Import order") and form no cycle.

Every import statement counts, wherever it stands (inside functions, under ``TYPE_CHECKING``). ``from P import n``
is an import of the module ``P.n`` when that module exists, else of ``P``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import deepwiener

PACKAGE = Path(deepwiener.__file__).parent
ROOT_NAME = PACKAGE.name
CONTRIBUTING = PACKAGE.parents[1] / "CONTRIBUTING.md"


def documented_levels(text: str) -> dict[str, int]:
    """{unit: level} from the first code block after the "Import order" heading: one level per line, top first."""
    block = re.search(r"## Import order.*?```\n(.*?)```", text, re.S)
    assert block is not None, "CONTRIBUTING.md has no import order block"
    return {unit: level for level, line in enumerate(block.group(1).splitlines()) for unit in line.split()}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".")[: len(name.split(".")) - node.level + int(is_package)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t == ROOT_NAME or t.startswith(ROOT_NAME + ".")}


def graph() -> dict[str, set[str]]:
    """module -> imported modules, without a package's imports of its own modules."""
    found = modules()
    known = set(found)
    edges = {}
    for name, path in found.items():
        own = path.name == "__init__.py"
        edges[name] = {t for t in imports(name, path, known) if not (own and t.startswith(name + "."))}
    return edges


def unit(module: str) -> str:
    """The level unit of a module: its top-level module or package (the facade for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_NAME


def test_no_import_cycles() -> None:
    edges = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"modules that import each other: {cycles}"


def test_imports_follow_the_documented_order() -> None:
    levels = documented_levels(CONTRIBUTING.read_text(encoding="utf-8"))
    edges = graph()
    units = {unit(m) for m in edges} - {ROOT_NAME}
    assert units <= set(levels), f"not in the documented order: {sorted(units - set(levels))}"
    against = []
    for source, targets in edges.items():
        if source == ROOT_NAME:  # the facade imports what it exports
            continue
        for target in targets:
            a, b = unit(source), unit(target)
            if a != b and (b == ROOT_NAME or levels[b] >= levels[a]):
                against.append(f"{source} -> {target}")
    assert not against, f"imports against the documented order: {sorted(against)}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The parser sees imports inside functions and under TYPE_CHECKING, and resolves ``from P import module``."""
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from deepwiener.cli import main\n"
                    "def f():\n    from deepwiener.models import base, Model\n    import deepwiener.io\n")
    found = imports("deepwiener.errors", path, set(modules()))
    assert found == {"deepwiener.cli", "deepwiener.models.base", "deepwiener.models", "deepwiener.io"}
    assert documented_levels("## Import order\n\n```\na\nb c\n```\n") == {"a": 0, "b": 1, "c": 1}
