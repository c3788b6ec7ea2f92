"""The layers of the house: what each package may import, and that `__all__` is each public surface."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "hyrouter"  # the one import name the four layers are installed under
LAYERS = {"router", "edge", "cloud", "models"}
OURS = {*LAYERS, "bench", "tests"}
# What each package may import of ours (ARCHITECTURE.md: router/ imports nothing of ours).
ALLOWED = {
    "router": {"router"},
    "edge": {"router", "edge"},
    "cloud": {"router", "edge", "cloud"},
    "models": {"router", "edge", "models"},
    "infra": set(),  # infra/llama_cpp_build.py runs before the project is installed
}


def _layer(dotted: str) -> str:
    """The layer a module path names: `hyrouter.router._engine` is router; `httpx` is httpx."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else parts[0]


def imported_packages(path: Path) -> set[str]:
    """The layers (or third-party top-level names) a module imports, absolute imports only (we use no
    relative ones); `from hyrouter import edge` imports the edge layer."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_layer(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
            else:
                found.add(_layer(node.module))
    return found


def test_nothing_of_ours_is_imported_by_a_top_level_name() -> None:
    """Every import of ours goes through `hyrouter.` (a user's own router.py or models.py never shadows
    one of our modules); the old top-level names are gone."""
    wrong = {
        f"{path.relative_to(ROOT)}: {node.module if isinstance(node, ast.ImportFrom) else alias.name}"
        for folder in ("router", "edge", "cloud", "models", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if "results" not in path.parts
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if (node.module if isinstance(node, ast.ImportFrom) else alias.name) is not None
        and str(node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0] in LAYERS
        and not (isinstance(node, ast.ImportFrom) and node.level)
    }
    assert not wrong


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
    module = importlib.import_module(f"{PACKAGE}.{package}")
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


def test_a_users_own_router_and_models_modules_shadow_nothing(tmp_path: Path) -> None:
    """The repro of the collision: in a folder holding `router.py` and `models.py`, the SDK imports."""
    for name in ("router", "models", "edge", "cloud"):
        (tmp_path / f"{name}.py").write_text("MINE = True\n")
    code = "from hyrouter.edge import EdgeRouter; import router; print(EdgeRouter.__module__, router.MINE)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hyrouter.edge._router", "True"]
