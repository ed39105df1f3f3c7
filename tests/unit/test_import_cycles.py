"""No import cycles between our modules, counting the imports deferred into functions: a cycle
hidden in a function body still ties two modules together (and is how cycles usually hide)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_import_alone import SOURCES, modules


def _source(module: str) -> Path:
    for base in SOURCES:
        for candidate in (
            base / module.replace(".", "/") / "__init__.py",
            base / f"{module.replace('.', '/')}.py",
        ):
            if candidate.exists():
                return candidate
    raise FileNotFoundError(module)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, known: set[str]) -> set[str]:
    path = _source(module)
    return imports_in(path.read_text(), module, path.name == "__init__.py", known)


def imports_in(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules `module` imports, anywhere in its body (not under TYPE_CHECKING)."""
    tree = ast.parse(source)
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    resolved = set()
    for name in found:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.add(name)
    return resolved


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_deferred_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_imports_inside_functions_but_not_type_checking_ones() -> None:
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e"}
    source = """
from typing import TYPE_CHECKING
from pkg import b
from .c import thing
if TYPE_CHECKING:
    from pkg.e import Hint
def later():
    from pkg.d import helper
"""
    assert imports_in(source, "pkg.a", False, known) == {"pkg.b", "pkg.c", "pkg.d"}


def test_no_import_cycles_between_our_modules() -> None:
    known = set(modules())
    graph = {module: imports_of(module, known) for module in known}
    found = cycles(graph)
    assert not found, "import cycles (break them: move the shared piece down a layer): " + "; ".join(
        " ↔ ".join(component) for component in found
    )


def test_api_handler_modules_do_not_import_each_other() -> None:
    """What handler modules share lives below them (inputs, answers, checks, patches, store,
    events), so a resource's module can change without reaching into another's."""
    known = set(modules())
    handlers = {
        module
        for module in known
        if module.startswith("routines_api.") and "ROUTES.tagged(" in _source(module).read_text()
    }
    assert {"routines_api.directory", "routines_api.triggers", "routines_api.issues"} <= handlers
    crossing = {module: sorted(imports_of(module, known) & handlers) for module in sorted(handlers)}
    assert not {module: others for module, others in crossing.items() if others}
