"""The cloud endpoint client against `httpx.MockTransport`: no network and no real backoff waits."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import httpx
import pytest

from hyrouter.cloud.breaker import BreakerState
from hyrouter.cloud.endpoint import (
    CloudEndpointClient,
    CloudHTTPError,
    CloudRateLimited,
    CloudRequestRejected,
    is_request_fault,
)
from hyrouter.router._config import CircuitBreakerConfig, CloudConfig, CloudRetries, CloudTimeouts
from hyrouter.router._errors import CloudBackendError, CloudStreamCut, CloudTimeout, CloudUnavailable
from hyrouter.router._openai_http import retry_after_seconds as _retry_after
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest

pytestmark = pytest.mark.anyio

URL = "http://gpu.test/v1"
KEY_ENV = "HYBRID_ROUTER_TEST_CLOUD_KEY"

Step = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSleep:
    """Records each wait and moves the fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


class Upstream:
    """A scripted endpoint: each request gets the next step; the last step repeats."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.steps[min(len(self.requests), len(self.steps)) - 1](request)

    def body(self, index: int = -1) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[index].content)
        return data


class Harness:
    def __init__(
        self,
        upstream: Upstream,
        *,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **config: Any,
    ) -> None:
        settings: dict[str, Any] = {
            "url": URL,
            "model": "big-model",
            "api_key_env": KEY_ENV,
            "retries": CloudRetries(max_attempts=3, backoff_base_s=0.1, backoff_max_s=2.0),
            "breaker": CircuitBreakerConfig(failure_threshold=3, cooldown_s=30.0),
        }
        settings.update(config)
        self.upstream = upstream
        self.clock = FakeClock()
        self.sleep = FakeSleep(self.clock)
        self.client = CloudEndpointClient(
            CloudConfig(**settings),
            transport=transport or httpx.MockTransport(upstream),
            sleep=self.sleep,
            clock=self.clock,
            rng=rng or random.Random(7),
        )


def completion(model: str | None = "big-model", content: str = "Hello!") -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    if model is not None:
        body["model"] = model
    return body


def ok(body: dict[str, Any] | None = None) -> Step:
    return lambda request: httpx.Response(200, json=body or completion())


def status(code: int, headers: dict[str, str] | None = None, body: Any = None) -> Step:
    payload = body if body is not None else {"error": {"message": f"upstream says {code}", "type": "x"}}
    return lambda request: httpx.Response(code, json=payload, headers=headers)


def raises(exc_type: type[httpx.RequestError], message: str = "boom") -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return step


def chat(**extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="hybrid-router", messages=[{"role": "user", "content": "Hi"}], **extra)


def sse(*events: dict[str, Any] | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def chunk(content: str | None = None, *, role: bool = False, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "big-model",
        "choices": [choice],
    }


class ScriptedStream(httpx.AsyncByteStream):
    """A response body that sends `parts` and then raises `error` (if any); records being closed."""

    def __init__(self, parts: list[bytes], error: Exception | None = None, delay: float = 0.0) -> None:
        self.parts = parts
        self.error = error
        self.delay = delay
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.delay:
            await asyncio.sleep(self.delay)
        for part in self.parts:
            yield part
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def streaming(body: ScriptedStream) -> Step:
    return lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


# -- complete ---------------------------------------------------------------------------------------


async def test_complete_success() -> None:
    h = Harness(Upstream(ok()))
    response = await h.client.complete(chat(), max_tokens=50)
    assert response.choices[0].message.content == "Hello!"
    assert response.model == "big-model"
    assert response.usage.total_tokens == 7
    assert str(h.upstream.requests[0].url) == f"{URL}/chat/completions"
    assert h.upstream.requests[0].method == "POST"
    assert h.sleep.waits == []
    assert h.client.breaker.state is BreakerState.CLOSED
    assert h.client.target == "cloud"
    assert h.client.model_id == "big-model"
    assert h.client.context_window == 8192
    await h.client.aclose()


async def test_request_body_has_model_replaced_and_max_tokens_set() -> None:
    h = Harness(Upstream(ok()))
    await h.client.complete(
        chat(
            max_completion_tokens=999, temperature=0.2, stream_options={"include_usage": True}, logprobs=True
        ),
        max_tokens=64,
    )
    body = h.upstream.body()
    assert body["model"] == "big-model"
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body
    assert body["stream"] is False
    assert "stream_options" not in body
    assert body["temperature"] == 0.2
    assert body["logprobs"] is True
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


async def test_missing_model_is_filled_in() -> None:
    h = Harness(Upstream(ok(completion(model=None))))
    response = await h.client.complete(chat(), max_tokens=5)
    assert response.model == "big-model"


async def test_authorization_header_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-secret")
    h = Harness(Upstream(ok()))
    await h.client.complete(chat(), max_tokens=5)
    assert h.upstream.requests[0].headers["authorization"] == "Bearer sk-secret"


async def test_no_authorization_header_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    h = Harness(Upstream(ok()))
    await h.client.complete(chat(), max_tokens=5)
    assert "authorization" not in h.upstream.requests[0].headers


async def test_retry_on_503_then_success() -> None:
    h = Harness(Upstream(status(503), ok()))
    response = await h.client.complete(chat(), max_tokens=5)
    assert response.choices[0].message.content == "Hello!"
    assert len(h.upstream.requests) == 2
    assert len(h.sleep.waits) == 1
    assert 0 <= h.sleep.waits[0] <= 0.1
    assert h.client.breaker.failures == 0


async def test_retry_after_seconds_honoured() -> None:
    h = Harness(Upstream(status(503, headers={"Retry-After": "7"}), ok()))
    await h.client.complete(chat(), max_tokens=5)
    assert h.sleep.waits == [7.0]


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = _retry_after(when)
    assert wait is not None
    assert 25 <= wait <= 30
    assert _retry_after("not a date") is None
    assert _retry_after(None) is None
    assert _retry_after("-3") == 0.0


async def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    bounds: list[tuple[float, float]] = []

    class RecordingRandom(random.Random):
        def uniform(self, a: float, b: float) -> float:
            bounds.append((a, b))
            return b

    h = Harness(
        Upstream(status(502)),
        rng=RecordingRandom(),
        retries=CloudRetries(max_attempts=5, backoff_base_s=0.5, backoff_max_s=1.5),
    )
    with pytest.raises(CloudBackendError):
        await h.client.complete(chat(), max_tokens=5)
    assert bounds == [(0, 0.5), (0, 1.0), (0, 1.5), (0, 1.5)]
    assert h.sleep.waits == [0.5, 1.0, 1.5, 1.5]


async def test_gives_up_after_max_attempts() -> None:
    h = Harness(Upstream(status(503)))
    with pytest.raises(CloudBackendError) as info:
        await h.client.complete(chat(), max_tokens=5)
    assert type(info.value) is CloudHTTPError
    assert info.value.upstream_status == 503
    assert "503" in info.value.message
    assert URL in info.value.message
    assert "after 3 attempts" in info.value.message
    assert len(h.upstream.requests) == 3
    assert len(h.sleep.waits) == 2
    assert h.client.breaker.failures == 1  # one failure per call, not per attempt


async def test_429_retried() -> None:
    h = Harness(Upstream(status(429), ok()))
    await h.client.complete(chat(), max_tokens=5)
    assert len(h.upstream.requests) == 2


async def test_400_not_retried_and_not_a_breaker_failure() -> None:
    body = {"error": {"message": "messages too long", "type": "invalid_request_error"}}
    h = Harness(Upstream(status(400, body=body)), breaker=CircuitBreakerConfig(failure_threshold=1))
    with pytest.raises(CloudHTTPError) as info:
        await h.client.complete(chat(), max_tokens=5)
    assert info.value.upstream_status == 400
    assert "messages too long" in info.value.message
    assert len(h.upstream.requests) == 1
    assert h.sleep.waits == []
    assert h.client.breaker.state is BreakerState.CLOSED


# What vLLM and llama.cpp's server answer, with a 500, for a request they cannot take.
VLLM_BAD_REQUEST_500 = {
    "object": "error",
    "message": "Assistant message must have content or tool_calls",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}
LLAMA_CPP_BAD_JSON_500 = {
    "error": {
        "code": 500,
        "message": "[json.exception.type_error.302] type must be string, but is null",
        "type": "server_error",
    }
}


@pytest.mark.parametrize(
    "body",
    [
        VLLM_BAD_REQUEST_500,
        {"error": VLLM_BAD_REQUEST_500},
        LLAMA_CPP_BAD_JSON_500,
        {"error": {"message": "bad", "type": "x", "code": "invalid_request_error"}},
    ],
)
async def test_a_500_that_blames_the_request_is_neither_retried_nor_counted(body: dict[str, Any]) -> None:
    h = Harness(Upstream(status(500, body=body)), breaker=CircuitBreakerConfig(failure_threshold=1))
    for _ in range(3):
        with pytest.raises(CloudRequestRejected) as info:
            await h.client.complete(chat(), max_tokens=5)
    assert info.value.upstream_status == 500
    assert (info.value.status_code, info.value.code) == (400, "invalid_request")
    assert len(h.upstream.requests) == 3  # one each: not retried
    assert h.client.breaker.state is BreakerState.CLOSED
    assert h.client.health().available


async def test_a_bare_500_is_not_retried_and_not_breaker_evidence() -> None:
    h = Harness(Upstream(status(500)), breaker=CircuitBreakerConfig(failure_threshold=1))
    for _ in range(3):
        with pytest.raises(CloudHTTPError) as info:
            await h.client.complete(chat(), max_tokens=5)
    assert type(info.value) is CloudHTTPError and info.value.status_code == 502
    assert len(h.upstream.requests) == 3
    assert h.client.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("code", [502, 503, 504])
async def test_gateway_statuses_are_breaker_evidence(code: int) -> None:
    h = Harness(
        Upstream(status(code)),
        retries=CloudRetries(max_attempts=1),
        breaker=CircuitBreakerConfig(failure_threshold=1),
    )
    with pytest.raises(CloudHTTPError):
        await h.client.complete(chat(), max_tokens=5)
    assert h.client.breaker.state is BreakerState.OPEN


def test_is_request_fault() -> None:
    assert is_request_fault("x", "400") and is_request_fault("x", "422")
    assert is_request_fault("x", "BadRequestError") and is_request_fault("x", "context_length_exceeded")
    assert is_request_fault("answered 500: [json.exception.parse_error.101] bad", "500")
    assert not is_request_fault("x", None) and not is_request_fault("x", "500")
    assert not is_request_fault("x", "429") and not is_request_fault("engine dead", "server_error")


async def test_429_is_passed_on_with_retry_after_and_is_not_breaker_evidence() -> None:
    h = Harness(
        Upstream(status(429, headers={"Retry-After": "7"})),
        retries=CloudRetries(max_attempts=2),
        breaker=CircuitBreakerConfig(failure_threshold=1),
    )
    with pytest.raises(CloudRateLimited) as info:
        await h.client.complete(chat(), max_tokens=5)
    error = info.value
    assert (error.status_code, error.code, error.upstream_status) == (429, "rate_limit_exceeded", 429)
    assert error.headers == {"retry-after": "7"}
    assert len(h.upstream.requests) == 2 and h.sleep.waits == [7.0]  # honoured once, then given up
    assert h.client.breaker.state is BreakerState.CLOSED
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    with pytest.raises(CloudRateLimited) as info:
        await stream.__anext__()
    assert info.value.headers == {"retry-after": "7"}
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_connect_error_is_unavailable_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-secret")
    h = Harness(Upstream(raises(httpx.ConnectError, "connection refused")))
    with pytest.raises(CloudUnavailable) as info:
        await h.client.complete(chat(), max_tokens=5)
    assert URL in info.value.message
    assert "sk-secret" not in str(info.value)
    assert len(h.upstream.requests) == 3
    assert len(h.sleep.waits) == 2


async def test_remote_protocol_error_retried() -> None:
    h = Harness(Upstream(raises(httpx.RemoteProtocolError), ok()))
    await h.client.complete(chat(), max_tokens=5)
    assert len(h.upstream.requests) == 2


async def test_read_timeout_is_cloud_timeout_not_retried() -> None:
    h = Harness(Upstream(raises(httpx.ReadTimeout, "read timed out")))
    with pytest.raises(CloudTimeout):
        await h.client.complete(chat(), max_tokens=5)
    assert len(h.upstream.requests) == 1
    assert h.sleep.waits == []
    assert h.client.breaker.failures == 1


async def test_no_retry_when_the_wait_would_pass_the_deadline() -> None:
    h = Harness(
        Upstream(status(503, headers={"Retry-After": "5"}), ok()),
        timeouts=CloudTimeouts(total=3.0),
    )
    with pytest.raises(CloudBackendError):
        await h.client.complete(chat(), max_tokens=5)
    assert len(h.upstream.requests) == 1
    assert h.sleep.waits == []


async def test_total_deadline_bounds_a_slow_upstream() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=completion())

    h = Harness(Upstream(ok()), transport=httpx.MockTransport(slow), timeouts=CloudTimeouts(total=0.05))
    with pytest.raises(CloudTimeout, match="did not answer within"):
        await h.client.complete(chat(), max_tokens=5)
    assert h.client.breaker.failures == 1


async def test_invalid_body_is_backend_error() -> None:
    h = Harness(Upstream(lambda request: httpx.Response(200, text="<html>oops</html>")))
    with pytest.raises(CloudBackendError, match="invalid response"):
        await h.client.complete(chat(), max_tokens=5)
    h = Harness(Upstream(ok({"model": "m", "choices": "nope"})))
    with pytest.raises(CloudBackendError, match="invalid response"):
        await h.client.complete(chat(), max_tokens=5)


# -- breaker ----------------------------------------------------------------------------------------


async def test_breaker_opens_after_threshold_then_fails_fast() -> None:
    h = Harness(
        Upstream(status(503)),
        retries=CloudRetries(max_attempts=1),
        breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_s=30.0),
    )
    for _ in range(2):
        with pytest.raises(CloudBackendError):
            await h.client.complete(chat(), max_tokens=5)
    assert h.client.breaker.state is BreakerState.OPEN
    assert h.client.health().available is False
    assert h.client.health().detail == "circuit open"
    with pytest.raises(CloudUnavailable, match="circuit breaker"):
        await h.client.complete(chat(), max_tokens=5)
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    with pytest.raises(CloudUnavailable):
        await stream.__anext__()
    assert len(h.upstream.requests) == 2


async def test_half_open_probe_after_cooldown() -> None:
    h = Harness(
        Upstream(status(502), status(504), status(503), ok()),
        retries=CloudRetries(max_attempts=1),
        breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_s=30.0),
    )
    for _ in range(2):
        with pytest.raises(CloudBackendError):
            await h.client.complete(chat(), max_tokens=5)
    h.clock.now += 30.0
    assert h.client.health().available is True  # cooldown passed: a probe may go out
    # The probe fails (a 503): open again, with a fresh cooldown.
    with pytest.raises(CloudBackendError):
        await h.client.complete(chat(), max_tokens=5)
    assert h.client.breaker.state is BreakerState.OPEN
    assert h.client.breaker.retry_at == h.clock.now + 30.0
    with pytest.raises(CloudUnavailable):
        await h.client.complete(chat(), max_tokens=5)
    # The next probe succeeds: closed.
    h.clock.now += 30.0
    await h.client.complete(chat(), max_tokens=5)
    assert h.client.breaker.state is BreakerState.CLOSED
    assert h.client.health().available is True
    assert len(h.upstream.requests) == 4


class RecoveringUpstream:
    """Answers 503 while `down`; then holds each request until `gate` opens and answers `then`."""

    def __init__(self) -> None:
        self.down = True
        self.gate = asyncio.Event()
        self.then = 200
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            return httpx.Response(503, json={"error": {"message": "down"}})
        await self.gate.wait()
        if self.then != 200:
            return httpx.Response(self.then, json={"error": {"message": "still down"}})
        return httpx.Response(200, json=completion())


async def half_open(upstream: RecoveringUpstream, **config: Any) -> Harness:
    """A client whose breaker opened on a 503 and whose cooldown has just passed; the endpoint is back."""
    h = Harness(
        Upstream(ok()),
        transport=httpx.MockTransport(upstream),
        retries=CloudRetries(max_attempts=1),
        breaker=CircuitBreakerConfig(failure_threshold=1, cooldown_s=30.0),
        **config,
    )
    with pytest.raises(CloudHTTPError):
        await h.client.complete(chat(), max_tokens=5)
    assert h.client.breaker.state is BreakerState.OPEN
    upstream.down = False
    h.clock.now += 30.0
    return h


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_half_open_calls_wait_for_the_probe_and_all_go_when_it_succeeds() -> None:
    upstream = RecoveringUpstream()
    h = await half_open(upstream)
    calls = [asyncio.create_task(h.client.complete(chat(), max_tokens=5)) for _ in range(5)]
    await settle()
    assert upstream.requests == 2  # the 503, then the one probe: the others wait, none is refused
    assert h.client.breaker.probing and not any(call.done() for call in calls)
    upstream.gate.set()
    answers = await asyncio.gather(*calls)
    assert all(a.choices[0].message.content == "Hello!" for a in answers)
    assert upstream.requests == 6
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_half_open_streams_wait_for_the_probe_too() -> None:
    upstream = RecoveringUpstream()
    h = await half_open(upstream)
    upstream.then = 503
    probe = asyncio.create_task(anext(h.client.stream(chat(stream=True), max_tokens=5)))
    await settle()
    waiting = asyncio.create_task(anext(h.client.stream(chat(stream=True), max_tokens=5)))
    await settle()
    assert not waiting.done() and upstream.requests == 2
    upstream.gate.set()
    with pytest.raises(CloudHTTPError):
        await probe
    with pytest.raises(CloudUnavailable, match="circuit breaker"):
        await waiting
    assert upstream.requests == 2


async def test_half_open_calls_are_refused_when_the_probe_fails() -> None:
    upstream = RecoveringUpstream()
    h = await half_open(upstream)
    upstream.then = 503
    calls = [asyncio.create_task(h.client.complete(chat(), max_tokens=5)) for _ in range(4)]
    await settle()
    upstream.gate.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[0], CloudHTTPError)  # the probe
    assert all(isinstance(o, CloudUnavailable) and "circuit breaker" in str(o) for o in outcomes[1:])
    assert upstream.requests == 2  # no call but the probe reached the endpoint
    assert h.client.breaker.state is BreakerState.OPEN


async def test_a_wait_for_the_probe_is_bounded_by_the_calls_deadline() -> None:
    upstream = RecoveringUpstream()  # the gate never opens: the probe hangs
    h = await half_open(upstream, timeouts=CloudTimeouts(connect=0.1, read=0.1, total=0.2))
    calls = [asyncio.create_task(h.client.complete(chat(), max_tokens=5)) for _ in range(3)]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=5)
    assert isinstance(outcomes[0], CloudTimeout), outcomes  # the probe
    # A wait ends at its own deadline, or sooner when the probe's timeout opens the breaker first (a
    # race on a loaded machine: both deadlines are 0.2 s): never later.
    assert all(isinstance(o, CloudTimeout | CloudUnavailable) for o in outcomes[1:]), outcomes
    assert upstream.requests == 2
    assert h.client.breaker.state is BreakerState.OPEN  # the probe's timeout counted; the waits did not
    assert h.client.breaker.failures == 2


async def test_a_cancelled_probe_hands_the_probe_to_a_waiting_call() -> None:
    upstream = RecoveringUpstream()
    h = await half_open(upstream)
    probe = asyncio.create_task(h.client.complete(chat(), max_tokens=5))
    await settle()
    waiting = asyncio.create_task(h.client.complete(chat(), max_tokens=5))
    await settle()
    probe.cancel()
    await settle()
    assert upstream.requests == 3 and h.client.breaker.probing  # the waiting call is the probe now
    upstream.gate.set()
    assert (await waiting).choices[0].message.content == "Hello!"
    assert h.client.breaker.state is BreakerState.CLOSED


# -- not configured ---------------------------------------------------------------------------------


async def test_not_configured() -> None:
    h = Harness(Upstream(ok()), url=None)
    health = h.client.health()
    assert health.available is False
    assert health.detail == "not configured"
    with pytest.raises(CloudUnavailable, match="not configured"):
        await h.client.complete(chat(), max_tokens=5)
    with pytest.raises(CloudUnavailable):
        await h.client.stream(chat(stream=True), max_tokens=5).__anext__()
    assert h.upstream.requests == []


# -- stream -----------------------------------------------------------------------------------------


async def test_stream_happy_path_with_usage_and_done() -> None:
    usage = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "big-model",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    body = (
        b": keep-alive\n\n"
        + sse(chunk(role=True), chunk("Hel"), chunk("lo"), chunk(finish="stop"), usage, "[DONE]")
        + sse(chunk("after done"))
    )
    h = Harness(Upstream(lambda request: httpx.Response(200, content=body)))
    request = chat(stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in h.client.stream(request, max_tokens=32)]
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[3].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7
    assert len(chunks) == 5
    sent = h.upstream.body()
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "big-model"
    assert sent["max_tokens"] == 32
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_stream_error_event_mid_stream() -> None:
    body = sse(chunk(role=True), {"error": {"message": "engine died", "type": "server_error"}})
    h = Harness(Upstream(lambda request: httpx.Response(200, content=body)))
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    first = await stream.__anext__()
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(CloudBackendError, match="engine died"):
        await stream.__anext__()
    assert h.client.breaker.failures == 1


async def test_stream_error_event_first_raises_on_first_anext() -> None:
    body = sse({"error": {"message": "model not loaded"}})
    h = Harness(Upstream(lambda request: httpx.Response(200, content=body)))
    with pytest.raises(CloudBackendError, match="model not loaded"):
        await h.client.stream(chat(stream=True), max_tokens=5).__anext__()


async def test_stream_502_before_stream_raises_on_first_anext() -> None:
    h = Harness(Upstream(status(502)), retries=CloudRetries(max_attempts=2))
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    with pytest.raises(CloudHTTPError) as info:
        await stream.__anext__()
    assert info.value.upstream_status == 502
    assert len(h.upstream.requests) == 2
    assert len(h.sleep.waits) == 1
    assert h.client.breaker.failures == 1


async def test_stream_500_before_stream_is_neither_retried_nor_counted() -> None:
    h = Harness(Upstream(status(500)), retries=CloudRetries(max_attempts=2))
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    with pytest.raises(CloudHTTPError) as info:
        await stream.__anext__()
    assert info.value.upstream_status == 500
    assert len(h.upstream.requests) == 1
    assert h.client.breaker.failures == 0


async def test_stream_503_then_success() -> None:
    h = Harness(Upstream(status(503), lambda request: httpx.Response(200, content=sse(chunk("x"), "[DONE]"))))
    chunks = [c async for c in h.client.stream(chat(stream=True), max_tokens=5)]
    assert [c.choices[0].delta.content for c in chunks] == ["x"]
    assert len(h.upstream.requests) == 2


async def test_stream_read_timeout_between_chunks() -> None:
    body = ScriptedStream([sse(chunk(role=True))], httpx.ReadTimeout("stalled"))
    h = Harness(Upstream(streaming(body)))
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    await stream.__anext__()
    with pytest.raises(CloudTimeout, match="mid-stream"):
        await stream.__anext__()
    assert body.closed
    assert h.client.breaker.failures == 1


@pytest.mark.parametrize("error", [httpx.RemoteProtocolError("peer closed"), httpx.ReadError("reset")])
async def test_stream_dropped_mid_stream(error: Exception) -> None:
    body = ScriptedStream([sse(chunk(role=True), chunk("a"))], error)
    h = Harness(Upstream(streaming(body)))
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    got = [await stream.__anext__(), await stream.__anext__()]
    assert got[1].choices[0].delta.content == "a"
    with pytest.raises(CloudBackendError, match="broke off"):
        await stream.__anext__()
    assert body.closed


async def test_streams_cut_after_their_first_chunk_open_the_breaker() -> None:
    # The first chunks, then the end: no finish_reason, no [DONE]. Each stream is one failure; its
    # first chunk is no success that would wipe the count (issue 15: cuts never opened the breaker).
    def cut(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(chunk(role=True), chunk("a")))

    h = Harness(Upstream(cut), breaker=CircuitBreakerConfig(failure_threshold=2))
    for failures in (1, 2):
        stream = h.client.stream(chat(stream=True), max_tokens=5)
        assert (await stream.__anext__()).choices[0].delta.role == "assistant"
        assert h.client.breaker.failures == failures - 1  # the first chunk changed nothing
        await stream.__anext__()
        with pytest.raises(CloudStreamCut):
            await stream.__anext__()
        assert h.client.breaker.failures == failures
    assert h.client.breaker.state is BreakerState.OPEN


async def test_a_stream_that_ends_whole_resets_the_breakers_count() -> None:
    whole = sse(chunk(role=True), chunk("a"), chunk(finish="stop"), "[DONE]")
    h = Harness(
        Upstream(status(503), lambda request: httpx.Response(200, content=whole)),
        retries=CloudRetries(max_attempts=1),
        breaker=CircuitBreakerConfig(failure_threshold=3),
    )
    with pytest.raises(CloudHTTPError):
        await h.client.stream(chat(stream=True), max_tokens=5).__anext__()
    assert h.client.breaker.failures == 1
    assert [c.choices[0].finish_reason async for c in h.client.stream(chat(stream=True), max_tokens=5)][-1]
    assert h.client.breaker.failures == 0


async def test_stream_ending_before_any_chunk_is_an_error() -> None:
    h = Harness(Upstream(lambda request: httpx.Response(200, content=b": nothing\n\n")))
    with pytest.raises(CloudBackendError, match="before any chunk"):
        await h.client.stream(chat(stream=True), max_tokens=5).__anext__()


async def test_stream_first_chunk_bounded_by_total_deadline() -> None:
    body = ScriptedStream([sse(chunk("late"))], delay=5.0)
    h = Harness(Upstream(streaming(body)), timeouts=CloudTimeouts(total=0.05))
    with pytest.raises(CloudTimeout):
        await h.client.stream(chat(stream=True), max_tokens=5).__anext__()
    assert body.closed


async def test_stream_closed_early_by_consumer_closes_response() -> None:
    body = ScriptedStream([sse(chunk(role=True), chunk("a"), chunk("b"), "[DONE]")])
    h = Harness(Upstream(streaming(body)))
    stream = cast(AsyncGenerator[ChatCompletionChunk, None], h.client.stream(chat(stream=True), max_tokens=5))
    await stream.__anext__()
    assert not body.closed
    await stream.aclose()
    assert body.closed
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_aclose_closes_the_client() -> None:
    h = Harness(Upstream(ok()))
    await h.client.complete(chat(), max_tokens=5)
    client = h.client._http.client
    assert client is not None
    await h.client.aclose()
    assert client.is_closed
    await h.client.aclose()  # idempotent


async def test_stream_cut_without_finish_or_done_is_a_breaker_failure() -> None:
    # A body that just stops mid-answer (no finish_reason, no [DONE]) was cut, not finished.
    body = ScriptedStream([sse(chunk(role=True), chunk("Hel"))])
    h = Harness(Upstream(streaming(body)))
    stream = h.client.stream(chat(stream=True), max_tokens=5)
    assert (await stream.__anext__()).choices[0].delta.role == "assistant"
    await stream.__anext__()
    with pytest.raises(CloudStreamCut, match="cut the stream off"):
        await stream.__anext__()
    assert h.client.breaker.failures == 1
    # A body that ends after its finish_reason, without [DONE], is complete.
    body = ScriptedStream([sse(chunk(role=True), chunk("Hi"), chunk(finish="stop"))])
    h = Harness(Upstream(streaming(body)))
    assert len([c async for c in h.client.stream(chat(stream=True), max_tokens=5)]) == 3
    assert h.client.breaker.failures == 0


def test_the_upstream_pool_is_sized_by_the_cloud_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from hyrouter.router._openai_client import HTTPPool

    assert HTTPPool().for_httpx() == httpx.Limits(max_connections=100, max_keepalive_connections=20)
    made: list[httpx.Limits] = []
    real = httpx.AsyncClient

    def spy(*args: Any, limits: httpx.Limits, **kw: Any) -> httpx.AsyncClient:
        made.append(limits)
        return real(*args, limits=limits, **kw)

    monkeypatch.setattr(httpx, "AsyncClient", spy)
    pool = {"max_connections": 64, "max_keepalive_connections": 48, "keepalive_expiry_s": 30.0}
    config = CloudConfig.model_validate({"url": "http://gpu.invalid/v1", "pool": pool})
    endpoint = CloudEndpointClient(config)

    async def open_and_close() -> None:
        await endpoint._http._http()
        await endpoint.aclose()

    asyncio.run(open_and_close())
    assert made == [httpx.Limits(max_connections=64, max_keepalive_connections=48, keepalive_expiry=30.0)]
