"""Imports go one way: the data pipeline and the network know nothing of each other, and the parallel layer
(layout, process groups, routing) knows no network. Read from the source with ast, so a lazy import inside
a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import aeris_ds

PACKAGE = Path(aeris_ds.__file__).parent
FORBIDDEN = {  # package → packages it must not import
    "data": {"model", "parallel", "diffusion"},
    "model": {"data"},
    "parallel": {"model", "data", "diffusion"},
}


def imported_packages(path: Path) -> set[str]:
    """aeris_ds sub-packages (or top-level modules) that the file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "aeris_ds":  # from aeris_ds import model
                names |= {f"aeris_ds.{a.name}" for a in node.names}
    return {n.split(".")[1] for n in names if n.startswith("aeris_ds.")}


def forbidden_edges() -> list[str]:
    edges = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for target in sorted(imported_packages(path) & banned):
                edges.append(f"{path.relative_to(PACKAGE.parent)} imports aeris_ds.{target}")
    return edges


def test_no_forbidden_imports():
    assert forbidden_edges() == []


def test_walker_sees_lazy_and_package_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from aeris_ds import model\n\ndef f():\n    import aeris_ds.data.schema\n"
                   "    from aeris_ds.parallel.layout import WindowGrid\n")
    assert imported_packages(src) == {"model", "data", "parallel"}


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """aeris_ds module → the aeris_ds modules it imports (lazy imports included)."""
    def name(path: Path) -> str:
        parts = path.relative_to(package.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name(p): p for p in package.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from aeris_ds.data import schema` imports the module aeris_ds.data.schema
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names}
        graph[module] = targets & files.keys()
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per import cycle found by depth-first search (empty when the graph runs one way)."""
    found, done, path = [], set(), []

    def visit(node: str) -> None:
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        path.append(node)
        for target in sorted(graph[node]):
            visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    return found


def test_no_import_cycles():
    assert cycles(module_graph()) == []


def test_cycle_finder_sees_a_lazy_cycle(tmp_path):
    pkg = tmp_path / "aeris_ds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from aeris_ds import b\n")
    (pkg / "b.py").write_text("def f():\n    from aeris_ds.a import g\n")
    assert cycles(module_graph(pkg)) == [["aeris_ds.a", "aeris_ds.b", "aeris_ds.a"]]
