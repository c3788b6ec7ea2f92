"""The settings objects: every environment variable is a field of one class, read once, overridable."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from hyrouter.cloud.aws.config import ConfigSource
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.aws.telemetry import EmfRouterMetrics
from hyrouter.edge._sdk_config import load_edge_router_config
from hyrouter.edge._settings import EdgeSettings
from hyrouter.models.settings import DataSettings
from hyrouter.router import CloudConfig, ConfigError, HybridRouterSettings, RouterSettings, load_config

ROOT = Path(__file__).parents[2]
PACKAGES = ("router", "edge", "cloud", "models")
SETTINGS_CLASSES: tuple[type[HybridRouterSettings], ...] = (
    RouterSettings,
    EdgeSettings,
    LambdaSettings,
    DataSettings,
)
OURS = re.compile(r"\b(?:HYBRID_ROUTER|POWERTOOLS|AWS_LAMBDA)_[A-Z0-9_]+")


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def is_settings_module(path: Path) -> bool:
    return path.name in {"_settings.py", "settings.py"}


def defined_names() -> list[str]:
    """Every variable a settings class defines: its fields' aliases and the secrets it names."""
    names: list[str] = []
    for cls in SETTINGS_CLASSES:
        names += cls.env_names().values()
        names += cls.__dict__.get("SECRET_ENV", {}).values()
    names.append(EdgeSettings.LLAMA_CMAKE_ARGS_ENV)
    return names


def test_the_environment_is_read_once_when_the_object_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_URL", "http://first/v1")
    settings = RouterSettings()
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_URL", "http://second/v1")
    assert settings.cloud_url == "http://first/v1"
    # A config loaded with those settings does not read the environment again.
    assert load_config(settings=settings).cloud.url == "http://first/v1"
    assert load_config().cloud.url == "http://second/v1"


def test_constructor_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_MODEL", "from-env")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FromEnv")
    assert RouterSettings(cloud_model="from-arg").cloud_model == "from-arg"
    assert RouterSettings.from_env(cloud_model="from-arg").cloud_model == "from-arg"
    assert RouterSettings().cloud_model == "from-env"
    assert EmfRouterMetrics(namespace="FromArg").namespace == "FromArg"
    assert EmfRouterMetrics().namespace == "FromEnv"
    assert LambdaSettings(service_name="svc").service_name == "svc"


def test_an_explicit_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER_CONFIG_FILE", "/from/env.yaml")
    assert LambdaSettings.from_env({}).config_file is None
    assert LambdaSettings.from_env({"HYBRID_ROUTER_CONFIG_FILE": "/x.yaml"}).config_file == "/x.yaml"
    assert ConfigSource.from_settings(LambdaSettings(config_parameter="/p")) == ConfigSource("ssm", "/p", 60)


def test_empty_is_unset_and_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER_EDGE_CLOUD_URL", "")
    assert EdgeSettings().edge_cloud_url is None
    assert load_edge_router_config().cloud.url is None
    with pytest.raises(ConfigError, match="HYBRID_ROUTER_IDEMPOTENCY_TTL_S"):
        LambdaSettings.from_env({"HYBRID_ROUTER_IDEMPOTENCY_TTL_S": "an hour"})


def test_secrets_are_read_at_call_time_and_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = CloudConfig()
    assert cloud.api_key_env == RouterSettings.SECRET_ENV["cloud_api_key"]
    monkeypatch.setenv(cloud.api_key_env, "sk-late")
    assert cloud.api_key == "sk-late"
    for cls in SETTINGS_CLASSES:
        assert "sk-late" not in repr(cls())


def test_every_variable_is_defined_once_and_has_a_description() -> None:
    names = defined_names()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for cls in SETTINGS_CLASSES:
        for field_name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{field_name} has no description"


def test_every_variable_the_code_names_is_defined_in_a_settings_class() -> None:
    found = {name for path in sources() for name in OURS.findall(path.read_text(encoding="utf-8"))}
    assert found - set(defined_names()) == set()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert {n for n in defined_names() if n not in readme} == set(), "README's variable table"


def _environ_key(node: ast.AST) -> ast.AST | None:
    """The key of `os.environ.get(k)`, `os.getenv(k)`, `os.environ[k]`, `k in os.environ`; else None."""
    if isinstance(node, ast.Call) and node.args:
        func = ast.unparse(node.func)
        if func in {"os.environ.get", "os.getenv", "environ.get", "getenv", "os.environ.pop"}:
            return node.args[0]
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in {"os.environ", "environ"}:
        return node.slice
    if isinstance(node, ast.Compare) and any(
        ast.unparse(c) in {"os.environ", "environ"} for c in node.comparators
    ):
        return node.left
    return None


def test_no_module_reads_our_variables_outside_the_settings_modules() -> None:
    offenders: list[str] = []
    for path in sources():
        if is_settings_module(path):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        module = None
        for node in ast.walk(tree):
            key = _environ_key(node)
            if key is None:
                continue
            value: object = None
            if isinstance(key, ast.Constant):
                value = key.value
            elif isinstance(key, ast.Name):  # a module constant such as ENV_X: its value
                module = module or importlib.import_module(module_name)
                value = getattr(module, key.id, None)
            if isinstance(value, str) and OURS.fullmatch(value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {value}")
    assert offenders == []


def test_a_command_line_flag_overrides_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyrouter.cloud.cli import _load, build_parser

    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_URL", "http://env/v1")
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_MODEL", "env-model")
    args = build_parser().parse_args(["serve", "--cloud-url", "http://flag/v1"])
    config = _load(args)
    assert (config.cloud.url, config.cloud.model) == ("http://flag/v1", "env-model")
    assert (
        "HYBRID_ROUTER_CLOUD_URL"
        in build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    )  # type: ignore[union-attr]
