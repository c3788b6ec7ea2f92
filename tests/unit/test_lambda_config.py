"""The Lambda config document: api_key_ids, the source named by the environment, refresh rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud.aws.config import (
    ENV_CONFIG_APPCONFIG,
    ENV_CONFIG_FILE,
    ENV_CONFIG_MAX_AGE,
    ENV_CONFIG_PARAMETER,
    ConfigSource,
    parse_lambda_config,
)
from cloud.aws.runtime import LambdaRouter
from router import (
    DEMO_CONFIG_PATH,
    ApiKeyIdEntry,
    AuthenticationError,
    ConfigError,
    HeuristicEstimator,
    RouterConfig,
    RoutingEngine,
    Tenant,
    hash_api_key,
)
from tests.fakes import FakeBackend

DOC: dict[str, Any] = {
    "edge": {"enabled": False},
    "tiers": {"free": {}, "premium": {"cloud": "forced"}},
    "api_keys": [{"sha256": hash_api_key("plain-key"), "tenant": "by-hash", "tier": "free"}],
    "api_key_ids": {"id-prem": {"tenant": "acme", "tier": "premium"}},
}


def test_api_key_ids_map_to_tenants() -> None:
    config = parse_lambda_config(DOC, source="test")
    assert config.router.api_key_ids == {"id-prem": ApiKeyIdEntry(tenant="acme", tier="premium")}


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ({"id-x": {"tenant": "a", "tier": "gold"}}, "unknown tier 'gold'"),
        ({"id-x": {"tier": "free"}}, "api_key_ids.id-x"),
        (["id-x"], "api_key_ids: Input should be a valid dictionary"),
    ],
)
def test_bad_api_key_ids_are_config_errors(ids: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lambda_config({**DOC, "api_key_ids": ids}, source="test")


def test_source_from_env() -> None:
    assert ConfigSource.from_env({ENV_CONFIG_PARAMETER: "/p", ENV_CONFIG_MAX_AGE: "5"}) == ConfigSource(
        "ssm", "/p", 5
    )
    assert ConfigSource.from_env({ENV_CONFIG_APPCONFIG: "app/prod/tiers"}).kind == "appconfig"
    assert ConfigSource.from_env({ENV_CONFIG_FILE: "/x.yaml"}).name == "/x.yaml"
    assert ConfigSource.from_env({}).name == str(DEMO_CONFIG_PATH)
    with pytest.raises(ConfigError):
        ConfigSource.from_env({ENV_CONFIG_APPCONFIG: "app-only"})
    with pytest.raises(ConfigError):
        ConfigSource.from_env({ENV_CONFIG_MAX_AGE: "soon"})


def test_demo_config_loads_as_a_lambda_config() -> None:
    config = ConfigSource("file", str(DEMO_CONFIG_PATH)).load()
    assert set(config.router.tiers) == {"free", "standard", "premium"} and not config.router.api_key_ids


def _engine(config: RouterConfig) -> RoutingEngine:
    return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge"))


def test_tier_change_keeps_backends_and_backend_change_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    built: list[RoutingEngine] = []

    def factory(config: RouterConfig) -> RoutingEngine:
        built.append(_engine(config))
        return built[-1]

    router = LambdaRouter(ConfigSource("file", str(path)), engine_factory=factory)
    first = router.current()
    assert router.current() is first  # unchanged text: the same snapshot

    path.write_text(yaml.safe_dump({**DOC, "tiers": {"free": {"threshold": 0.9}, "premium": {}}}))
    second = router.current()
    assert second is not first and len(built) == 1
    assert second.engine.edge is first.engine.edge and second.engine.config.tiers["free"].threshold == 0.9

    path.write_text(yaml.safe_dump({**DOC, "edge": {"enabled": False, "n_ctx": 1024}}))
    third = router.current()
    assert len(built) == 2 and third.engine.edge is not first.engine.edge
    router.close()


def test_tenant_lookup_order() -> None:
    router = LambdaRouter(ConfigSource("file", "unused"), engine_factory=_engine)
    engine = router._swap(parse_lambda_config(DOC, source="test")).engine
    assert engine.authenticate_key_id("id-prem", "whatever") == Tenant("acme", "premium")
    assert engine.authenticate_key_id("other", "plain-key") == Tenant("by-hash", "free")
    with pytest.raises(AuthenticationError, match="not mapped"):
        engine.authenticate_key_id("other", "other")
    with pytest.raises(AuthenticationError, match="Missing"):
        engine.authenticate_key_id(None, None)
