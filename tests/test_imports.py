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
