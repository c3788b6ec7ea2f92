"""Optional dependencies: the one place a missing extra becomes a one-line error that names it.

`pip install hybrid-router` is the light core (a cloud-only router with the heuristic estimator);
the rest comes with extras (`server`, `edge`, `onnx`, `eval`, ...). Code that needs one imports it
through `import_extra`, so that a missing install says which extra to add instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from router._errors import MissingExtra


def import_extra(module: str, *, feature: str, extra: str) -> ModuleType:
    """Import `module`, which `feature` needs and the `extra` extra installs.

    Raises:
        MissingExtra: `module`, or a module it imports, is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:  # an incomplete extra reads the same as a missing one
        raise MissingExtra(feature, extra, exc.name) from exc
