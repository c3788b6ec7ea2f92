"""The estimator build's environment variables (see `hyrouter.router._settings` for the conventions)."""

from __future__ import annotations

from pydantic import Field

from hyrouter.router._settings import HybridRouterSettings


class DataSettings(HybridRouterSettings):
    """Where the routing data sets are read from."""

    data_dir: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_DATA_DIR",
        description="The folder of the routing data sets; unset: `shared/data` beside the checkout.",
    )
