"""The scripts outside the package (bench/, tools/, examples/) import only what rlhfx has: a
module moved inside the package otherwise breaks a benchmark nobody runs in the test suite."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p for folder in ("bench", "tools", "examples") for p in (ROOT / folder).rglob("*.py")
)


def rlhfx_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every `from rlhfx... import name` and `import rlhfx...` in `path`,
    at any depth (benchmarks import inside functions)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlhfx"):
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("rlhfx")]
    return found


def test_there_are_scripts_to_check():
    assert any(p.parent.name == "bench" for p in SCRIPTS)
    assert any(rlhfx_imports(p) for p in SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_rlhfx_import_resolves(path):
    where = path.relative_to(ROOT)
    for module_name, name in rlhfx_imports(path):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            pytest.fail(f"{where}: imports {module_name}, which rlhfx does not have")
        if name is None or hasattr(module, name):
            continue
        try:  # a submodule imported by name
            importlib.import_module(f"{module_name}.{name}")
        except ImportError:
            pytest.fail(f"{where}: from {module_name} import {name}: no such name")
