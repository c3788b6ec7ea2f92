"""The version of hybrid-router that is running, for `--version` and the OpenAPI document."""

from __future__ import annotations

import functools
import importlib.metadata

DISTRIBUTION = "hyrouter"
#: What a source tree that is not installed reports (PEP 440: a local version of 0).
UNKNOWN_VERSION = "0+unknown"


@functools.cache
def installed_version() -> str:
    """The installed distribution's version; `UNKNOWN_VERSION` when it is not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
