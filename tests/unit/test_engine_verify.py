"""The confidence cascade: the edge answers, its model's confidence keeps the answer or escalates it."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hyrouter.router import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    CloudUnavailable,
    EdgeBackendError,
    HeuristicEstimator,
    RequestOutcome,
    RoutedStream,
    RoutingEngine,
    Tenant,
    parse_config,
)
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

VERIFY = {"enabled": True, "min_confidence": 0.5, "max_edge_tokens": 2}
CONFIG = parse_config(
    {
        "tiers": {
            "verified": {"threshold": 0.4, "verify": VERIFY},
            "plain": {"threshold": 0.4},
            "edge-only": {"cloud": "never", "verify": VERIFY},
            "whole": {"threshold": 0.4, "verify": {**VERIFY, "stream": "whole"}},
            "tight": {"threshold": 0.4, "verify": VERIFY, "budget_usd": 0.0},
        }
    }
)
EASY = "What is the capital of France?"
HARD = "Prove step by step that sqrt 2 is irrational and explain why."
SURE, UNSURE = -0.1, -2.0  # per-token log-probabilities: confidence exp(-0.1) ~ 0.905, exp(-2) ~ 0.135


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.outcomes.append(outcome)


def request(text: str = EASY, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], **kw}
    )


def engine(edge: FakeBackend, cloud: FakeBackend, recorder: Recorder | None = None) -> RoutingEngine:
    observers = [recorder] if recorder is not None else []
    return RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=edge, cloud=cloud, observers=observers)


async def words(stream: RoutedStream) -> list[str]:
    chunks: list[ChatCompletionChunk] = [chunk async for chunk in stream.chunks]
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


async def test_a_confident_edge_answer_stands_with_its_confidence_in_the_route() -> None:
    edge, cloud = FakeBackend("edge", reply="Paris.", logprob=SURE), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "verified"))
    assert response.choices[0].message.content == "Paris."
    route = response.route
    assert route is not None
    assert (route.target, route.reason) == ("edge", "score_below_threshold")
    assert route.confidence == pytest.approx(math.exp(SURE), abs=1e-4)
    assert (route.edge_tokens_discarded, route.edge_ms_discarded) == (None, None)
    assert cloud.calls == []


async def test_an_unsure_edge_answer_is_discarded_and_the_cloud_answers_as_edge_unsure() -> None:
    edge, cloud = FakeBackend("edge", reply="Lyon?", logprob=UNSURE), FakeBackend("cloud", reply="Paris.")
    recorder = Recorder()
    router = engine(edge, cloud, recorder)
    response = await router.complete(request(), Tenant("acme", "verified"))
    assert response.choices[0].message.content == "Paris."
    route = response.route
    assert route is not None
    assert (route.target, route.reason, route.fallback) == ("cloud", "edge_unsure", False)
    assert route.model == "cloud-model" and response.model == "cloud-model"
    assert route.confidence == pytest.approx(math.exp(UNSURE), abs=1e-4)
    assert route.edge_tokens_discarded == 1  # "Lyon?": the one token generated before it was judged
    assert route.edge_ms_discarded is not None and route.edge_ms_discarded >= 0
    assert len(edge.calls) == 1 and len(cloud.calls) == 1
    (outcome,) = recorder.outcomes  # recorded once, with the final route
    assert (outcome.decision.target, outcome.decision.reason) == ("cloud", "edge_unsure")
    assert outcome.decision.original_reason == "score_below_threshold"
    assert outcome.cost_usd > 0 and outcome.cost_saved_usd == 0
    assert outcome.confidence == pytest.approx(math.exp(UNSURE)) and outcome.edge_tokens_discarded == 1


async def test_a_tier_without_verification_keeps_the_edge_answer_unjudged() -> None:
    edge, cloud = FakeBackend("edge", reply="Lyon?", logprob=UNSURE), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "plain"))
    assert response.route is not None
    assert (response.route.target, response.route.confidence) == ("edge", None)
    assert cloud.calls == []


async def test_a_tier_that_never_uses_the_cloud_keeps_the_answer_and_reports_its_confidence() -> None:
    edge, cloud = FakeBackend("edge", reply="Lyon?", logprob=UNSURE), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "edge-only"))
    route = response.route
    assert route is not None
    assert (route.target, route.reason) == ("edge", "tier_forbids_cloud")
    assert route.confidence == pytest.approx(math.exp(UNSURE), abs=1e-4)
    assert route.edge_tokens_discarded is None and cloud.calls == []


async def test_a_hard_prompt_still_goes_straight_to_the_cloud_without_an_edge_answer() -> None:
    edge, cloud = FakeBackend("edge", logprob=UNSURE), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(HARD), Tenant("acme", "verified"))
    assert response.route is not None
    assert (response.route.target, response.route.reason) == ("cloud", "score_above_threshold")
    assert response.route.confidence is None and edge.calls == []


async def test_an_edge_that_reports_no_signals_is_not_judged() -> None:
    edge, cloud = FakeBackend("edge", reply="Paris."), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "verified"))
    assert response.route is not None
    assert (response.route.target, response.route.confidence) == ("edge", None)
    assert cloud.calls == []


async def test_when_the_escalation_fails_the_edge_answer_stands_as_a_fallback() -> None:
    edge = FakeBackend("edge", reply="Lyon?", logprob=UNSURE)
    cloud = FakeBackend("cloud", fail=CloudUnavailable("down"))
    recorder = Recorder()
    response = await engine(edge, cloud, recorder).complete(request(), Tenant("acme", "verified"))
    assert response.choices[0].message.content == "Lyon?"
    route = response.route
    assert route is not None
    assert (route.target, route.reason, route.fallback) == ("edge", "cloud_unavailable", True)
    assert route.confidence == pytest.approx(math.exp(UNSURE), abs=1e-4)
    assert route.edge_tokens_discarded is None  # nothing was discarded after all
    assert len(edge.calls) == 1  # the edge's answer is kept, not generated again
    (outcome,) = recorder.outcomes
    assert outcome.decision.original_reason == "edge_unsure"


async def test_a_budget_that_cannot_pay_for_the_escalation_keeps_the_edge_answer() -> None:
    edge, cloud = FakeBackend("edge", reply="Lyon?", logprob=UNSURE), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "tight"))
    assert response.route is not None
    assert response.route.target == "edge" and cloud.calls == []


async def test_a_confident_stream_is_held_back_then_released_whole() -> None:
    edge = FakeBackend("edge", reply="The capital is Paris.", logprob=SURE)
    cloud = FakeBackend("cloud")
    stream = await engine(edge, cloud).stream(request(stream=True), Tenant("acme", "verified"))
    assert edge.streamed == 2  # max_edge_tokens held back and judged before the route was known
    assert stream.route.target == "edge"
    assert stream.route.confidence == pytest.approx(math.exp(SURE), abs=1e-4)
    assert await words(stream) == ["The", "capital", "is", "Paris."]
    assert cloud.calls == []


async def test_an_unsure_stream_escalates_before_any_edge_byte_is_sent() -> None:
    edge = FakeBackend("edge", reply="Maybe it is Lyon.", logprob=UNSURE)
    cloud = FakeBackend("cloud", reply="Paris, of course.")
    recorder = Recorder()
    stream = await engine(edge, cloud, recorder).stream(request(stream=True), Tenant("acme", "verified"))
    assert (stream.route.target, stream.route.reason) == ("cloud", "edge_unsure")
    assert stream.route.edge_tokens_discarded == 2
    assert await words(stream) == ["Paris,", "of", "course."]  # not one of the edge's words
    assert edge.streamed == 2  # the edge stopped at the decision
    (outcome,) = recorder.outcomes
    assert (outcome.decision.target, outcome.decision.reason) == ("cloud", "edge_unsure")
    assert outcome.confidence == pytest.approx(math.exp(UNSURE), abs=1e-4)
    assert outcome.edge_tokens_discarded == 2


async def test_a_whole_answer_stream_is_judged_on_all_of_it() -> None:
    edge = FakeBackend("edge", reply="The capital is Paris.", logprob=UNSURE)
    cloud = FakeBackend("cloud", reply="Paris.")
    stream = await engine(edge, cloud).stream(request(stream=True), Tenant("acme", "whole"))
    assert edge.streamed == 4
    assert (stream.route.reason, stream.route.edge_tokens_discarded) == ("edge_unsure", 4)
    assert await words(stream) == ["Paris."]


LONG = "Lyon is probably the capital of France I think"


async def test_an_unsure_non_streamed_answer_stops_the_edge_after_max_edge_tokens() -> None:
    edge, cloud = FakeBackend("edge", reply=LONG, logprob=UNSURE), FakeBackend("cloud", reply="Paris.")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "verified"))
    assert response.choices[0].message.content == "Paris."
    route = response.route
    assert route is not None and (route.target, route.reason) == ("cloud", "edge_unsure")
    assert edge.streamed == 2  # judged on its first max_edge_tokens, then stopped: not the 9 words
    assert route.edge_tokens_discarded == 2


async def test_a_confident_non_streamed_answer_is_judged_early_then_given_whole() -> None:
    edge, cloud = FakeBackend("edge", reply=LONG, logprob=SURE), FakeBackend("cloud")
    response = await engine(edge, cloud).complete(request(logprobs=True), Tenant("acme", "verified"))
    assert edge.streamed == len(LONG.split()) and cloud.calls == []
    assert response.object == "chat.completion" and response.model == "edge-model"
    (choice,) = response.choices
    assert choice.message.content == "".join(LONG.split())  # the fake's chunks are its words
    assert choice.finish_reason == "stop"
    assert choice.logprobs == {"content": [], "refusal": None}  # asked for: the chunks' (none here)
    assert response.usage.completion_tokens == len(LONG.split())
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    route = response.route
    assert route is not None and route.target == "edge"
    assert route.confidence == pytest.approx(math.exp(SURE), abs=1e-4)


async def test_a_whole_tier_judges_a_non_streamed_answer_on_all_of_it() -> None:
    edge, cloud = FakeBackend("edge", reply=LONG, logprob=UNSURE), FakeBackend("cloud", reply="Paris.")
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "whole"))
    route = response.route
    assert route is not None and route.reason == "edge_unsure"
    assert edge.streamed == 0 and route.edge_tokens_discarded == 2  # generated whole (the fake's usage)


async def test_when_the_cloud_fails_after_a_stopped_edge_the_edge_answers_again() -> None:
    edge = FakeBackend("edge", reply=LONG, logprob=UNSURE)
    cloud = FakeBackend("cloud", fail=CloudUnavailable("down"))
    response = await engine(edge, cloud).complete(request(), Tenant("acme", "verified"))
    assert response.choices[0].message.content == LONG  # the fake's whole (non-streamed) answer
    route = response.route
    assert route is not None and (route.target, route.fallback) == ("edge", True)
    assert edge.streamed == 2 and len(edge.calls) == 2


async def test_an_edge_that_fails_after_its_judged_head_falls_back_to_the_cloud_unsent() -> None:
    # Non-streamed and judged on its first 2 words, the edge breaks after 3: nothing was sent, so the
    # cloud answers as it would for any edge failure, rather than the caller getting an error.
    broken = EdgeBackendError("llama decode failed")
    edge = FakeBackend("edge", reply="The capital is Paris.", logprob=SURE, cut=broken, cut_after=3)
    cloud = FakeBackend("cloud", reply="Paris.")
    recorder = Recorder()
    response = await engine(edge, cloud, recorder).complete(request(), Tenant("acme", "verified"))
    assert response.choices[0].message.content == "Paris."
    route = response.route
    assert route is not None and route.target == "cloud" and route.fallback
    assert len(cloud.calls) == 1
    (outcome,) = recorder.outcomes
    assert outcome.decision.target == "cloud" and outcome.status == 200
