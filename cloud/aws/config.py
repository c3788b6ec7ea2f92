"""The tier config in Lambda: fetched through powertools parameters, cached for `max_age` seconds.

The document is the router's config (see `router/demo-config.yaml`); its `api_key_ids` section maps
API Gateway key ids to a tenant and tier::

    api_key_ids:
      a1b2c3d4e5: {tenant: acme, tier: premium}

Where it comes from is set by the environment (`LambdaSettings`; the template sets one of them):

    HYBRID_ROUTER_CONFIG_PARAMETER   an SSM parameter name (String or SecureString, YAML or JSON)
    HYBRID_ROUTER_CONFIG_APPCONFIG   "application/environment/profile" in AWS AppConfig
    HYBRID_ROUTER_CONFIG_FILE        a file (local runs, benchmarks)
    HYBRID_ROUTER_CONFIG_MAX_AGE_S   seconds a fetched document is reused (default 60)

None of the first three is an error at init: the Lambda never falls back to the demo config, whose
keys are public.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.router import ConfigError, RouterConfig, parse_config

ENV_CONFIG_PARAMETER = LambdaSettings.env_name("config_parameter")
ENV_CONFIG_APPCONFIG = LambdaSettings.env_name("config_appconfig")
ENV_CONFIG_FILE = LambdaSettings.env_name("config_file")
ENV_CONFIG_MAX_AGE = LambdaSettings.env_name("config_max_age_s")
DEFAULT_MAX_AGE_S: int = LambdaSettings.model_fields["config_max_age_s"].default

SourceKind = Literal["ssm", "appconfig", "file"]


@dataclass(frozen=True)
class LambdaRouterConfig:
    """The router config parsed from one document (`LambdaEnvironment` keeps the document's digest)."""

    router: RouterConfig


def parse_lambda_config(data: Any, *, source: str) -> LambdaRouterConfig:
    """Validate a Lambda config document (the router's config) and apply the env overrides."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the document must be a mapping")
    return LambdaRouterConfig(router=parse_config(data, source=source).with_env_overrides())


@dataclass(frozen=True)
class ConfigSource:
    """Where the tier config document lives, and how long a fetched copy may be reused."""

    kind: SourceKind
    name: str
    max_age_s: int = DEFAULT_MAX_AGE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConfigSource:
        """The source the environment (or `env`) names; a `ConfigError` when it names none."""
        return cls.from_settings(LambdaSettings.from_env(env))

    @classmethod
    def from_settings(cls, settings: LambdaSettings) -> ConfigSource:
        """The source `settings` name; a `ConfigError` when they name none (never the demo config)."""
        max_age = settings.config_max_age_s
        if settings.config_parameter:
            return cls("ssm", settings.config_parameter, max_age)
        if settings.config_appconfig:
            if settings.config_appconfig.count("/") != 2:
                raise ConfigError(f"{ENV_CONFIG_APPCONFIG} must be 'application/environment/profile'")
            return cls("appconfig", settings.config_appconfig, max_age)
        if settings.config_file:
            return cls("file", settings.config_file, max_age)
        raise ConfigError(
            f"no tier config: set {ENV_CONFIG_PARAMETER}, {ENV_CONFIG_APPCONFIG} or {ENV_CONFIG_FILE} "
            "(the Lambda never serves the demo config: its keys are public)"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def fetch_text(self) -> str:
        """The document's text; powertools serves it from its cache until `max_age_s` has passed."""
        if self.kind == "file":
            try:
                return Path(self.name).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read config {self.name}: {exc.strerror}") from None
        from aws_lambda_powertools.utilities import parameters  # lazy: boto3 is not needed for files

        try:
            if self.kind == "ssm":
                value: Any = parameters.get_parameter(self.name, decrypt=True, max_age=self.max_age_s)
            else:
                application, environment, profile = self.name.split("/")
                value = parameters.get_app_config(
                    name=profile, environment=environment, application=application, max_age=self.max_age_s
                )
        except parameters.exceptions.GetParameterError as exc:
            raise ConfigError(f"cannot fetch config {self}: {exc}") from None
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def load(self) -> LambdaRouterConfig:
        """Fetch (or reuse) and validate the document."""
        return parse_text(self.fetch_text(), source=str(self))


def parse_text(text: str, *, source: str) -> LambdaRouterConfig:
    """Parse a YAML or JSON document (JSON is YAML) into a `LambdaRouterConfig`."""
    import yaml  # lazy, as in router's own loader

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {source} is not valid YAML or JSON: {exc}") from None
    return parse_lambda_config(data, source=source)
