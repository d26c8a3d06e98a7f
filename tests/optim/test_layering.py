"""gradcv.optim sits between core_ops and the solvers: it imports only torch, the standard
library, torch_optimizer and gradcv.core_ops (DESIGN.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "optim"
ALLOWED = {"torch", "torch_optimizer", "__future__"}


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_imports_only_lower_layers(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top == "gradcv":
                assert name.split(".")[1] in ("optim", "core_ops"), f"{path.name}: {name}"
            else:
                assert top in ALLOWED or top in sys.stdlib_module_names, f"{path.name}: {name}"
