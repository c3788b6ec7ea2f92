"""Which calibration turns the edge model's token signals into a confidence: registered, or a file.

A calibration is fitted to one GGUF file (`FittedCalibration`; its document names the file's sha256).
Packages register the ones they ship through the `hybrid_router.estimators` entry points, as they do
estimators (`hyrouter.models.artefacts:register` registers those listed under `calibrations` in its
`registry.json`: name, version, path, the JSON's sha256 and the GGUF's). `resolve_calibration` reads
the `edge.calibration` setting:

- "auto" (the default): the registered calibration fitted on the GGUF being loaded (by its sha256);
  none → `UNCALIBRATED`, with one warning naming the model;
- "none": `UNCALIBRATED`;
- a path: that calibration JSON, which must have been fitted on the GGUF being loaded.

Every failure is a `ConfigError` of one line, raised at start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyrouter.router._confidence import UNCALIBRATED, Calibration, FittedCalibration
from hyrouter.router._errors import ConfigError
from hyrouter.router._estimator import discover_plugins
from hyrouter.router._onnx_estimator import MANIFEST_NAME, file_sha256

logger = logging.getLogger("hybrid_router")

#: `edge.calibration`'s special values (anything else is a path).
AUTO, NONE = "auto", "none"


@dataclass(frozen=True)
class RegisteredCalibration:
    """A calibration a package ships: where its JSON is, its sha256, and the GGUF it was fitted on."""

    name: str
    version: str
    path: Path
    sha256: str
    gguf_sha256: str

    @property
    def ident(self) -> str:
        """name@version."""
        return f"{self.name}@{self.version}"

    def load(self) -> FittedCalibration:
        """The calibration, after checking the file's sha256 and the GGUF it names against the entry."""
        if not self.path.is_file():
            raise ConfigError(f"calibration {self.ident}: file {self.path} is missing")
        actual = file_sha256(self.path)
        if actual != self.sha256:
            raise ConfigError(
                f"calibration {self.ident}: file {self.path} has sha256 {actual}, the registry says "
                f"{self.sha256}; restore the file or register it again"
            )
        calibration = FittedCalibration.load(self.path)
        if calibration.gguf_sha256 != self.gguf_sha256:
            raise ConfigError(
                f"calibration {self.ident}: file {self.path} was fitted for GGUF sha256 "
                f"{calibration.gguf_sha256}, the registry says {self.gguf_sha256}"
            )
        return calibration


_REGISTRY: dict[tuple[str, str], RegisteredCalibration] = {}


def register_calibration(entry: RegisteredCalibration) -> None:
    """Make a shipped calibration available to `edge.calibration: auto`."""
    _REGISTRY[(entry.name, entry.version)] = entry


def registered_calibrations() -> list[RegisteredCalibration]:
    """Every registered calibration (the entry points run first), by name and version."""
    discover_plugins()
    return [_REGISTRY[key] for key in sorted(_REGISTRY)]


def register_calibration_artefacts(root: Path) -> list[str]:
    """Register the calibrations listed under `calibrations` in `root`'s `registry.json` (none when
    the key is absent); returns their name@version. A malformed entry is a `ConfigError`."""
    path = root / MANIFEST_NAME
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"artefact registry {path} is unreadable: {exc}") from None
    registered = []
    for entry in manifest.get("calibrations", []):
        try:
            item = RegisteredCalibration(
                name=str(entry["name"]),
                version=str(entry["version"]),
                path=root / str(entry["path"]),
                sha256=str(entry["sha256"]),
                gguf_sha256=str(entry["gguf_sha256"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"artefact registry {path}: a calibration entry lacks {exc}") from None
        register_calibration(item)
        registered.append(item.ident)
    return registered


def resolve_calibration(setting: str, model: str, gguf_sha256: Callable[[], str]) -> Calibration:
    """The calibration `setting` ("auto", "none" or a path) names for the GGUF `model` whose sha256
    `gguf_sha256` gives (called only when needed: hashing a GGUF reads all of it)."""
    if setting == NONE:
        return UNCALIBRATED
    digest = gguf_sha256()
    if setting == AUTO:
        fitted = [c for c in registered_calibrations() if c.gguf_sha256 == digest]
        if not fitted:
            logger.warning(
                "no calibration is registered for edge model %s (GGUF sha256 %s): its confidence is "
                "uncalibrated (%s)",
                model,
                digest,
                UNCALIBRATED.name,
            )
            return UNCALIBRATED
        return max(fitted, key=lambda c: _version_key(c.version)).load()
    calibration = FittedCalibration.load(Path(setting).expanduser())
    if calibration.gguf_sha256 != digest:
        raise ConfigError(
            f"calibration {setting} was fitted for GGUF sha256 {calibration.gguf_sha256}, "
            f"the edge model {model} has {digest}"
        )
    return calibration


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))
