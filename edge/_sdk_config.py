"""The on-device SDK's config: one document for the model, the cloud link, signals, privacy and sync.

Like the router's config it is a pydantic model validated on load (YAML or JSON); the device's API
key is never in it, only the name of the env var that holds it (`EdgeSettings.SECRET_ENV`), which
a constructor argument overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hyrouter.edge._privacy import DEFAULT_KINDS, DEFAULT_PHONE_REGIONS, PersonalDataKind
from hyrouter.edge._settings import EdgeSettings
from hyrouter.router._config import (
    CloudPrice,
    CloudRetries,
    EdgeConfig,
    EstimatorConfig,
    TierConfig,
    read_config_document,
    validation_problems,
)
from hyrouter.router._errors import ConfigError
from hyrouter.router._extras import import_extra
from hyrouter.router._settings import secret_from_env

ENV_DEVICE_KEY = EdgeSettings.SECRET_ENV["device_key"]
#: A commented example of the SDK config (every section), which the JSON Schema below validates.
EXAMPLE_CONFIG_PATH = Path(__file__).with_name("device.example.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalPolicy(_Strict):
    """How device signals move a decision, per tier. `None` turns a signal off.

    Prefer-cloud signals (battery, memory, heat) send a request the score would answer locally to the
    cloud router, when the tier allows the cloud and the device is online. Prefer-local signals (a slow
    or metered link) keep a request the score would escalate on the device, unless the tier forces the
    cloud. When both kinds apply, the link wins: a slow radio costs battery and time too.
    """

    low_battery_pct: Annotated[float | None, Field(ge=0, le=100)] = Field(
        20.0, description="Battery at or below this percent and not charging: prefer cloud (low_battery)."
    )
    min_free_memory_mb: Annotated[float | None, Field(ge=0)] = Field(
        150.0, description="MemAvailable below this: prefer cloud (low_memory)."
    )
    hot_celsius: Annotated[float | None, Field(ge=0)] = Field(
        75.0, description="Hottest thermal zone at or above this: prefer cloud (thermal)."
    )
    slow_link_rtt_ms: Annotated[float | None, Field(gt=0)] = Field(
        400.0,
        description="Measured round trip to the cloud router at or above this: prefer local (slow_link).",
    )
    local_on_metered: bool = Field(True, description="On a metered link: prefer local (metered_link).")


class DeviceTierPolicy(_Strict):
    """One tier's policy on the device: the router's tier routing plus the device-signal effects."""

    routing: TierConfig = TierConfig()
    signals: SignalPolicy = SignalPolicy()


def _default_tiers() -> dict[str, DeviceTierPolicy]:
    # The demo config's tiers, so that a device decides locally as the cloud router would.
    return {
        "free": DeviceTierPolicy(routing=TierConfig(threshold=0.7)),
        "standard": DeviceTierPolicy(routing=TierConfig(threshold=0.4)),
        "premium": DeviceTierPolicy(
            routing=TierConfig(cloud="forced"), signals=SignalPolicy(slow_link_rtt_ms=None)
        ),
    }


class CloudLink(_Strict):
    """The cloud router the device escalates to (the Lambda API or `hybrid-router serve`)."""

    url: str | None = Field(
        None, description="The cloud router's base URL ending in /v1; None: always answer on the device."
    )
    model: str = Field("hybrid-router", description="The model id the cloud router serves.")
    api_key_env: str = Field(ENV_DEVICE_KEY, description="Env var that holds this device's API key.")
    context_window: Annotated[int, Field(ge=64)] = Field(
        8192, description="Largest prompt plus completion the cloud router accepts."
    )
    connect_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    read_timeout_s: Annotated[float, Field(gt=0)] = Field(
        20.0, description="Longest wait for the next bytes."
    )
    deadline_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Escalation deadline, retries included: a whole answer, or a stream's first token."
    )
    retries: CloudRetries = CloudRetries(max_attempts=2, backoff_base_s=0.1, backoff_max_s=1.0)
    offline_retry_s: Annotated[float, Field(ge=0)] = Field(
        10.0, description="After a network failure, answer locally without trying the network for this long."
    )
    probe_timeout_s: Annotated[float, Field(gt=0)] = Field(
        1.5, description="Timeout of the link probe that measures the round trip and detects recovery."
    )
    rtt_max_age_s: Annotated[float, Field(gt=0)] = Field(
        120.0, description="A round-trip measurement older than this is not used."
    )

    @property
    def api_key(self) -> str | None:
        """The device's API key, read from the environment at call time (never stored)."""
        return secret_from_env(self.api_key_env)


class PrivacyConfig(_Strict):
    """What never leaves the device."""

    keep_personal_data_local: bool = Field(
        False, description="Answer requests that contain personal data on the device, whatever the score."
    )
    kinds: tuple[PersonalDataKind, ...] = Field(DEFAULT_KINDS, description="What counts as personal data.")
    phone_regions: tuple[str, ...] = Field(
        DEFAULT_PHONE_REGIONS,
        description="ISO 3166 regions whose national phone formats count; +country code numbers always do.",
    )

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        # lazy: only a config that names regions pays for it
        phonenumbers = import_extra("phonenumbers", feature="privacy.phone_regions", extra="edge")
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"not a region libphonenumber knows (ISO 3166, e.g. GB not UK): {unknown}")
        return regions


class ConfigSyncSettings(_Strict):
    """Fetching the tier policy from the cloud, with ETag / If-None-Match."""

    url: str | None = Field(None, description="Where the policy document is served; None: no sync.")
    state_file: str | None = Field(
        None, description="The last good policy and its ETag, kept across restarts; None: memory only."
    )
    timeout_s: Annotated[float, Field(gt=0)] = 5.0


class DeviceOutcomes(_Strict):
    """Outcome records of this device's answers, and where `EdgeRouter.feedback` keeps local ratings."""

    path: str | None = Field(
        None, description="The device's SQLite file of outcome records; None: no local records."
    )
    salt: str | None = Field(None, description="Salt of the prompt hashes; None: a random one per run.")


class EdgeRouterConfig(_Strict):
    """Everything the on-device SDK needs."""

    tenant: str = Field("device", description="Reported in route facts; the cloud knows the real tenant.")
    tier: str = Field("free", description="This device's tier; config sync replaces it with the key's tier.")
    tiers: dict[str, DeviceTierPolicy] = Field(default_factory=_default_tiers)
    estimator: EstimatorConfig = EstimatorConfig()
    # One user per device: one request at a time, so no batch context (and its KV cache) in memory.
    model: EdgeConfig = EdgeConfig(n_ctx=2048, max_tokens=256, max_queue=2, parallel=1)
    max_model_memory_mb: Annotated[float | None, Field(gt=0)] = Field(
        None, description="Refuse to load a model file larger than this; None: only free memory limits."
    )
    cloud: CloudLink = CloudLink()
    price: CloudPrice = Field(CloudPrice(), description="Cloud price, for the cost a local answer saves.")
    privacy: PrivacyConfig = PrivacyConfig()
    sync: ConfigSyncSettings = ConfigSyncSettings()
    outcomes: DeviceOutcomes = Field(
        DeviceOutcomes(), description="Outcome records on the device (off by default) and local feedback."
    )
    signals_root: str = Field(
        "/", description="Where /sys and /proc are read from (a fixture tree in tests)."
    )
    signals_refresh_s: Annotated[float, Field(ge=0)] = Field(
        2.0, description="Device signals are re-read this often."
    )

    @model_validator(mode="after")
    def _tier_is_known(self) -> EdgeRouterConfig:
        if self.tier not in self.tiers:
            raise ValueError(f"tier {self.tier!r} is not one of the configured tiers {sorted(self.tiers)}")
        return self

    @property
    def policy(self) -> DeviceTierPolicy:
        """The policy of this device's tier."""
        return self.tiers[self.tier]


def parse_edge_router_config(data: Any, *, source: str = "<edge config>") -> EdgeRouterConfig:
    """Validate SDK config data (already parsed from YAML or JSON); raises `ConfigError`."""
    try:
        return EdgeRouterConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"invalid edge config {source}: {validation_problems(exc)}") from None


def load_edge_router_config(
    path: str | Path | None = None, *, apply_env: bool = True, settings: EdgeSettings | None = None
) -> EdgeRouterConfig:
    """Load the SDK config from a YAML or JSON file (None: the defaults).

    With `apply_env`, `settings` (default: read from the environment now) set the cloud router's URL
    (`HYBRID_ROUTER_EDGE_CLOUD_URL`).
    """
    data: Any = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = read_config_document(Path(path), "edge config")
    config = parse_edge_router_config(data, source=source)
    if apply_env and (url := (settings or EdgeSettings.from_env()).edge_cloud_url):
        config = config.model_copy(update={"cloud": config.cloud.model_copy(update={"url": url})})
    return config


def edge_config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the SDK config document, for editors (`hybrid-router edge schema`)."""
    schema = EdgeRouterConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hybrid-router edge SDK config"
    return schema
