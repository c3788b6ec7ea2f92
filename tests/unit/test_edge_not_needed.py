"""An edge model that no tier can use is never loaded; health and readiness say it is not needed."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud.app import create_app
from hyrouter.cloud.engines import build_engine
from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.router import RouterConfig, RoutingEngine, engine_sections_changed, hash_api_key, parse_config

FORCED = {"cloud": "forced", "fallback_to_edge": False}
ADMIN_KEY = "k-admin"


def config(**tiers: Any) -> RouterConfig:
    return parse_config(
        {
            "tiers": tiers,
            "cloud": {"url": "http://gpu.invalid/v1", "probe_interval_s": 0},
            "admin_keys": [{"sha256": hash_api_key(ADMIN_KEY), "note": "ops"}],
        }
    )


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The edge models loaded (none is: a load is recorded, not done)."""
    loaded: list[str] = []
    monkeypatch.setattr(LlamaCppBackend, "load", lambda self: loaded.append(self.config.model_id))
    return loaded


def test_tiers_that_all_force_the_cloud_load_no_edge_model(loads: list[str]) -> None:
    cfg = config(premium=FORCED, enterprise=FORCED)
    assert not cfg.edge_needed
    engine = build_engine(cfg)
    assert loads == [] and engine.edge is None
    health = engine.health("edge")
    assert not health.configured and health.detail.startswith("not needed")


@pytest.mark.parametrize(
    "tier",
    [
        {"cloud": "allowed"},
        {"cloud": "never"},
        {"cloud": "forced"},  # falls back to the edge when the cloud is down
        {**FORCED, "budget_usd": 1.0},  # a spent budget is answered on the edge
    ],
)
def test_a_tier_that_may_use_the_edge_loads_it(loads: list[str], tier: dict[str, Any]) -> None:
    engine = build_engine(config(premium=FORCED, other=tier))
    assert loads == ["smollm2-135m-instruct"] and engine.edge is not None


def test_readyz_and_healthz_say_the_edge_is_not_needed(loads: list[str]) -> None:
    cfg = config(premium=FORCED)

    async def factory(config: RouterConfig) -> RoutingEngine:
        return build_engine(config)

    with TestClient(create_app(cfg, engine_factory=factory, cloud_probe=False)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        detail = client.get("/healthz", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert detail["edge"]["configured"] is False
    assert detail["edge"]["detail"] == "not needed: no tier can use the edge"
    assert loads == []


def test_a_reload_whose_tiers_need_the_edge_needs_a_rebuild() -> None:
    old, new = config(premium=FORCED), config(premium=FORCED, free={"cloud": "never"})
    assert engine_sections_changed(old, new) == ["tiers"]
    assert engine_sections_changed(new, old) == []
    assert engine_sections_changed(old, config(premium=FORCED, strict=FORCED)) == []
