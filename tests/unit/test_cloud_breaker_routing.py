"""The shared cloud breaker through the engine and the routes: no caller switches the cloud off for
others, a half-open breaker sheds nobody while its probe succeeds, and an upstream 429 reaches the
caller that cannot fall back, with its Retry-After (issue 15, items 2, 3 and 10)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest

from hyrouter.cloud.breaker import BreakerState
from hyrouter.cloud.endpoint import CloudEndpointClient
from hyrouter.cloud.routes import CHAT_COMPLETIONS, ROUTES, HttpRequest, respond
from hyrouter.router import (
    ChatCompletionRequest,
    HeuristicEstimator,
    RoutingEngine,
    Tenant,
    hash_api_key,
    parse_config,
)
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

CONFIG = parse_config(
    {
        "cloud": {
            "url": "http://gpu.test/v1",
            "retries": {"max_attempts": 3, "backoff_base_s": 0.1, "backoff_max_s": 1.0},
            "breaker": {"failure_threshold": 3, "cooldown_s": 30.0},
        },
        "tiers": {
            "premium": {"cloud": "forced"},
            "strict": {"cloud": "forced", "fallback_to_edge": False},
        },
        "api_keys": [{"sha256": hash_api_key("k-strict"), "tenant": "t-strict", "tier": "strict"}],
    }
)
PREMIUM = [Tenant(f"tenant-{i}", "premium") for i in range(3)]
# vLLM's answer to an assistant message with `content: null` and `tool_calls` it cannot take.
BAD_REQUEST_500 = {
    "object": "error",
    "message": "Assistant message must have content or tool_calls",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Endpoint:
    """The GPU endpoint: `answer(request)` decides each reply; `gate`, when set, holds each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.status = 200
        self.headers: dict[str, str] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.gate is not None:
            await self.gate.wait()
        if body["messages"][-1].get("content") is None:
            return httpx.Response(500, json=BAD_REQUEST_500)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "no"}}, headers=self.headers)
        message = {"role": "assistant", "content": "from the cloud"}
        return httpx.Response(
            200, json={"id": "c", "created": 1, "model": "m", "choices": [{"message": message}]}
        )


def setup(endpoint: Endpoint) -> tuple[RoutingEngine, CloudEndpointClient, FakeBackend, Clock]:
    clock = Clock()
    cloud = CloudEndpointClient(
        CONFIG.cloud,
        transport=httpx.MockTransport(endpoint),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(3),
    )
    edge = FakeBackend("edge", reply="from the edge")
    return RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=edge, cloud=cloud), cloud, edge, clock


def ask(content: str | None = "Hi") -> ChatCompletionRequest:
    if content is None:  # what provokes the endpoint's 500
        calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": calls},
        ]
    else:
        messages = [{"role": "user", "content": content}]
    return ChatCompletionRequest.model_validate({"model": "hybrid-router", "messages": messages})


async def test_requests_that_provoke_a_500_do_not_switch_the_cloud_off_for_others() -> None:
    endpoint = Endpoint()
    engine, cloud, _edge, _ = setup(endpoint)
    for tenant in PREMIUM:  # as many as the breaker's threshold
        answer = await engine.complete(ask(None), tenant)
        assert answer.route is not None and answer.route.target == "edge"  # their own degraded answer
    assert len(endpoint.requests) == 3  # one call each: a 500 that blames the request is not retried
    assert cloud.breaker.state is BreakerState.CLOSED and cloud.health().available
    answer = await engine.complete(ask("Hi"), Tenant("someone-else", "premium"))
    assert answer.route is not None and (answer.route.target, answer.route.fallback) == ("cloud", False)
    assert answer.choices[0].message.content == "from the cloud"


async def test_half_open_sheds_no_paying_request_to_the_edge() -> None:
    endpoint = Endpoint()
    engine, cloud, edge, clock = setup(endpoint)
    endpoint.status = 503
    for _ in range(3):
        await engine.complete(ask(), PREMIUM[0])
    assert cloud.breaker.state is BreakerState.OPEN
    clock.now += 30.0  # the cooldown has passed and the endpoint is back, slow to answer the probe
    endpoint.status, endpoint.gate = 200, asyncio.Event()
    edge.calls.clear()
    tenants = [Tenant(f"p{i}", "premium") for i in range(6)] + [Tenant(f"s{i}", "strict") for i in range(6)]
    calls = [asyncio.create_task(engine.complete(ask(), tenant)) for tenant in tenants]
    for _ in range(50):
        await asyncio.sleep(0)
    assert cloud.breaker.state is BreakerState.HALF_OPEN and not any(call.done() for call in calls)
    endpoint.gate.set()
    answers = await asyncio.gather(*calls)
    assert [a.route.target for a in answers if a.route] == ["cloud"] * len(tenants)
    assert edge.calls == []  # nobody was shed to the edge
    assert cloud.breaker.state is BreakerState.CLOSED


async def test_an_upstream_429_reaches_a_tier_without_fallback_with_its_retry_after() -> None:
    endpoint = Endpoint()
    endpoint.status, endpoint.headers = 429, {"Retry-After": "12"}
    engine, cloud, edge, _ = setup(endpoint)
    request = HttpRequest(
        "POST",
        CHAT_COMPLETIONS,
        headers={"authorization": "Bearer k-strict", "content-type": "application/json"},
        body=ask().model_dump_json().encode(),
    )
    route = next(r for r in ROUTES if r.path == CHAT_COMPLETIONS)
    for _ in range(4):  # more than the breaker's threshold: a 429 is no evidence the endpoint is down
        response = await respond(route, request, engine)
        assert response.status == 429
        assert response.headers["retry-after"] == "12"
        error = json.loads(response.body)["error"]
        assert error["code"] == "rate_limit_exceeded" and error["message"]
        assert "gpu.test" not in error["message"]  # the endpoint's URL stays inside
    assert cloud.breaker.state is BreakerState.CLOSED
    assert edge.calls == []


async def test_a_500_that_blames_the_request_reaches_a_strict_tier_as_a_400_without_the_url() -> None:
    engine, _, _, _ = setup(Endpoint())
    strict = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None}]
    request = HttpRequest(
        "POST",
        CHAT_COMPLETIONS,
        headers={"authorization": "Bearer k-strict", "content-type": "application/json"},
        body=json.dumps({"model": "hybrid-router", "messages": strict}).encode(),
    )
    response = await respond(next(r for r in ROUTES if r.path == CHAT_COMPLETIONS), request, engine)
    assert response.status == 400
    error = json.loads(response.body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")
    assert error["message"] == (
        "The cloud endpoint answered 500: Assistant message must have content or tool_calls"
    )
