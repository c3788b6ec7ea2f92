"""Every environment variable hybrid-router reads is a field of one settings class (pydantic-settings).

One base, `HybridRouterSettings`, and a class per layer, each variable defined once:

    RouterSettings   router/_settings.py     the GPU endpoint's URL and model over the config file's
    EdgeSettings     edge/_settings.py       the on-device SDK's cloud router URL
    LambdaSettings   cloud/aws/settings.py   where the Lambda's tier config lives, auth, idempotency,
                                             and what powertools and the Lambda runtime set
    DataSettings     models/settings.py      where the routing data sets are

A settings object reads the environment once, when it is made; a constructor argument overrides the
variable (powertools' convention: `Metrics(namespace=...)` over `POWERTOOLS_METRICS_NAMESPACE`), and
so does a command-line flag (`add_arguments` / `from_args`, as llama-cpp-python's server makes its
flags from its settings); `from_env(mapping)` reads a mapping instead (tests, a child's environment).
An empty variable counts as unset. Secrets are not settings: a class names the variables that hold
them (`SECRET_ENV`), and `secret_from_env` reads one at call time, so a key is never kept in an
object, a repr or a log.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Self

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hyrouter.router._errors import ConfigError

#: Set while `from_env(mapping)` builds an object: the mapping is then the only source.
_MAPPING_ONLY: ContextVar[bool] = ContextVar("hybrid_router_settings_mapping_only", default=False)


def secret_from_env(name: str) -> str | None:
    """The secret held by the environment variable `name`, read now (never stored); None when unset."""
    return os.environ.get(name) or None


class HybridRouterSettings(BaseSettings):
    """The base of every settings class: environment variables named in full by each field's alias."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        case_sensitive=True,
        env_ignore_empty=True,
        populate_by_name=True,  # constructor arguments by field name: `RouterSettings(cloud_url=...)`
    )

    #: Variables that hold secrets, by what they hold: read at call time by `secret_from_env`.
    SECRET_ENV: ClassVar[dict[str, str]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments, then the environment; no .env file, no secrets folder."""
        return (init_settings,) if _MAPPING_ONLY.get() else (init_settings, env_settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The settings from the process environment (or `env`), read once; raises `ConfigError`.

        `overrides` (by field name) win over the environment, as constructor arguments do.
        """
        token = _MAPPING_ONLY.set(env is not None)
        try:
            values: dict[str, Any] = {k: v for k, v in (env or {}).items() if v}
            values.update((cls.env_name(k), v) for k, v in overrides.items() if v is not None)
            return cls(**values)
        except ValidationError as exc:
            names = cls.env_names()
            problems = "; ".join(
                f"{names.get(str(err['loc'][0]), err['loc'][0]) if err['loc'] else '?'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid environment: {problems}") from None
        finally:
            _MAPPING_ONLY.reset(token)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One command-line flag per field (`--cloud-url` for `cloud_url`), helped by its description."""
        for name, field in cls.model_fields.items():
            parser.add_argument(
                f"--{name.replace('_', '-')}", dest=name, help=f"{field.description} (${cls.env_name(name)})"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> Self:
        """The environment's settings with the flags `add_arguments` made, where given, over them."""
        flags = {name: getattr(args, name, None) for name in cls.model_fields}
        return cls.from_env(**{**flags, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> the environment variable it reads."""
        names: dict[str, str] = {}
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            names[field_name] = alias if isinstance(alias, str) else field_name
        return names

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The environment variable of one field."""
        return cls.env_names()[field_name]


class RouterSettings(HybridRouterSettings):
    """What the environment sets over the router's tier config file (`RouterConfig.with_env_overrides`)."""

    SECRET_ENV: ClassVar[dict[str, str]] = {
        # The default of `cloud.api_key_env`: the GPU endpoint's API key, sent as a bearer token.
        "cloud_api_key": "HYBRID_ROUTER_CLOUD_API_KEY",
        # Salt of the prompt hashes in outcome records, over the config's `outcomes.salt`.
        "outcomes_salt": "HYBRID_ROUTER_OUTCOMES_SALT",
        # The default of a tier's `shadow.judge.api_key_env`: the shadow judge endpoint's API key.
        "judge_api_key": "HYBRID_ROUTER_JUDGE_API_KEY",
    }

    cloud_url: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CLOUD_URL",
        description="The GPU endpoint's base URL ending in /v1; replaces the config file's cloud.url.",
    )
    cloud_model: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CLOUD_MODEL",
        description="The model name sent to the GPU endpoint; replaces the config file's cloud.model.",
    )
