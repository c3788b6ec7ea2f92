"""Every branch of the routing policy."""

from __future__ import annotations

import pytest

from hyrouter.router import (
    BackendHealth,
    BudgetExhausted,
    CloudTimeout,
    ContextLengthExceeded,
    NoBackendAvailable,
    RequestFacts,
    RouteReason,
    TierConfig,
    TierPolicy,
    UnsupportedFeature,
    decide,
)

UP = BackendHealth(available=True)
DOWN = BackendHealth(available=False, detail="circuit open")
BUSY = BackendHealth(available=True, busy=True)


def facts(**kw: object) -> RequestFacts:
    base: dict[str, object] = dict(
        prompt_tokens=100,
        max_tokens=50,
        edge=UP,
        cloud=UP,
        edge_context_window=512,
        cloud_context_window=4096,
    )
    base.update(kw)
    return RequestFacts(**base)  # type: ignore[arg-type]


def run(score: float, tier: TierConfig, **kw: object):  # type: ignore[no-untyped-def]
    return decide(score=score, tier_name="t", tier=tier, tenant="x", estimator="h@1", facts=facts(**kw))


ALLOWED = TierConfig(threshold=0.5)


@pytest.mark.parametrize(
    ("score", "target", "reason"),
    [
        (0.1, "edge", RouteReason.SCORE_BELOW_THRESHOLD),
        (0.5, "cloud", RouteReason.SCORE_ABOVE_THRESHOLD),
        (0.9, "cloud", RouteReason.SCORE_ABOVE_THRESHOLD),
    ],
)
def test_score_against_threshold(score: float, target: str, reason: RouteReason) -> None:
    d = run(score, ALLOWED)
    assert (d.target, d.reason, d.threshold, d.fallback) == (target, reason, 0.5, False)


def test_forced_tier_goes_to_cloud_even_for_easy_prompts() -> None:
    d = run(0.0, TierConfig(cloud="forced"))
    assert (d.target, d.reason) == ("cloud", RouteReason.TIER_FORCES_CLOUD)


def test_never_tier_stays_on_edge_and_rejects_what_does_not_fit() -> None:
    assert run(0.99, TierConfig(cloud="never")).reason == RouteReason.TIER_FORBIDS_CLOUD
    with pytest.raises(ContextLengthExceeded):
        run(0.1, TierConfig(cloud="never"), prompt_tokens=500)
    with pytest.raises(NoBackendAvailable):
        run(0.1, TierConfig(cloud="never"), edge=DOWN)


def test_too_long_for_edge_goes_to_cloud() -> None:
    d = run(0.0, ALLOWED, prompt_tokens=480)
    assert (d.target, d.reason) == ("cloud", RouteReason.CONTEXT_TOO_LONG)


def test_too_long_for_every_backend_is_an_error() -> None:
    with pytest.raises(ContextLengthExceeded) as info:
        run(0.0, ALLOWED, prompt_tokens=5000)
    assert info.value.status_code == 400 and info.value.param == "messages"


def test_edge_down_or_busy_prefers_cloud() -> None:
    assert run(0.0, ALLOWED, edge=DOWN).reason == RouteReason.EDGE_UNAVAILABLE
    assert run(0.0, ALLOWED, edge=BUSY).reason == RouteReason.EDGE_BUSY
    assert run(0.0, TierConfig(fallback_to_cloud=False), edge=BUSY).target == "edge"


def test_cloud_down_degrades_to_edge_or_fails_clearly() -> None:
    d = run(0.9, ALLOWED, cloud=DOWN)
    assert (d.target, d.reason, d.fallback) == ("edge", RouteReason.CLOUD_UNAVAILABLE, True)
    assert d.original_reason == RouteReason.SCORE_ABOVE_THRESHOLD
    with pytest.raises(NoBackendAvailable) as info:
        run(0.9, TierConfig(cloud="forced", fallback_to_edge=False), cloud=DOWN)
    assert info.value.status_code == 503
    with pytest.raises(NoBackendAvailable):
        run(0.9, ALLOWED, cloud=DOWN, prompt_tokens=480)  # does not fit the edge either


def test_spent_budget_keeps_requests_on_the_edge() -> None:
    d = run(0.9, ALLOWED, budget_left_usd=0.0)
    assert (d.target, d.reason) == ("edge", RouteReason.BUDGET_EXHAUSTED)
    assert run(0.9, ALLOWED, budget_left_usd=0.01).target == "cloud"


@pytest.mark.parametrize("why", [{"edge_lacks": "tools"}, {"prompt_tokens": 480}, {"edge": DOWN}])
def test_spent_budget_refuses_what_the_edge_cannot_answer_instead_of_overspending(
    why: dict[str, object],
) -> None:
    with pytest.raises(BudgetExhausted) as refused:
        run(0.9, ALLOWED, budget_left_usd=0.0, **why)
    assert (refused.value.status_code, refused.value.error_type) == (429, "insufficient_quota")
    decision = refused.value.decision
    assert decision is not None and decision.reason is RouteReason.BUDGET_EXHAUSTED
    assert run(0.9, ALLOWED, budget_left_usd=0.01, **why).target == "cloud"


@pytest.mark.parametrize(
    ("lacks", "reason"),
    [
        ("tools", RouteReason.NEEDS_TOOLS),
        ("logprobs", RouteReason.NEEDS_LOGPROBS),
        ("structured_output", RouteReason.NEEDS_STRUCTURED_OUTPUT),
    ],
)
def test_what_the_edge_cannot_give_goes_to_the_cloud_with_its_own_reason(
    lacks: str, reason: RouteReason
) -> None:
    d = run(0.0, ALLOWED, edge_lacks=lacks)  # an easy prompt: the score alone would keep it on the edge
    assert (d.target, d.reason, d.fallback) == ("cloud", reason, False)
    forced = run(0.0, TierConfig(cloud="forced"), edge_lacks=lacks)
    assert (forced.target, forced.reason) == ("cloud", RouteReason.TIER_FORCES_CLOUD)


def test_what_the_edge_cannot_give_is_never_a_degraded_edge_answer() -> None:
    with pytest.raises(NoBackendAvailable):  # the cloud is down: no silent answer without the tools
        run(0.9, ALLOWED, edge_lacks="tools", cloud=DOWN)
    with pytest.raises(ContextLengthExceeded):
        run(0.9, ALLOWED, edge_lacks="tools", prompt_tokens=5000)


def test_a_tier_without_the_cloud_refuses_what_the_edge_cannot_give_by_name() -> None:
    with pytest.raises(UnsupportedFeature) as refused:
        run(0.0, TierConfig(cloud="never"), edge_lacks="structured_output")
    assert refused.value.param == "response_format" and refused.value.status_code == 400
    assert "structured output" in refused.value.message


def test_a_failed_cloud_call_does_not_fall_back_to_an_edge_that_cannot_give_it() -> None:
    decision = run(0.9, ALLOWED, edge_lacks="tools")
    failure = CloudTimeout("slow")
    with pytest.raises(CloudTimeout):
        TierPolicy({"t": ALLOWED}).fall_back(decision, failure, facts(edge_lacks="tools"))
    assert TierPolicy({"t": ALLOWED}).fall_back(decision, failure, facts()).target == "edge"


# A deployment with one backend: the engine reports the other as not configured, with no context window.
NO_EDGE = {
    "edge": BackendHealth(available=False, detail="not configured", configured=False),
    "edge_context_window": 0,
}
NO_CLOUD = {
    "cloud": BackendHealth(available=False, detail="not configured", configured=False),
    "cloud_context_window": 0,
}


@pytest.mark.parametrize("score", [0.0, 0.9])
def test_edge_disabled_sends_everything_to_the_cloud_for_that_reason(score: float) -> None:
    d = run(score, ALLOWED, **NO_EDGE)
    assert (d.target, d.reason, d.fallback) == ("cloud", RouteReason.EDGE_DISABLED, False)
    assert run(score, TierConfig(cloud="forced"), **NO_EDGE).reason == RouteReason.TIER_FORCES_CLOUD
    with pytest.raises(NoBackendAvailable, match=r"no edge model \(edge disabled\)") as refused:
        run(score, TierConfig(cloud="never"), **NO_EDGE)
    assert refused.value.decision is not None
    with pytest.raises(NoBackendAvailable, match="cloud endpoint is unavailable"):  # no degraded edge answer
        run(score, ALLOWED, **NO_EDGE, cloud=DOWN)


def test_no_cloud_endpoint_answers_on_the_edge_for_that_reason() -> None:
    assert run(0.1, ALLOWED, **NO_CLOUD).reason == RouteReason.SCORE_BELOW_THRESHOLD
    for tier in (ALLOWED, TierConfig(cloud="forced")):
        d = run(0.9, tier, **NO_CLOUD)
        assert (d.target, d.reason, d.fallback) == ("edge", RouteReason.CLOUD_NOT_CONFIGURED, False)
    d = run(0.9, ALLOWED, **NO_CLOUD, budget_left_usd=0.0)
    assert d.reason == RouteReason.CLOUD_NOT_CONFIGURED  # no cloud, so no budget to speak of


def test_no_cloud_endpoint_refuses_clearly_what_the_edge_cannot_take() -> None:
    with pytest.raises(NoBackendAvailable, match="does not take an edge answer") as refused:
        run(0.9, TierConfig(cloud="forced", fallback_to_edge=False), **NO_CLOUD)
    assert refused.value.decision is not None and refused.value.decision.target == "cloud"
    with pytest.raises(
        ContextLengthExceeded, match=r"the edge model \(no cloud endpoint is configured\) allows \(512\)"
    ):
        run(0.1, ALLOWED, **NO_CLOUD, prompt_tokens=1000)
    with pytest.raises(NoBackendAvailable, match=r"edge model is unavailable \(circuit open\) and no cloud"):
        run(0.1, ALLOWED, **NO_CLOUD, edge=DOWN)
    with pytest.raises(NoBackendAvailable, match="neither an edge model nor a cloud endpoint"):
        run(0.1, ALLOWED, **NO_CLOUD, **NO_EDGE)
