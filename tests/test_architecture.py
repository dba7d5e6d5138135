"""The package's shape (docs/architecture.md): three layers, imports pointing down only, no import
circle, at most about 20 top-level modules, empty __init__ files. Lazy imports (inside functions)
count: they are imports all the same."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "contribflow"
DRIVERS = ("contribflow.cli", "contribflow.__main__", "contribflow.local", "contribflow.cluster.client")
PHASES = ("contribflow.ingest", "contribflow.warehouse", "contribflow.audit", "contribflow.generate",
          "contribflow.finish")


def layer(module: str) -> int:
    def under(prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    return 2 if under(DRIVERS) else 1 if under(PHASES) else 0


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The contribflow modules ``path`` imports (``from contribflow.x import y`` counts y when y is a
    module, else x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "contribflow":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "contribflow")
    return {m for m in out if m in known and m != "contribflow"}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_imports_point_down_the_layers_only():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert not upward, upward


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def test_the_top_level_stays_small_and_init_files_empty():
    top = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 20, sorted(p.name for p in top)
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent != PACKAGE:  # contribflow/__init__.py holds only __version__
            assert init.read_text().strip() == "", init


def test_the_checker_orders_the_layers_and_sees_lazy_imports(tmp_path):
    """The checks above can fail: layers are ordered, and lazy imports are seen."""
    assert layer("contribflow.step") < layer("contribflow.warehouse.publish") < layer("contribflow.cli")
    known = modules()
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from contribflow.warehouse import publish\nfrom contribflow import step\n")
    assert imports_of(fake, known) == {"contribflow.warehouse.publish", "contribflow.step"}
