"""The engine's streams after their first content: mid-stream failover, and one deadline per request."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hyrouter.router import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    CloudStreamCut,
    DeadlineExceeded,
    HeuristicEstimator,
    InMemoryMetrics,
    RequestOutcome,
    RoutingEngine,
    Tenant,
    Usage,
    cloud_cost_usd,
    parse_config,
)
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

CONFIG = parse_config(
    {
        "tiers": {
            "premium": {"cloud": "forced"},
            "strict": {"cloud": "forced", "fallback_to_edge": False},
            "quick": {"cloud": "forced", "deadline_s": 0.3},
            "quick-edge": {"cloud": "never", "deadline_s": 0.3},
        }
    }
)


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.outcomes.append(outcome)


def request(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": "Name three rivers."}], **kw}
    )


def engine(edge: FakeBackend, cloud: FakeBackend, recorder: Recorder) -> RoutingEngine:
    return RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=edge, cloud=cloud, observers=[recorder])


async def read(stream: Any, into: list[ChatCompletionChunk]) -> None:
    async for chunk in stream.chunks:
        into.append(chunk)


async def test_a_cloud_stream_cut_after_content_continues_on_the_edge_in_the_same_stream() -> None:
    cut = CloudStreamCut("cloud endpoint cut the stream off before data: [DONE]")
    cloud = FakeBackend("cloud", reply="The Nile, the", cut=cut, cut_after=2)
    edge = FakeBackend("edge", reply="Amazon and the Danube.")
    recorder = Recorder()
    router = engine(edge, cloud, recorder)
    stream = await router.stream(request(stream=True), Tenant("acme", "premium"))
    assert (stream.route.target, stream.route.fallback) == ("cloud", False)  # the headers' route
    chunks: list[ChatCompletionChunk] = []
    await read(stream, chunks)  # one uninterrupted stream: nothing raised

    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words == ["The", "Nile,", "Amazon", "and", "the", "Danube."]
    assert edge.continued == [("TheNile,", 256 - 2)]  # the text the caller has; the edge default, less it
    assert {c.id for c in chunks} == {"c1"}  # the cloud's id throughout
    assert [c for c in chunks if c.choices and c.choices[0].delta.role] == chunks[:1]  # one role chunk
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.route is not None
    assert (last.route.target, last.route.reason, last.route.fallback) == ("edge", "cloud_unavailable", True)
    assert last.route.failover_at_tokens == 2
    assert [c for c in chunks if c.route is not None] == [chunks[0], last]

    (outcome,) = recorder.outcomes
    assert (outcome.status, outcome.error_code, outcome.decision.target) == (200, None, "edge")
    assert (outcome.failover_from, outcome.failover_at_tokens) == ("cloud_stream_cut", 2)
    assert outcome.completion_tokens == 6
    assert isinstance(router.metrics, InMemoryMetrics)
    assert router.metrics.snapshot()["failovers"] == {"cloud_stream_cut": 1}
    # The two words the cloud streamed (and the prompt it read) are paid for; the edge's four are saved.
    price = router.config.cloud.price
    cloud_part = cloud_cost_usd(Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=2), price)
    assert outcome.cost_usd == pytest.approx(cloud_part) and outcome.cost_usd > 0
    assert outcome.cost_saved_usd == pytest.approx(cloud_cost_usd(Usage(completion_tokens=4), price))
    assert router.ledger.spent("acme") == pytest.approx(cloud_part)  # type: ignore[attr-defined]


async def test_a_tier_without_edge_fallback_ends_a_cut_stream_with_its_error() -> None:
    cloud = FakeBackend("cloud", reply="The Nile, the", cut=CloudStreamCut("cut"), cut_after=2)
    edge = FakeBackend("edge")
    recorder = Recorder()
    stream = await engine(edge, cloud, recorder).stream(request(stream=True), Tenant("acme", "strict"))
    chunks: list[ChatCompletionChunk] = []
    with pytest.raises(CloudStreamCut):
        await read(stream, chunks)
    assert len(chunks) == 3 and edge.continued == []
    (outcome,) = recorder.outcomes
    assert (outcome.status, outcome.error_code, outcome.failover_from) == (502, "cloud_stream_cut", None)


async def test_an_edge_that_cannot_continue_leaves_the_cut_as_the_error() -> None:
    cloud = FakeBackend("cloud", reply="The Nile, the", cut=CloudStreamCut("cut"), cut_after=2)
    edge = FakeBackend("edge", fail=CloudStreamCut("edge broken too"))  # any BackendError
    stream = await engine(edge, cloud, Recorder()).stream(request(stream=True), Tenant("acme", "premium"))
    with pytest.raises(CloudStreamCut, match=r"^cut$"):
        await read(stream, [])


async def test_a_stream_past_its_deadline_ends_with_finish_reason_length_and_an_error() -> None:
    cloud = FakeBackend("cloud", reply="one two three four five six seven eight", delay=0.1)
    recorder = Recorder()
    stream = await engine(FakeBackend("edge"), cloud, recorder).stream(
        request(stream=True), Tenant("acme", "quick")
    )
    chunks: list[ChatCompletionChunk] = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"0\.3s"):
        await read(stream, chunks)
    assert time.monotonic() - started < 0.5
    assert 1 <= len(chunks) < 9
    assert chunks[-1].choices[0].finish_reason == "length"
    assert recorder.outcomes[0].status == 504
    assert recorder.outcomes[0].error_code == "deadline_exceeded"


async def test_a_response_past_its_deadline_is_a_504_without_fallback() -> None:
    edge = FakeBackend("edge", delay=5.0)
    recorder = Recorder()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        await engine(edge, FakeBackend("cloud"), recorder).complete(request(), Tenant("acme", "quick-edge"))
    assert time.monotonic() - started < 0.5
    assert info.value.status_code == 504
    assert recorder.outcomes[0].error_code == "deadline_exceeded"


def test_the_deadline_defaults_to_the_servers() -> None:
    assert CONFIG.tiers["premium"].deadline_s is None
    assert CONFIG.server.deadline_s == 120.0
    assert CONFIG.server.deadline_s > CONFIG.cloud.timeouts.total  # room for a fallback after the cloud
