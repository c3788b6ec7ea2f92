"""`EdgeRouter` without a model or a network: a fake local backend and a mock cloud router (httpx)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from hyrouter.edge import (
    DeviceSignals,
    EdgeOffline,
    EdgeRouter,
    EdgeRouterConfig,
    EscalationInterrupted,
    StaticSignals,
)
from hyrouter.edge._sdk_config import CloudLink
from hyrouter.router import AuthenticationError, ChatCompletionRequest, EdgeBusy, ModelNotFound, RequestError
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

EASY = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
HARD = {"messages": [{"role": "user", "content": "Prove step by step that sqrt(2) is irrational."}]}
UPSTREAM_ROUTE = {
    "target": "cloud",
    "reason": "tier_forces_cloud",
    "score": 0.1,
    "threshold": None,
    "tier": "premium",
    "tenant": "t-premium",
    "model": "cloud-standin",
    "estimator": "heuristic@1.0.0",
    "cost_usd": 0.00002,
}
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CloudRouter:
    """A mock cloud router: answers, refuses connections, or fails as told; records every call."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[httpx.Request] = []
        self.delay_s = 0.0
        self.stream_events: list[str] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": []})
        if self.mode in ("503", "401"):
            status = int(self.mode)
            return httpx.Response(status, json={"error": {"message": "nope", "type": "x", "code": "c"}})
        body = json.loads(request.content)
        if body.get("stream"):
            events = self.stream_events or [
                chunk({"role": "assistant", "content": ""}, route=UPSTREAM_ROUTE),
                chunk({"content": "Paris"}),
                chunk({}, finish="stop"),
                "[DONE]",
            ]
            text = "".join(f"data: {e}\n\n" for e in events)
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "cloud-standin",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
                "route": UPSTREAM_ROUTE,
            },
        )

    def chat_calls(self) -> list[httpx.Request]:
        return [c for c in self.calls if c.url.path.endswith("/chat/completions")]


def chunk(delta: dict[str, Any], *, finish: str | None = None, route: dict[str, Any] | None = None) -> str:
    event: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "cloud-standin",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if route:
        event["route"] = route
    return json.dumps(event)


def make(
    cloud: CloudRouter,
    *,
    tier: str = "free",
    clock: Clock | None = None,
    signals: DeviceSignals | None = None,
    local: FakeBackend | None = None,
    **config: Any,
) -> EdgeRouter:
    data: dict[str, Any] = {
        "tier": tier,
        "cloud": {
            "url": "http://cloud.test/v1",
            "offline_retry_s": 5.0,
            "retries": {"max_attempts": 2, "backoff_base_s": 0},
        },
        **config,
    }
    data["tiers"] = {
        "free": {"routing": {"threshold": 0.7}},
        "premium": {"routing": {"cloud": "forced"}, "signals": {"slow_link_rtt_ms": None}},
        "strict": {"routing": {"cloud": "forced", "fallback_to_edge": False}},
    }
    return EdgeRouter(
        EdgeRouterConfig.model_validate(data),
        local=local or FakeBackend("edge", model_id="smollm2", reply="local answer"),
        signals=StaticSignals(signals or DeviceSignals()),
        api_key="device-key",
        transport=httpx.MockTransport(cloud),
        clock=clock or Clock(),
    )


async def test_an_easy_request_is_answered_on_the_device() -> None:
    cloud = CloudRouter()
    router = make(cloud)
    answer = await router.complete(EASY)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.offline) == (
        "edge",
        "score_below_threshold",
        False,
    )
    assert answer.route.model == answer.model == "smollm2"
    assert answer.route.cost_saved_usd > 0 and answer.route.cost_usd == 0
    assert answer.choices[0].message.content == "local answer"
    assert cloud.calls == []


async def test_escalation_sends_the_device_key_and_reports_both_routes() -> None:
    cloud = CloudRouter()
    router = make(cloud, tier="premium")
    answer = await router.complete({**EASY, "max_tokens": 8})
    [call] = cloud.chat_calls()
    assert call.headers["authorization"] == "Bearer device-key"
    body = json.loads(call.content)
    assert (body["model"], body["max_tokens"], body["stream"]) == ("hybrid-router", 8, False)
    assert "tier" not in body  # the cloud decides the tier from the key
    route = answer.route
    assert route is not None and route.upstream is not None
    assert (route.target, route.reason, route.model, route.offline) == (
        "cloud",
        "tier_forces_cloud",
        "cloud-standin",
        False,
    )
    assert route.upstream.tier == "premium" and route.cost_usd == 0.00002
    assert answer.choices[0].message.content == "Paris"


async def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER_DEVICE_KEY", "env-key")
    cloud = CloudRouter()
    config = EdgeRouterConfig.model_validate({"tier": "premium", "cloud": {"url": "http://cloud.test/v1"}})
    router = EdgeRouter(
        config, local=FakeBackend("edge"), signals=StaticSignals(), transport=httpx.MockTransport(cloud)
    )
    await router.complete(EASY)
    assert cloud.chat_calls()[0].headers["authorization"] == "Bearer env-key"


async def test_offline_answers_locally_then_recovers_without_a_restart() -> None:
    cloud, clock = CloudRouter(), Clock()
    router = make(cloud, tier="premium", clock=clock)
    cloud.mode = "down"
    first = await router.complete(EASY)
    assert first.route is not None
    assert (first.route.target, first.route.reason, first.route.offline, first.route.fallback) == (
        "edge",
        "offline",
        True,
        True,
    )
    assert router.offline and "refused" in (router.link.last_error or "")
    tried = len(cloud.calls)
    assert tried == 2  # connect failures are retried once

    second = await router.complete(EASY)  # within offline_retry_s: no network at all
    assert second.route is not None and second.route.reason == "offline" and len(cloud.calls) == tried

    cloud.mode = "ok"
    clock.now += 5.0  # due for a probe: the next request checks the link first
    third = await router.complete(EASY)
    assert third.route is not None
    assert (third.route.target, third.route.offline) == ("cloud", False)
    assert [c.url.path for c in cloud.calls[tried:]] == ["/v1/models", "/v1/chat/completions"]
    assert not router.offline


async def test_a_failed_probe_keeps_the_device_offline() -> None:
    cloud, clock = CloudRouter(), Clock()
    router = make(cloud, tier="premium", clock=clock)
    cloud.mode = "down"
    await router.complete(EASY)
    clock.now += 5.0
    answer = await router.complete(EASY)
    assert answer.route is not None and answer.route.reason == "offline"
    assert cloud.calls[-1].url.path == "/v1/models"  # only the probe went out
    assert await router.probe_link() is False


async def test_offline_with_a_tier_that_forbids_local_answers_fails_fast() -> None:
    cloud = CloudRouter()
    cloud.mode = "down"
    router = make(cloud, tier="strict")
    with pytest.raises(EdgeOffline, match=r"offline .* tier 'strict' does not allow"):
        await router.complete(EASY)
    with pytest.raises(EdgeOffline):  # and again, now without touching the network
        await router.complete(EASY)


async def test_a_cloud_router_error_falls_back_without_going_offline() -> None:
    cloud = CloudRouter()
    cloud.mode = "503"
    router = make(cloud, tier="premium")
    answer = await router.complete(EASY)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.offline) == (
        "edge",
        "cloud_unavailable",
        False,
    )
    assert len(cloud.chat_calls()) == 2  # 503 is retried once
    assert not router.offline


async def test_a_wrong_device_key_is_an_error_not_a_fallback() -> None:
    cloud = CloudRouter()
    cloud.mode = "401"
    router = make(cloud, tier="premium")
    with pytest.raises(AuthenticationError, match=r"API key given to the SDK .*HYBRID_ROUTER_DEVICE_KEY"):
        await router.complete(EASY)
    assert len(cloud.chat_calls()) == 1


async def test_a_refused_key_from_the_environment_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from hyrouter.edge._escalation import EscalationClient

    monkeypatch.setenv("HYBRID_ROUTER_DEVICE_KEY", "revoked-key")
    cloud = CloudRouter()
    cloud.mode = "401"
    client = EscalationClient(CloudLink(url="http://cloud.test/v1"), transport=httpx.MockTransport(cloud))
    with pytest.raises(AuthenticationError, match="set the env var HYBRID_ROUTER_DEVICE_KEY to a key"):
        await client.complete(ChatCompletionRequest.model_validate({**EASY, "model": "hybrid-router"}))
    assert cloud.calls[-1].headers["authorization"] == "Bearer revoked-key"
    await client.aclose()


async def test_a_busy_device_model_escalates() -> None:
    cloud = CloudRouter()
    router = make(cloud, local=FakeBackend("edge", fail=EdgeBusy("queue full")))
    answer = await router.complete(EASY)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.fallback) == ("cloud", "edge_busy", True)


async def test_personal_data_never_leaves_the_device() -> None:
    cloud = CloudRouter()
    router = make(cloud, tier="premium", privacy={"keep_personal_data_local": True})
    answer = await router.complete(
        {"messages": [{"role": "user", "content": "Email jane@example.com a summary"}]}
    )
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.personal_data) == (
        "edge",
        "private_data",
        ["email"],
    )
    stream = await router.stream({"messages": [{"role": "user", "content": "Call +1 415 555 0132"}]})
    assert stream.route.reason == "private_data"
    assert [c async for c in stream.chunks]
    assert cloud.calls == []


async def personal_in(router: EdgeRouter, text: str) -> list[str]:
    answer = await router.complete({"messages": [{"role": "user", "content": text}]})
    assert answer.route is not None
    return answer.route.personal_data


async def test_ibans_ssns_and_the_configured_phone_regions_stay_on_the_device() -> None:
    cloud = CloudRouter()
    us_only = make(cloud, tier="premium", privacy={"keep_personal_data_local": True, "phone_regions": ["US"]})
    assert await personal_in(us_only, "Pay DE89 3704 0044 0532 0130 00") == ["iban"]
    assert await personal_in(us_only, "My SSN is 457-55-5462") == ["ssn"]
    assert await personal_in(us_only, "Ruf an: 030 23125 456") == []  # German national format
    assert len(cloud.chat_calls()) == 1
    germany = make(cloud, tier="premium", privacy={"keep_personal_data_local": True, "phone_regions": ["DE"]})
    assert await personal_in(germany, "Ruf an: 030 23125 456") == ["phone"]


async def test_low_battery_escalates_an_easy_request() -> None:
    cloud = CloudRouter()
    router = make(cloud, signals=DeviceSignals(battery_pct=9, charging=False))
    answer = await router.complete(EASY)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.signals) == (
        "cloud",
        "low_battery",
        ["battery 9% not charging"],
    )


async def test_a_slow_link_measured_by_the_probe_keeps_a_hard_request_local() -> None:
    cloud = CloudRouter()
    cloud.delay_s = 0.05
    router = make(cloud)
    router._policy = router._policy.model_copy(
        update={"signals": router._policy.signals.model_copy(update={"slow_link_rtt_ms": 20.0})}
    )
    answer = await router.complete(HARD)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason) == ("edge", "slow_link")
    assert [c.url.path for c in cloud.calls] == ["/v1/models"]
    assert (router.link.rtt_ms or 0) >= 50


async def test_escalated_stream_relays_chunks_with_the_route_first() -> None:
    cloud = CloudRouter()
    router = make(cloud, tier="premium")
    stream = await router.stream({**EASY, "stream_options": {"include_usage": True}})
    chunks = [c async for c in stream.chunks]
    assert chunks[0].route is not None and chunks[0].route.upstream is not None
    assert chunks[0].route.target == "cloud" and all(c.route is None for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris"
    assert json.loads(cloud.chat_calls()[0].content)["stream_options"] == {"include_usage": True}


async def test_a_stream_that_breaks_before_content_falls_back_locally() -> None:
    cloud = CloudRouter()
    # The body ends without `data: [DONE]`: the link broke.
    cloud.stream_events = [chunk({"role": "assistant", "content": ""}, route=UPSTREAM_ROUTE)]
    router = make(cloud, tier="premium")
    stream = await router.stream(EASY)
    assert (stream.route.target, stream.route.reason, stream.route.fallback) == ("edge", "offline", True)
    assert stream.route.offline
    text = "".join([c.choices[0].delta.content or "" async for c in stream.chunks if c.choices])
    assert text.split() == ["local", "answer"] or text == "localanswer"


async def test_a_stream_error_event_after_content_is_raised() -> None:
    cloud = CloudRouter()
    cloud.stream_events = [
        chunk({"role": "assistant", "content": "Par"}, route=UPSTREAM_ROUTE),
        json.dumps({"error": {"message": "upstream died", "type": "server_error"}}),
    ]
    router = make(cloud, tier="premium")
    stream = await router.stream(EASY)
    with pytest.raises(Exception, match="upstream died"):
        [c async for c in stream.chunks]


async def test_requests_are_validated() -> None:
    router = make(CloudRouter())
    with pytest.raises(ModelNotFound):
        await router.complete({**EASY, "model": "gpt-4"})
    with pytest.raises(RequestError, match="messages"):
        await router.complete({"messages": []})


def test_escalation_interrupted_is_a_cloud_error() -> None:
    assert EscalationInterrupted("x").code == "stream_interrupted"


async def test_a_stream_cut_after_content_fails_clearly_and_goes_offline() -> None:
    cloud = CloudRouter()
    cloud.stream_events = [chunk({"role": "assistant", "content": "Par"}, route=UPSTREAM_ROUTE)]
    router = make(cloud, tier="premium")
    stream = await router.stream(EASY)
    assert stream.route.target == "cloud"
    received: list[str] = []
    with pytest.raises(EscalationInterrupted, match="broke mid-answer"):
        async for c in stream.chunks:
            received.append(c.choices[0].delta.content or "")
    assert received == ["Par"]
    assert router.offline
    after = await router.complete(EASY)  # the next request does not wait on the broken link
    assert after.route is not None and after.route.reason == "offline"


async def test_the_device_leaves_budgets_to_the_cloud_router() -> None:
    # A synced tier carries the cloud's budget; the device has neither the tenant nor its spend.
    cloud = CloudRouter()
    router = make(cloud)
    router._policy = router._policy.model_copy(
        update={"routing": router._policy.routing.model_copy(update={"budget_usd": 0.0})}
    )
    answer = await router.complete(HARD)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason) == ("cloud", "score_above_threshold")


async def test_a_busy_device_whose_escalation_finds_the_link_down_is_offline() -> None:
    cloud = CloudRouter()
    cloud.mode = "down"
    router = make(cloud, local=FakeBackend("edge", fail=EdgeBusy("queue full")))
    with pytest.raises(EdgeOffline, match="offline"):
        await router.complete(EASY)
    assert router.offline


async def test_a_retried_escalation_carries_one_idempotency_key() -> None:
    # A retry after a dropped connection must not run (and bill) the cloud answer twice.
    cloud = CloudRouter()
    cloud.mode = "503"
    router = make(cloud, tier="premium")
    await router.complete(EASY)
    first, second = cloud.chat_calls()
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    await router.complete(EASY)
    assert cloud.chat_calls()[-1].headers["idempotency-key"] != first.headers["idempotency-key"]


async def test_the_device_leaves_budgets_and_rate_limits_to_the_cloud_router() -> None:
    cloud = CloudRouter()
    data: dict[str, Any] = {
        "tier": "metered",
        "cloud": {"url": "http://cloud.test/v1", "retries": {"max_attempts": 1}},
        # A tier synced from the cloud router: a tiny budget, one request a minute, all on the device.
        "tiers": {"metered": {"routing": {"threshold": 1.0, "budget_usd": 1e-6, "requests_per_minute": 1}}},
    }
    router = EdgeRouter(
        EdgeRouterConfig.model_validate(data),
        local=FakeBackend("edge", fail=EdgeBusy("queue full")),
        signals=StaticSignals(DeviceSignals()),
        api_key="device-key",
        transport=httpx.MockTransport(cloud),
        clock=Clock(),
    )
    for _ in range(3):  # the device is busy: each escalates, neither refused nor counted here
        answer = await router.complete(EASY)
        assert answer.route is not None and answer.route.target == "cloud"
    assert len(cloud.chat_calls()) == 3
