"""The clients shadow judging calls through (`cloud.engines`): its own to the cloud endpoint, so that
shadow failures never open the users' circuit breaker."""

from __future__ import annotations

import httpx
import pytest

from hyrouter.cloud.breaker import BreakerState
from hyrouter.cloud.endpoint import CloudEndpointClient
from hyrouter.cloud.engines import shadow_judge
from hyrouter.router import ChatCompletionRequest, CostLedger, parse_config
from hyrouter.router._shadow import ShadowJob

CONFIG = parse_config(
    {
        "edge": {"enabled": False},
        "cloud": {"url": "http://gpu.test/v1", "retries": {"max_attempts": 1}},
        "tiers": {"free": {"threshold": 0.9, "shadow": {"sample_rate": 1.0, "budget_usd": 1.0}}},
    }
)


def job(i: int) -> ShadowJob:
    request = ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    )
    return ShadowJob(f"chatcmpl-{i}", "acme", "free", request, "4")


@pytest.mark.anyio
async def test_failing_shadow_calls_open_their_own_breaker_never_the_users() -> None:
    down = httpx.MockTransport(lambda request: httpx.Response(503, json={"error": {"message": "busy"}}))
    users = CloudEndpointClient(CONFIG.cloud, transport=down)
    judge = shadow_judge(CONFIG, users, CostLedger(), None, transport=down)
    assert judge is not None and judge.runner is not None
    runner = judge.runner
    assert isinstance(runner.cloud, CloudEndpointClient) and runner.cloud is not users
    for i in range(CONFIG.cloud.breaker.failure_threshold + 2):
        assert await runner.run(job(i)) is None
    assert runner.stats.snapshot()["free"]["failed"] == CONFIG.cloud.breaker.failure_threshold + 2
    assert runner.cloud.breaker.state is BreakerState.OPEN
    assert users.breaker.state is BreakerState.CLOSED  # the users' requests still go to the cloud
    await judge.aclose()  # closes the shadow's own client, not the engine's
    await users.aclose()


def test_one_rule_says_which_tiers_are_judged_for_the_build_a_config_change_and_the_observer() -> None:
    from hyrouter.cloud.engines import shadows
    from hyrouter.router._config import engine_sections_changed

    judge = {"url": "https://judge.test/v1"}
    local = parse_config({"tiers": {"local": {"cloud": "never", "shadow": {"sample_rate": 1.0}}}})
    assert not local.tiers["local"].shadow_judged and not shadows(local)
    other_judge = parse_config(
        {"tiers": {"local": {"cloud": "never", "shadow": {"sample_rate": 1.0, "judge": judge}}}}
    )
    assert "shadow" not in engine_sections_changed(local, other_judge)  # nothing is built for it
    assert CONFIG.tiers["free"].shadow_judged and shadows(CONFIG)
