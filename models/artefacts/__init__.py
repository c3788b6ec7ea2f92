"""The committed estimator artefacts and their manifest (`registry.json`).

Built by `hybrid-router models build`.

`register()` is the `hybrid_router.estimators` entry point: it registers each artefact by name and
version; each is sha256-checked against the manifest when it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from hyrouter.router._onnx_estimator import register_artefacts

ARTEFACTS_DIR = Path(__file__).resolve().parent


def register() -> None:
    """Register the estimators listed in this folder's manifest (none if it has not been built)."""
    if (ARTEFACTS_DIR / "registry.json").exists():
        register_artefacts(ARTEFACTS_DIR)
