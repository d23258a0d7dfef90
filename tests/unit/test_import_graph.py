"""The package's import graph has no loop of any kind.

Every import counts: at module level, inside functions (late imports), and under
``if t.TYPE_CHECKING:`` (type-only imports). A late or type-only import that closes a loop still
means a concept has no single owner (docs/api.rst states the layering; CHANGES.rst 0.1.0). The
test prints every loop it finds, as strongly connected components, so that a failure shows them
all at once (``pytest -s tests/unit/test_import_graph.py`` prints the graph's size either way).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "flask_ssecors"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every package module ``name`` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    found = {module for module in found if module in known and module != name}
    # A submodule's package is imported before it, whatever it says: not an edge of its own.
    return {module for module in found if not name.startswith(module + ".")}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, name, known) for name, path in found.items()}


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for following in sorted(edges.get(node, ())):
            if following not in index:
                visit(following)
                low[node] = min(low[node], low[following])
            elif following in on_stack:
                low[node] = min(low[node], index[following])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(components)


def test_no_import_loop_of_any_kind() -> None:
    edges = graph()
    found = loops(edges)
    print(
        f"\n{len(edges)} modules, {sum(len(v) for v in edges.values())} imports, "
        f"{len(found)} loops: " + "; ".join(f"{len(c)} modules ({', '.join(c)})" for c in found)
    )
    assert found == [], "import loops (late and type-only imports counted): " + "; ".join(
        " <-> ".join(component) for component in found
    )


def test_the_loop_finder_finds_loops() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert loops({"a": {"b"}, "b": set()}) == []
    assert loops({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_late_and_type_only_imports_are_edges(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import typing as t\n"
        "if t.TYPE_CHECKING:\n    from .a import A\n"
        "def f():\n    from .b import g\n"
    )
    known = {"p.a", "p.b", "p.m"}
    assert imports_of(module, "p.m", known) == {"p.a", "p.b"}
