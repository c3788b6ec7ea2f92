"""The demo config's public keys belong to `hybrid-router demo` alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from hyrouter.cloud import cli
from hyrouter.router import DEMO_KEYS, demo_keys_in, hash_api_key, load_config, warn_about_demo_keys


def test_serve_without_a_config_refuses_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[object] = []
    monkeypatch.setattr(cli, "_serve", lambda config, args, **_: served.append(config) or 0)
    assert cli.main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybrid-router: serve needs --config FILE") and err.count("\n") == 1
    assert "public" in err and "hybrid-router demo" in err and served == []


def test_the_demo_config_holds_every_demo_key_and_nothing_else() -> None:
    assert demo_keys_in(load_config(apply_env=False)) == list(DEMO_KEYS.values())
    assert cli.DEMO_KEYS is DEMO_KEYS  # the banner prints the very keys the check looks for


def _config_file(tmp_path: Path, *keys: str) -> Path:
    data = load_config(apply_env=False).model_dump(mode="json")
    data["api_keys"] = [{"sha256": hash_api_key(k), "tenant": k, "tier": "free"} for k in keys]
    data["admin_keys"] = [{"sha256": hash_api_key("an-operators-own-key")}]
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_serve_on_a_config_with_a_demo_key_logs_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    served: list[object] = []
    monkeypatch.setattr(cli, "_serve", lambda config, args, **_: served.append(config) or 0)
    own = _config_file(tmp_path, "a-key-of-our-own")
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        assert cli.main(["serve", "--config", str(own)]) == 0
    assert not caplog.records and len(served) == 1

    leaky = _config_file(tmp_path, "a-key-of-our-own", "demo-standard-key")
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        assert cli.main(["serve", "--config", str(leaky)]) == 0
    [record] = caplog.records
    assert record.levelno == logging.WARNING and len(served) == 2
    assert f"config {leaky} accepts the PUBLIC demo key(s) demo-standard-key" in record.getMessage()


def test_warn_about_demo_keys_names_operator_keys_too(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(apply_env=False)
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        assert warn_about_demo_keys(config, source="x.yaml")
    assert "demo-admin-key" in caplog.text
