"""The committed estimator artefacts and edge-model calibrations, and their manifest (`registry.json`).

Estimators are built by `hybrid-router models build`; calibrations (`calibrations/*.json`, listed under
the manifest's `calibrations` key with their sha256 and the sha256 of the GGUF they were fitted on)
by the models' calibration fitting.

`register()` is the `hybrid_router.estimators` entry point: it registers each estimator and each
calibration by name and version; each is sha256-checked against the manifest when it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from hyrouter.router._calibrations import register_calibration_artefacts
from hyrouter.router._onnx_estimator import register_artefacts

ARTEFACTS_DIR = Path(__file__).resolve().parent


def register() -> None:
    """Register the estimators and calibrations listed in this folder's manifest (none if it has not
    been built)."""
    if (ARTEFACTS_DIR / "registry.json").exists():
        register_artefacts(ARTEFACTS_DIR)
        register_calibration_artefacts(ARTEFACTS_DIR)
