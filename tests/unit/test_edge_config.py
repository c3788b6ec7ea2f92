"""The SDK's config, its resource limits, and its public surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hyrouter import edge
from hyrouter.edge import (
    EdgeRouter,
    EdgeRouterConfig,
    ModelTooLarge,
    StaticSignals,
    check_model_fits,
    load_edge_router_config,
)
from hyrouter.router import ConfigError, EdgeBackendError


def test_defaults_mirror_the_demo_tiers() -> None:
    config = EdgeRouterConfig()
    assert config.tier == "free" and set(config.tiers) == {"free", "standard", "premium"}
    assert config.policy.routing.threshold == 0.7
    assert config.tiers["premium"].routing.cloud == "forced"
    assert config.cloud.url is None and config.cloud.api_key_env == "HYBRID_ROUTER_DEVICE_KEY"
    assert config.privacy.keep_personal_data_local is False


def test_load_from_yaml_with_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "device.yaml"
    file.write_text(
        "tier: standard\nmodel: {n_threads: 2, n_ctx: 1024}\nmax_model_memory_mb: 150\n"
        "privacy: {keep_personal_data_local: true, kinds: [email]}\n"
        "tiers:\n  standard:\n    routing: {threshold: 0.4}\n    signals: {low_battery_pct: 30}\n"
    )
    monkeypatch.setenv("HYBRID_ROUTER_EDGE_CLOUD_URL", "https://api.example.com/v1")
    config = load_edge_router_config(file)
    assert (config.tier, config.model.n_threads, config.model.n_ctx) == ("standard", 2, 1024)
    assert config.policy.signals.low_battery_pct == 30 and config.privacy.kinds == ("email",)
    assert config.cloud.url == "https://api.example.com/v1"
    assert load_edge_router_config(file, apply_env=False).cloud.url is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tier: gold\n", "tier 'gold' is not one of the configured tiers"),
        ("cloud: {deadline_s: 0}\n", "cloud.deadline_s"),
        ("privacy: {kinds: [passport]}\n", "privacy.kinds"),
        ("privacy: {phone_regions: [UK]}\n", "privacy.phone_regions.*e.g. GB not UK"),
        ("surprise: 1\n", "surprise"),
        ("tier: [\n", "not valid YAML"),
    ],
)
def test_invalid_configs_are_refused_clearly(tmp_path: Path, text: str, problem: str) -> None:
    file = tmp_path / "device.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[")):
        load_edge_router_config(file)


def test_a_model_over_the_memory_limit_is_refused_before_loading(tmp_path: Path) -> None:
    model = tmp_path / "big.gguf"
    with model.open("wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: 300 MB on paper, nothing on disk
    with pytest.raises(
        ModelTooLarge, match=r"needs 300 MB, more than max_model_memory_mb \(256 MB\)"
    ) as caught:
        check_model_fits(model, max_model_memory_mb=256, free_memory_mb=None)
    assert isinstance(caught.value, EdgeBackendError) and caught.value.code == "model_too_large"
    with pytest.raises(ModelTooLarge, match="only 200 MB of memory is free"):
        check_model_fits(model, max_model_memory_mb=None, free_memory_mb=200)
    assert round(check_model_fits(model, max_model_memory_mb=512, free_memory_mb=4096)) == 300


def test_the_router_checks_the_limit_before_loading_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    with model.open("wb") as f:
        f.truncate(120 * 1024 * 1024)
    config = EdgeRouterConfig.model_validate({"model": {"model_path": str(model)}, "max_model_memory_mb": 64})
    router = EdgeRouter(config, signals=StaticSignals())
    with pytest.raises(ModelTooLarge, match="max_model_memory_mb"):
        router.load()
    assert not router.local.health().available


def test_public_surface_is_sorted_and_importable() -> None:
    assert edge.__all__ == sorted(edge.__all__)
    for name in edge.__all__:
        assert getattr(edge, name) is not None
    with pytest.raises(AttributeError):
        _ = edge.NoSuchThing  # type: ignore[attr-defined]


def test_the_llama_backend_does_not_import_the_sdk() -> None:
    code = (
        "import sys, hyrouter.edge.llama_cpp_backend; "
        "print(any(m.startswith('hyrouter.edge._router') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_example_config_validates_against_the_schema_and_loads() -> None:
    import json

    import yaml
    from jsonschema import Draft202012Validator

    from hyrouter.edge._sdk_config import EXAMPLE_CONFIG_PATH, edge_config_json_schema

    committed = json.loads(EXAMPLE_CONFIG_PATH.with_name("device-config.schema.json").read_text())
    assert committed == edge_config_json_schema(), "run `make schema`"
    validator = Draft202012Validator(committed)
    example = yaml.safe_load(EXAMPLE_CONFIG_PATH.read_text())
    assert [e.message for e in validator.iter_errors(example)] == []
    assert list(validator.iter_errors({**example, "tier": 3}))  # the schema can refuse
    config = load_edge_router_config(EXAMPLE_CONFIG_PATH, apply_env=False)
    assert config.tier == "standard" and config.cloud.api_key_env == "HYBRID_ROUTER_DEVICE_KEY"


def test_edge_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from hyrouter.cloud.cli import main
    from hyrouter.edge._sdk_config import edge_config_json_schema

    assert main(["edge", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == edge_config_json_schema()
