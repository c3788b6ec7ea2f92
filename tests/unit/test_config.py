"""The tier config: loading, validation errors, env overrides, the exported JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyrouter.router import (
    ApiKeyIdEntry,
    ConfigError,
    config_json_schema,
    hash_api_key,
    load_config,
    parse_config,
)

SCHEMA_FILE = Path(__file__).parents[2] / "router" / "config.schema.json"


def test_demo_config_loads_with_three_tiers() -> None:
    config = load_config(apply_env=False)
    assert set(config.tiers) == {"free", "standard", "premium"}
    assert config.tiers["premium"].cloud == "forced"
    tiers = {entry.tier for entry in config.api_keys}
    assert tiers == {"free", "standard", "premium"}
    assert any(entry.sha256 == hash_api_key("demo-free-key") for entry in config.api_keys)


def test_env_overrides_the_cloud_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_URL", "https://gpu.example/v1")
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_MODEL", "meta-llama/Llama-3.1-70B-Instruct")
    config = load_config()
    assert config.cloud.url == "https://gpu.example/v1"
    assert config.cloud.model == "meta-llama/Llama-3.1-70B-Instruct"
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_API_KEY", "sekrit")
    assert config.cloud.api_key == "sekrit"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tiers": {"free": {"threshold": 1.5}}}, "tiers.free.threshold"),
        ({"tiers": {"free": {"cloud": "sometimes"}}}, "tiers.free.cloud"),
        ({"tiers": {}, "api_keys": [{"sha256": "0" * 64, "tenant": "a", "tier": "gold"}]}, "unknown tier"),
        ({"api_keys": [{"sha256": "not-a-digest", "tenant": "a", "tier": "x"}]}, "api_keys.0.sha256"),
        ({"tiers": {}, "api_key_ids": {"id-x": {"tenant": "a", "tier": "gold"}}}, "unknown tier 'gold'"),
        ({"tiers": {"free": {}}, "api_key_ids": {"id-x": {"tier": "free"}}}, "api_key_ids.id-x.tenant"),
        ({"api_key_ids": ["id-x"]}, "api_key_ids: Input should be a valid dictionary"),
        ({"edge": {"n_ctx": 16}}, "edge.n_ctx"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_config_is_a_clear_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


def test_api_key_ids_map_gateway_key_ids_to_tenants() -> None:
    config = parse_config(
        {"tiers": {"premium": {}}, "api_key_ids": {"a1b2c3d4e5": {"tenant": "acme", "tier": "premium"}}}
    )
    assert config.api_key_ids == {"a1b2c3d4e5": ApiKeyIdEntry(tenant="acme", tier="premium")}
    assert load_config(apply_env=False).api_key_ids == {}  # optional: the demo config has none


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"tiers": {"free": {"threshold": 0.3}}}))
    assert load_config(as_json).tiers["free"].threshold == 0.3


def test_committed_json_schema_is_current() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == config_json_schema(), "run `make schema`"


def test_admin_keys_are_hashed_and_are_not_tenant_keys() -> None:
    from hyrouter.router import hash_api_key, parse_config

    admin = {"sha256": hash_api_key("ops-key"), "note": "operators"}
    config = parse_config({"admin_keys": [admin]})
    assert config.admin_keys[0].sha256 == hash_api_key("ops-key")
    with pytest.raises(ConfigError, match="admin_keys"):
        parse_config({"admin_keys": [{"sha256": "ops-key"}]})  # the key itself, not its digest
    tenant = {"sha256": admin["sha256"], "tenant": "t", "tier": "free"}
    with pytest.raises(ConfigError, match="also listed in api_keys"):
        parse_config({"tiers": {"free": {}}, "api_keys": [tenant], "admin_keys": [admin]})
