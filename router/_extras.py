"""Optional dependencies: the one place a missing extra becomes a one-line error that names it.

`pip install hybrid-router` is the light core (a cloud-only router with the heuristic estimator);
the rest comes with extras (`server`, `edge`, `onnx`, `eval`, ...). Code that needs one imports it
through `import_extra`, or checks it with `require_extra` where importing it is itself the risk (a
native library that only a child process may load), so that a missing install names the extra to
add instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from hyrouter.router._errors import MissingExtra


def import_extra(module: str, *, feature: str, extra: str) -> ModuleType:
    """Import `module`, which `feature` needs and the `extra` extra installs.

    Raises:
        MissingExtra: `module`, or a module it imports, is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:  # an incomplete extra reads the same as a missing one
        raise MissingExtra(feature, extra, exc.name) from exc


def require_extra(module: str, *, feature: str, extra: str) -> None:
    """Check that the top-level `module` is installed without importing it (nothing of it runs).

    Raises:
        MissingExtra: `module` is not installed.
    """
    if sys.modules.get(module) is not None:
        return  # imported already (or put there by a test)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise MissingExtra(feature, extra, module)
