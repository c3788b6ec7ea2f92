"""The Lambda config document: api_key_ids, the source named by the environment, refresh rules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from hyrouter.cloud.aws.config import (
    ENV_CONFIG_APPCONFIG,
    ENV_CONFIG_FILE,
    ENV_CONFIG_MAX_AGE,
    ENV_CONFIG_PARAMETER,
    ConfigSource,
    parse_lambda_config,
)
from hyrouter.cloud.aws.runtime import LambdaEnvironment
from hyrouter.router import (
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
    with pytest.raises(ConfigError):
        ConfigSource.from_env({ENV_CONFIG_APPCONFIG: "app-only"})
    with pytest.raises(ConfigError):
        ConfigSource.from_env({ENV_CONFIG_MAX_AGE: "soon"})


def test_no_configured_source_is_an_init_error_never_the_demo_config() -> None:
    message = (
        f"no tier config: set {ENV_CONFIG_PARAMETER}, {ENV_CONFIG_APPCONFIG} or {ENV_CONFIG_FILE} "
        r"\(the Lambda never serves the demo config: its keys are public\)"
    )
    with pytest.raises(ConfigError, match=message):
        ConfigSource.from_env({})
    with pytest.raises(ConfigError, match="no tier config"):
        ConfigSource.from_env({ENV_CONFIG_FILE: "", ENV_CONFIG_MAX_AGE: "5"})  # empty counts as unset


def test_a_lambda_config_with_a_demo_key_logs_a_warning_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    environment = LambdaEnvironment(ConfigSource("file", str(path)), engine_factory=_engine)
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        environment.current()
    assert not caplog.records  # keys of its own: nothing to say
    demo = {
        **DOC,
        "api_keys": [
            *DOC["api_keys"],
            {"sha256": hash_api_key("demo-free-key"), "tenant": "x", "tier": "free"},
        ],
    }
    path.write_text(yaml.safe_dump(demo))
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        environment.current()
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "PUBLIC demo key(s) demo-free-key" in record.getMessage()
    assert f"file:{path}" in record.getMessage()
    environment.close()


def test_demo_config_loads_as_a_lambda_config() -> None:
    config = ConfigSource("file", str(DEMO_CONFIG_PATH)).load()
    assert set(config.router.tiers) == {"free", "standard", "premium"} and not config.router.api_key_ids


async def _engine(config: RouterConfig) -> RoutingEngine:
    return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge"))


def test_tier_change_keeps_backends_and_backend_change_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    built: list[RoutingEngine] = []

    async def factory(config: RouterConfig) -> RoutingEngine:
        built.append(await _engine(config))
        return built[-1]

    router = LambdaEnvironment(ConfigSource("file", str(path)), engine_factory=factory)
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
    router = LambdaEnvironment(ConfigSource("file", "unused"), engine_factory=_engine)
    engine = router._swap(parse_lambda_config(DOC, source="test")).engine
    assert engine.authenticate_key_id("id-prem", "whatever") == Tenant("acme", "premium")
    assert engine.authenticate_key_id("other", "plain-key") == Tenant("by-hash", "free")
    with pytest.raises(AuthenticationError, match="not mapped"):
        engine.authenticate_key_id("other", "other")
    with pytest.raises(AuthenticationError, match="Missing"):
        engine.authenticate_key_id(None, None)


def test_the_lambda_engine_is_built_once_per_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyrouter.cloud.aws.runtime import ENV_CLOUD_AUTH, lambda_engine
    from hyrouter.cloud.aws.sagemaker import SageMakerTransport
    from hyrouter.cloud.endpoint import CloudEndpointClient

    for name, value in {
        ENV_CLOUD_AUTH: "sagemaker",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    counts = {"factory": 0, "engine": 0, "client": 0}

    def counted(cls: type, key: str) -> None:
        init = cls.__init__

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            counts[key] += 1
            init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", wrapper)

    counted(RoutingEngine, "engine")
    counted(CloudEndpointClient, "client")

    async def factory(config: RouterConfig) -> RoutingEngine:
        counts["factory"] += 1
        return await lambda_engine(config)

    url = "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/gpu"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**DOC, "cloud": {"url": url}}))
    router = LambdaEnvironment(ConfigSource("file", str(path)), engine_factory=factory)
    first = router.current()
    assert router.current() is first
    # One factory call, one engine, one cloud client (made with the SigV4 transport it uses).
    assert counts == {"factory": 1, "engine": 1, "client": 1}
    assert isinstance(first.engine.cloud, CloudEndpointClient)
    assert isinstance(first.engine.cloud._http.transport, SageMakerTransport)
    assert router.metrics in first.engine.observers and first.engine.ledger is router.ledger

    path.write_text(yaml.safe_dump({**DOC, "cloud": {"url": url}, "tiers": {"free": {}, "premium": {}}}))
    second = router.current()  # a tier change: a new engine on the same backends, nothing built
    assert counts == {"factory": 1, "engine": 2, "client": 1} and second.engine.cloud is first.engine.cloud
    router.close()


def test_the_engine_builds_from_a_thread_whose_loop_is_running(tmp_path: Path) -> None:
    # uvicorn calls the streaming app's factory (and so the first build) on its running loop.
    import asyncio

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    router = LambdaEnvironment(ConfigSource("file", str(path)), engine_factory=_engine)

    async def on_the_loop() -> RoutingEngine:
        return router.current().engine

    assert isinstance(asyncio.run(on_the_loop()).edge, FakeBackend)
    router.close()
