"""The on-device SDK's environment variables (see `hyrouter.router._settings` for the conventions)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from hyrouter.router._settings import HybridRouterSettings


class EdgeSettings(HybridRouterSettings):
    """What the environment sets over the SDK's config file (`load_edge_router_config`)."""

    SECRET_ENV: ClassVar[dict[str, str]] = {
        # The default of `cloud.api_key_env`: this device's key for the cloud router.
        "device_key": "HYBRID_ROUTER_DEVICE_KEY",
    }
    #: Read by `infra/llama_cpp_build.py`, which runs before this package is installed and so names
    #: it itself; named here for the messages that tell how to rebuild llama.cpp.
    LLAMA_CMAKE_ARGS_ENV: ClassVar[str] = "HYBRID_ROUTER_LLAMA_CMAKE_ARGS"

    edge_cloud_url: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_EDGE_CLOUD_URL",
        description="The cloud router's base URL ending in /v1; replaces the SDK config's cloud.url.",
    )
