"""Registration's modules form a DAG, import only core_ops and optim from gradcv, and keep
their functions short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "registration"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(name: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradcv."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gradcv.")}
    return found


def test_modules_form_a_dag():
    graph = {m: {i.split(".")[2] for i in _imports(m) if i.startswith("gradcv.registration.")} for m in MODULES}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(m: str) -> None:
        if m in order:
            return
        assert m not in visiting, f"import cycle through {m}: {graph}"
        visiting.add(m)
        for dep in graph[m]:
            visit(dep)
        visiting.discard(m)
        order.append(m)

    for m in MODULES:
        visit(m)
    assert "second_order" not in graph["solver"] or "solver" not in graph["second_order"]


@pytest.mark.parametrize("name", MODULES)
def test_imports_only_lower_layers(name):
    for module in _imports(name):
        assert module.split(".")[1] in ("core_ops", "optim", "registration"), module


@pytest.mark.parametrize("name", MODULES)
def test_functions_fit_a_screen(name):
    """No function runs past ~80 lines (the second-order iteration is the longest)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{name}.{node.name}: {length} lines"
