"""The engine's cache seam with fake backends: hits, streamed hits, what is never kept, recording."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from hyrouter.router import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CloudStreamCut,
    CloudUnavailable,
    HeuristicEstimator,
    InMemoryMetrics,
    RequestOutcome,
    RoutingEngine,
    Tenant,
    cloud_cost_usd,
    parse_config,
)
from hyrouter.router._wire import ChunkChoice
from tests.fakes import FakeBackend

CONFIG = parse_config(
    {
        "tiers": {
            "free": {"threshold": 0.7, "cache": {"exact": True}},
            "premium": {"cloud": "forced", "cache": {"exact": True}},
            "strict": {"cloud": "forced", "fallback_to_edge": False, "cache": {"exact": True}},
            "nocache": {"threshold": 0.7},
            "similar": {"threshold": 0.7, "cache": {"semantic_threshold": 0.9}},
        }
    }
)
ACME = Tenant("acme", "free")
EASY = "What is the capital of France?"


def request(text: str = EASY, **kw: Any) -> ChatCompletionRequest:
    body = {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], "temperature": 0}
    return ChatCompletionRequest.model_validate({**body, **kw})


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.seen.append(outcome)


def engine(edge: FakeBackend | None = None, cloud: FakeBackend | None = None, **kw: Any) -> RoutingEngine:
    return RoutingEngine(
        CONFIG,
        estimator=kw.pop("estimator", HeuristicEstimator()),
        edge=edge if edge is not None else FakeBackend("edge", reply="Paris is the capital"),
        cloud=cloud if cloud is not None else FakeBackend("cloud"),
        **kw,
    )


async def collect(
    e: RoutingEngine, req: ChatCompletionRequest, tenant: Tenant = ACME
) -> list[ChatCompletionChunk]:
    routed = await e.stream(req, tenant)
    return [chunk async for chunk in routed.chunks]


@pytest.mark.anyio
async def test_a_repeated_deterministic_request_is_answered_from_the_cache_and_recorded() -> None:
    edge, outcomes, metrics = FakeBackend("edge", reply="Paris"), Outcomes(), InMemoryMetrics()
    e = engine(edge, metrics=metrics, observers=[outcomes])
    first = await e.complete(request(), ACME)
    second = await e.complete(request(stream=False, user="someone"), ACME)
    assert len(edge.calls) == 1
    assert first.route is not None and first.route.target == "edge"
    assert second.route is not None
    assert (second.route.target, second.route.reason) == ("cache", "cache_hit")
    assert second.choices[0].message.content == "Paris" and second.choices[0].finish_reason == "stop"
    assert second.model == "edge-model" and second.route.model == "edge-model"
    assert second.usage.completion_tokens == 2
    saved = cloud_cost_usd(second.usage, CONFIG.cloud.price)
    assert second.route.cost_saved_usd == pytest.approx(saved) and second.route.cost_usd == 0
    hit = outcomes.seen[-1]
    assert (hit.decision.target, hit.decision.reason, hit.status) == ("cache", "cache_hit", 200)
    assert hit.cost_saved_usd == pytest.approx(saved)
    assert ("cache", "free", "cache_hit") in metrics.decisions
    assert metrics.cost_saved_usd == pytest.approx(2 * saved)  # the edge answer and the hit
    # The hit's record is the answer the caller got: its id (feedback joins on it) and its request.
    assert hit.completion_id == second.id != first.id and hit.request is not None


@pytest.mark.anyio
async def test_a_streamed_hit_carries_the_id_of_its_outcome_record() -> None:
    outcomes = Outcomes()
    e = engine(FakeBackend("edge", reply="Paris"), observers=[outcomes])
    await e.complete(request(), ACME)
    chunks = await collect(e, request(stream=True))
    assert {c.id for c in chunks} == {outcomes.seen[-1].completion_id}


@pytest.mark.anyio
async def test_a_cloud_answer_is_served_again_from_the_cache_for_nothing() -> None:
    cloud = FakeBackend("cloud", reply="42")
    e = engine(cloud=cloud)
    tenant = Tenant("globex", "premium")
    await e.complete(request("hard"), tenant)
    hit = await e.complete(request("hard"), tenant)
    assert len(cloud.calls) == 1 and hit.route is not None and hit.route.target == "cache"
    assert hit.route.cost_usd == 0 and hit.route.cost_saved_usd > 0


@pytest.mark.anyio
async def test_a_hit_streams_role_content_finish_and_usage_when_asked() -> None:
    edge = FakeBackend("edge", reply="Paris is the capital")
    e = engine(edge)
    await e.complete(request(), ACME)
    routed = await e.stream(request(stream=True, stream_options={"include_usage": True}), ACME)
    assert (routed.route.target, routed.route.reason) == ("cache", "cache_hit")
    chunks = [chunk async for chunk in routed.chunks]
    assert len(edge.calls) == 1
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].route is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris is the capital"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    without_usage = await collect(e, request(stream=True))
    assert without_usage[-1].choices[0].finish_reason == "stop"


@pytest.mark.anyio
async def test_a_whole_streamed_answer_is_kept_and_served_to_a_plain_request() -> None:
    edge = FakeBackend("edge", reply="Paris is the capital")
    e = engine(edge)
    await collect(e, request(stream=True))
    hit = await e.complete(request(), ACME)
    assert len(edge.calls) == 1
    assert hit.route is not None and hit.route.target == "cache"
    assert hit.choices[0].message.content == "Parisisthecapital"  # the fake streams words without spaces


@pytest.mark.anyio
async def test_a_tier_without_the_cache_routes_every_repeat() -> None:
    edge = FakeBackend("edge")
    e = engine(edge)
    for _ in range(2):
        response = await e.complete(request(), Tenant("acme", "nocache"))
        assert response.route is not None and response.route.target == "edge"
    assert len(edge.calls) == 2


@pytest.mark.anyio
async def test_another_tenant_does_not_get_the_answer() -> None:
    edge = FakeBackend("edge")
    e = engine(edge)
    await e.complete(request(), ACME)
    other = await e.complete(request(), Tenant("initech", "free"))
    assert other.route is not None and other.route.target == "edge" and len(edge.calls) == 2


@pytest.mark.anyio
async def test_a_sampled_request_is_not_cached() -> None:
    edge = FakeBackend("edge")
    e = engine(edge)
    for _ in range(2):
        await e.complete(request(temperature=0.7), ACME)
    assert len(edge.calls) == 2


@pytest.mark.anyio
async def test_an_error_is_not_cached() -> None:
    cloud = FakeBackend("cloud", fail=CloudUnavailable("down"))
    e = engine(cloud=cloud)
    tenant = Tenant("globex", "strict")
    for _ in range(2):
        with pytest.raises(CloudUnavailable):
            await e.complete(request(), tenant)
    assert len(cloud.calls) == 2


@pytest.mark.anyio
async def test_a_degraded_fallback_answer_is_not_cached() -> None:
    edge, cloud = FakeBackend("edge"), FakeBackend("cloud", fail=CloudUnavailable("down"))
    e = engine(edge, cloud)
    tenant = Tenant("globex", "premium")
    for _ in range(2):
        response = await e.complete(request(), tenant)
        assert response.route is not None and response.route.fallback
    assert len(edge.calls) == 2
    for _ in range(2):
        routed = await e.stream(request(stream=True), tenant)
        assert routed.route.fallback
        [chunk async for chunk in routed.chunks]
    assert len(edge.calls) == 4


@pytest.mark.anyio
async def test_a_cut_stream_is_not_cached_even_when_another_backend_finished_it() -> None:
    edge = FakeBackend("edge", reply="one two three", cut=CloudStreamCut("cut"), cut_after=1)
    cloud = FakeBackend("cloud", reply="two three")
    e = engine(edge, cloud)
    chunks = await collect(e, request(stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"  # continued on the cloud
    again = await collect(e, request(stream=True))
    assert again[0].route is not None and again[0].route.target == "edge"
    assert len(edge.calls) == 2


class LengthBackend(FakeBackend):
    """Every answer stops at its token limit."""

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        response = await super().complete(request, max_tokens=max_tokens)
        response.choices[0].finish_reason = "length"
        return response

    async def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in super().stream(request, max_tokens=max_tokens):
            if chunk.choices and chunk.choices[0].finish_reason:
                chunk.choices = [ChunkChoice(finish_reason="length")]
            yield chunk


@pytest.mark.anyio
async def test_a_length_truncated_answer_is_not_cached() -> None:
    edge = LengthBackend("edge")
    e = engine(edge)
    await e.complete(request(max_tokens=2), ACME)
    await e.complete(request(max_tokens=2), ACME)
    await collect(e, request(max_tokens=3, stream=True))
    await collect(e, request(max_tokens=3, stream=True))
    assert len(edge.calls) == 4


class VllmLikeBackend(FakeBackend):
    """Streams as vLLM does: every choice carries `"logprobs": null`, the delta `"tool_calls": null`."""

    async def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in super().stream(request, max_tokens=max_tokens):
            payload = chunk.model_dump(mode="json")
            for choice in payload["choices"]:
                choice["logprobs"] = None
                choice["delta"]["tool_calls"] = None
            yield ChatCompletionChunk.model_validate(payload)


@pytest.mark.anyio
async def test_a_streamed_answer_with_empty_extra_fields_is_kept() -> None:
    edge = VllmLikeBackend("edge", reply="Paris")
    e = engine(edge)
    await collect(e, request(stream=True))
    hit = await e.complete(request(), ACME)
    assert hit.route is not None and hit.route.target == "cache" and len(edge.calls) == 1


class EmbeddingEstimator(HeuristicEstimator):
    """The heuristic's score, and a fixed vector per prompt for the semantic cache."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        super().__init__()
        self.table = table

    can_embed = True

    def embed(self, messages: Sequence[ChatMessage]) -> Sequence[float] | None:
        return self.table.get(messages[-1].text)


@pytest.mark.anyio
async def test_a_similar_request_gets_a_semantic_hit_with_its_cosine() -> None:
    edge = FakeBackend("edge", reply="Paris")
    estimator = EmbeddingEstimator({EASY: [1.0, 0.0], "France's capital?": [0.95, 0.31], "Why?": [0.0, 1.0]})
    e = engine(edge, estimator=estimator)
    tenant = Tenant("acme", "similar")
    await e.complete(request(), tenant)
    hit = await e.complete(request("France's capital?"), tenant)
    assert hit.route is not None and (hit.route.target, hit.route.reason) == ("cache", "semantic_cache_hit")
    assert hit.route.score == pytest.approx(0.95, abs=1e-3) and hit.route.threshold == 0.9
    miss = await e.complete(request("Why?"), tenant)
    assert miss.route is not None and miss.route.target == "edge"
    assert len(edge.calls) == 2


def test_a_semantic_tier_without_an_embedding_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        e = engine()
    assert not e.cache.semantic_available
    assert (
        "tier similar asks for a semantic cache, but estimator heuristic@1.0.0 has no embedding"
        in caplog.text
    )
    assert engine(estimator=EmbeddingEstimator({})).cache.semantic_available


@pytest.mark.anyio
async def test_a_reconfigured_engine_keeps_its_cache() -> None:
    edge = FakeBackend("edge")
    e = engine(edge)
    await e.complete(request(), ACME)
    hit = await e.reconfigured(CONFIG).complete(request(), ACME)
    assert hit.route is not None and hit.route.target == "cache"
