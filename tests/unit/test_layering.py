"""The layers of the house: what each package may import, and that `__all__` is each public surface."""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"router", "edge", "cloud", "models", "bench", "tests"}
# What each package may import of ours (ARCHITECTURE.md: router/ imports nothing of ours).
ALLOWED = {
    "router": {"router"},
    "edge": {"router", "edge"},
    "cloud": {"router", "edge", "cloud"},
    "models": {"router", "edge", "models"},
    "infra": set(),  # infra/llama_cpp_build.py runs before the project is installed
}


def imported_packages(path: Path) -> set[str]:
    """The top-level names a module imports, absolute imports only (we use no relative ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imported_packages(path) & OURS
        if name not in ALLOWED[package]
    }
    assert not wrong


@pytest.mark.parametrize("package", ["router", "edge"])
def test_all_is_exactly_the_public_surface(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)  # its order is ruff's (RUF022)
    assert len(exported) == len(set(exported))
    for name in exported:
        assert getattr(module, name) is not None
    if package == "edge":  # names load lazily: the lazy table is the surface
        public = set(module._EXPORTS)
    else:
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
    assert public == set(exported)
