"""The engine with fake backends: decisions, fallback both ways, streaming, accounting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from hyrouter.router import (
    AuthenticationError,
    BackendHealth,
    ChatCompletionRequest,
    ChatMessage,
    CloudTimeout,
    CloudUnavailable,
    EdgeBusy,
    HeuristicEstimator,
    InMemoryMetrics,
    ModelNotFound,
    RoutingEngine,
    Tenant,
    hash_api_key,
    parse_config,
)
from tests.fakes import FakeBackend

CONFIG = parse_config(
    {
        "tiers": {
            "free": {"threshold": 0.7, "budget_usd": 0.001},
            "standard": {"threshold": 0.4},
            "premium": {"cloud": "forced"},
            "strict": {"cloud": "forced", "fallback_to_edge": False},
        },
        "api_keys": [{"sha256": hash_api_key("k-free"), "tenant": "acme", "tier": "free"}],
        "api_key_ids": {"id-prem": {"tenant": "globex", "tier": "premium"}},
    }
)
EASY = "What is the capital of France?"
HARD = "Prove step by step that sqrt 2 is irrational and explain why."


def request(text: str, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], **kw}
    )


def engine(edge: FakeBackend | None = None, cloud: FakeBackend | None = None, **kw: Any) -> RoutingEngine:
    return RoutingEngine(
        CONFIG,
        estimator=kw.pop("estimator", HeuristicEstimator()),
        edge=edge if edge is not None else FakeBackend("edge"),
        cloud=cloud if cloud is not None else FakeBackend("cloud"),
        **kw,
    )


def test_authenticate_maps_a_key_to_its_tier_and_rejects_others() -> None:
    e = engine()
    assert e.authenticate("k-free") == Tenant("acme", "free")
    for key in (None, "", "nope"):
        with pytest.raises(AuthenticationError):
            e.authenticate(key)


def test_authenticate_key_id_tries_the_key_id_then_the_keys_sha256() -> None:
    e = engine()
    assert e.authenticate_key_id("id-prem", "k-free") == Tenant("globex", "premium")  # the id wins
    assert e.authenticate_key_id("unmapped-id", "k-free") == Tenant("acme", "free")
    assert e.authenticate_key_id(None, "k-free") == Tenant("acme", "free")
    assert e.authenticate_key_id("id-prem", None) == Tenant("globex", "premium")
    for key_id, key in (("unmapped-id", "nope"), ("unmapped-id", None), (None, "nope")):
        with pytest.raises(AuthenticationError, match="not mapped to a tier"):
            e.authenticate_key_id(key_id, key)
    for key_id, key in ((None, None), ("", "")):
        with pytest.raises(AuthenticationError, match="Missing API key"):
            e.authenticate_key_id(key_id, key)
    with pytest.raises(AuthenticationError):
        e.authenticate("id-prem")  # a key id is no secret: it never works as a bearer key


@pytest.mark.anyio
async def test_easy_prompt_edge_and_premium_cloud() -> None:
    e = engine()
    easy = await e.complete(request(EASY), Tenant("a", "free"))
    assert easy.route is not None and (easy.route.target, easy.route.model) == ("edge", "edge-model")
    assert easy.route.cost_saved_usd > 0
    premium = await e.complete(request(EASY), Tenant("b", "premium"))
    assert premium.route is not None and premium.route.reason == "tier_forces_cloud"
    assert premium.route.cost_usd > 0 and premium.model == "cloud-model"


@pytest.mark.anyio
async def test_failing_cloud_falls_back_to_edge_unless_the_tier_forbids_it() -> None:
    metrics = InMemoryMetrics()
    e = engine(cloud=FakeBackend("cloud", fail=CloudTimeout("slow")), metrics=metrics)
    answer = await e.complete(request(HARD), Tenant("a", "standard"))
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.fallback) == (
        "edge",
        "cloud_unavailable",
        True,
    )
    with pytest.raises(CloudTimeout):
        await e.complete(request(HARD), Tenant("a", "strict"))
    assert metrics.fallbacks == 1 and metrics.errors["cloud_timeout"] == 1


@pytest.mark.anyio
async def test_busy_edge_falls_back_to_cloud() -> None:
    e = engine(edge=FakeBackend("edge", fail=EdgeBusy("queue full")))
    answer = await e.complete(request(EASY, max_tokens=100), Tenant("a", "free"))  # within its budget
    assert answer.route is not None and (answer.route.target, answer.route.reason) == ("cloud", "edge_busy")


@pytest.mark.anyio
async def test_stream_falls_back_before_the_first_chunk_and_adds_usage() -> None:
    e = engine(
        cloud=FakeBackend("cloud", fail=CloudUnavailable("down")), edge=FakeBackend("edge", reply="a b c")
    )
    routed = await e.stream(
        request(HARD, stream=True, stream_options={"include_usage": True}), Tenant("a", "standard")
    )
    assert (routed.route.target, routed.route.reason) == ("edge", "cloud_unavailable")
    chunks = [c async for c in routed.chunks]
    assert chunks[0].route is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abc"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    )


@pytest.mark.anyio
async def test_budget_spent_keeps_a_tenant_on_the_edge() -> None:
    e = engine()
    first = await e.complete(request(HARD, max_tokens=100), Tenant("acme", "free"))
    assert first.route is not None and first.route.target == "cloud"
    e.ledger.charge("acme", 1.0)
    after = await e.complete(request(HARD, max_tokens=100), Tenant("acme", "free"))
    assert after.route is not None and after.route.reason == "budget_exhausted"


@pytest.mark.anyio
async def test_max_tokens_defaults_and_fits_the_context() -> None:
    edge = FakeBackend("edge", context_window=300)
    e = engine(edge=edge)
    await e.complete(request(EASY), Tenant("a", "free"))
    await e.complete(request(EASY, max_tokens=7), Tenant("a", "free"))
    assert edge.calls[0] <= 300 and edge.calls[1] == 7


def test_unknown_model_is_a_404() -> None:
    with pytest.raises(ModelNotFound) as info:
        engine().plan(request(EASY).model_copy(update={"model": "gpt-4o"}), Tenant("a", "free"))
    assert info.value.status_code == 404


def test_a_broken_estimator_scores_one_half() -> None:
    class Broken:
        name, version = "broken", "0"

        def score(self, messages: Sequence[ChatMessage]) -> float:
            raise RuntimeError("bug")

    plan = engine(estimator=Broken()).plan(request(EASY), Tenant("a", "standard"))
    assert plan.decision.score == 0.5 and plan.decision.estimator == "broken@0"


def test_unavailable_cloud_is_decided_before_calling_it() -> None:
    cloud = FakeBackend("cloud", health=BackendHealth(available=False, detail="circuit open"))
    plan = engine(cloud=cloud).plan(request(EASY), Tenant("a", "premium"))
    assert (plan.decision.target, plan.decision.reason) == ("edge", "cloud_unavailable")
    assert cloud.calls == []


@pytest.mark.anyio
async def test_a_request_the_edge_cannot_honour_is_answered_by_the_cloud_and_never_falls_back() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    e = engine(edge=FakeBackend("edge", lacks="tools"))
    answer = await e.complete(request(EASY, tools=tools), Tenant("a", "standard"))
    assert answer.route is not None and (answer.route.target, answer.route.reason) == ("cloud", "needs_tools")
    failing = engine(
        edge=FakeBackend("edge", lacks="tools"), cloud=FakeBackend("cloud", fail=CloudTimeout("x"))
    )
    with pytest.raises(CloudTimeout):  # a degraded edge answer would drop the tools
        await failing.complete(request(EASY, tools=tools), Tenant("a", "standard"))
    assert failing.edge is not None and failing.edge.calls == []  # type: ignore[attr-defined]
