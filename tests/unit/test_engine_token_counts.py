"""The engine counts prompt tokens exactly only where a decision needs the exact number."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hyrouter.router import (
    BackendHealth,
    ChatCompletionRequest,
    ChatMessage,
    CloudUnavailable,
    HeuristicEstimator,
    RoutingEngine,
    Tenant,
    parse_config,
)
from hyrouter.router._backend import approximate_tokens, token_upper_bound
from tests.fakes import FakeBackend

CONFIG = parse_config(
    {
        "tiers": {
            "standard": {"threshold": 0.99},
            "premium": {"cloud": "forced"},
        },
        "cloud": {"context_window": 4096},
    }
)
EASY = "What is the capital of France?"


class CountingBackend(FakeBackend):
    """A fake edge whose exact count is `exact` tokens, recording every call to it."""

    def __init__(self, *args: Any, exact: int = 7, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.exact = exact
        self.counted = 0

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        self.counted += 1
        return self.exact


def request(text: str, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], **kw}
    )


def engine(edge: FakeBackend, cloud: FakeBackend | None = None) -> RoutingEngine:
    return RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        edge=edge,
        cloud=cloud if cloud is not None else FakeBackend("cloud", context_window=4096),
    )


def test_a_request_its_tier_sends_to_the_cloud_is_not_tokenized() -> None:
    edge = CountingBackend("edge")
    plan = engine(edge).plan(request(EASY), Tenant("globex", "premium"))
    assert plan.decision.target == "cloud"
    assert edge.counted == 0
    assert plan.prompt_tokens == approximate_tokens(request(EASY).messages)  # the budget's bound
    assert not plan.exact_tokens


def test_a_request_the_edge_may_answer_is_counted_exactly() -> None:
    edge = CountingBackend("edge", exact=9)
    plan = engine(edge).plan(request(EASY), Tenant("acme", "standard"))
    assert plan.decision.target == "edge"
    assert edge.counted == 1
    assert plan.prompt_tokens == 9 and plan.exact_tokens


def test_a_prompt_the_bound_already_sends_to_the_cloud_for_length_is_not_tokenized() -> None:
    edge = CountingBackend("edge", context_window=300)
    long = request("word " * 400)  # about 580 tokens by the estimate: beyond the edge's 300
    plan = engine(edge).plan(long, Tenant("acme", "standard"))
    assert plan.decision.target == "cloud"
    assert edge.counted == 0


def test_a_prompt_near_the_cloud_window_is_counted_even_when_the_tier_forces_the_cloud() -> None:
    edge = CountingBackend("edge", exact=100)
    near = request("x" * 3900)  # a bound of about 3,900 tokens with 256 to answer: past 4,096
    assert token_upper_bound(near.messages) + 256 > 4096
    plan = engine(edge).plan(near, Tenant("globex", "premium"))
    assert edge.counted == 1
    assert plan.decision.target == "cloud" and plan.prompt_tokens == 100


def test_a_forced_tier_that_falls_back_to_the_edge_when_planning_decides_on_the_exact_count() -> None:
    edge = CountingBackend("edge", exact=11)
    down = FakeBackend("cloud", health=BackendHealth(available=False, detail="breaker open"))
    plan = engine(edge, down).plan(request(EASY), Tenant("globex", "premium"))
    assert plan.decision.target == "edge"
    assert edge.counted == 1
    assert plan.prompt_tokens == 11 and plan.exact_tokens


def test_a_cloud_failure_answered_on_the_edge_gives_the_edge_the_room_of_the_exact_count() -> None:
    # A prompt the estimate undercounts (about 50 tokens; 200 exactly): of the edge's 300, 100 are left.
    edge = CountingBackend("edge", context_window=300, exact=200)
    cloud = FakeBackend("cloud", context_window=4096, fail=CloudUnavailable("down"))
    text = "word " * 30
    assert approximate_tokens(request(text).messages) + 200 <= 300  # by the estimate it fits
    e = engine(edge, cloud)
    asyncio.run(e.complete(request(text, max_tokens=200), Tenant("globex", "premium")))
    assert edge.counted == 1
    assert edge.calls == [100]
