"""The one OpenAI HTTP client (router/_openai_client.py) on `httpx.MockTransport`: no network, no waits."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from hyrouter.router._config import CloudRetries
from hyrouter.router._errors import (
    AuthenticationError,
    CloudBackendError,
    CloudStreamCut,
    CloudTimeout,
    CloudUnavailable,
    ContextLengthExceeded,
    ModelNotFound,
    PayloadTooLarge,
    RequestError,
    RouterError,
)
from hyrouter.router._openai_client import (
    RETRY_STATUSES,
    HTTPTimeouts,
    OpenAIHTTPClient,
    RetryPolicy,
    chat_body,
    error_for_status,
)
from hyrouter.router._wire import ChatCompletionRequest

pytestmark = pytest.mark.anyio

URL = "http://llm.test/v1"
Step = Callable[[httpx.Request], httpx.Response]
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": False}


class LinkDown(CloudUnavailable):
    """A caller's own class for failures of the network (as the device's `CloudUnreachable`)."""


class Script:
    """A scripted server: each request gets the next step, the last one repeats; time is fake."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[httpx.Request] = []
        self.now = 100.0
        self.waits: list[float] = []
        self.outcomes: list[BaseException | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.steps[min(len(self.requests), len(self.steps)) - 1](request)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def client(self, **options: Any) -> OpenAIHTTPClient:
        settings: dict[str, Any] = {
            "base_url": URL,
            "name": "test server",
            "retry": RetryPolicy(max_attempts=3, backoff_base_s=0.1, backoff_max_s=1.0),
            "transport": httpx.MockTransport(self),
            "sleep": self.sleep,
            "clock": lambda: self.now,
            "rng": random.Random(3),
            "on_outcome": self.outcomes.append,
        }
        settings.update(options)
        return OpenAIHTTPClient(**settings)


def completion(content: str = "Hello!") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=completion())


def status(code: int, headers: dict[str, str] | None = None, code_name: str = "x") -> Step:
    error = {"error": {"message": f"says {code}", "type": "t", "code": code_name}}
    return lambda request: httpx.Response(code, json=error, headers=headers)


def raises(exc_type: type[httpx.RequestError]) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return step


def chunk(content: str) -> str:
    delta = {"content": content}
    event = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return json.dumps({**event, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


class Body(httpx.AsyncByteStream):
    """An SSE body that sends `events` and then raises `error`, if any."""

    def __init__(self, *events: str, error: Exception | None = None) -> None:
        self.events, self.error = events, error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield f"data: {event}\n\n".encode()
        if self.error is not None:
            raise self.error


def sse(body: httpx.AsyncByteStream) -> Step:
    return lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


# -- which failures are retried --------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(RETRY_STATUSES))
async def test_each_retried_status_gets_another_attempt(code: int) -> None:
    script = Script(status(code), ok)
    answer = await script.client().complete(BODY)
    assert answer.choices[0].message.content == "Hello!"
    assert len(script.requests) == 2 and len(script.waits) == 1
    assert script.outcomes == [None]


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 413, 422, 500, 501])
async def test_other_statuses_are_not_retried(code: int) -> None:
    script = Script(status(code), ok)
    with pytest.raises(RouterError, match=f"test server {URL} answered {code}: says {code}"):
        await script.client().complete(BODY)
    assert len(script.requests) == 1 and script.waits == []


async def test_the_retried_statuses_are_a_parameter() -> None:
    script = Script(status(500), ok)
    await script.client(retry=RetryPolicy(statuses=RETRY_STATUSES | {500})).complete(BODY)
    assert len(script.requests) == 2
    script = Script(status(503), ok)
    with pytest.raises(CloudUnavailable):
        await script.client(retry=RetryPolicy(statuses=frozenset())).complete(BODY)
    assert len(script.requests) == 1


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError])
async def test_failures_before_any_answer_are_retried(error: type[httpx.RequestError]) -> None:
    script = Script(raises(error), ok)
    await script.client().complete(BODY)
    assert len(script.requests) == 2


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout])
async def test_a_server_that_hangs_is_not_retried(error: type[httpx.RequestError]) -> None:
    script = Script(raises(error), ok)
    with pytest.raises(CloudTimeout, match="timed out before answering"):
        await script.client().complete(BODY)
    assert len(script.requests) == 1


async def test_giving_up_says_how_many_attempts() -> None:
    script = Script(raises(httpx.ConnectError))
    with pytest.raises(CloudUnavailable, match=r"is unreachable: .*\(after 3 attempts\)"):
        await script.client().complete(BODY)
    assert len(script.requests) == 3 and len(script.waits) == 2
    assert isinstance(script.outcomes[0], CloudUnavailable)


def test_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=1.5)
    assert [policy.delay(n, None, Top()) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]
    assert 0 <= policy.delay(1, None, random.Random()) <= 0.5
    assert RetryPolicy.from_config(CloudRetries(max_attempts=7)) == RetryPolicy(max_attempts=7)


# -- Retry-After and the deadline ------------------------------------------------------------------


async def test_retry_after_is_honoured() -> None:
    script = Script(status(429, {"Retry-After": "7"}), ok)
    await script.client().complete(BODY)
    assert script.waits == [7.0]


async def test_an_error_keeps_the_retry_after_it_came_with() -> None:
    script = Script(status(429, {"Retry-After": "7"}))
    with pytest.raises(CloudBackendError) as info:
        await script.client(retry=RetryPolicy(max_attempts=2)).complete(BODY)
    assert info.value.headers == {"retry-after": "7"}
    for headers in ({}, {"Retry-After": "soon"}):
        script = Script(status(503, headers))
        with pytest.raises(CloudBackendError) as info:
            await script.client(retry=RetryPolicy(max_attempts=1)).complete(BODY)
        assert info.value.headers == {}  # none, or none a client could read


async def test_retry_after_is_capped() -> None:
    script = Script(status(503, {"Retry-After": "3600"}), ok)
    await script.client(retry=RetryPolicy(retry_after_max_s=5.0)).complete(BODY)
    assert script.waits == [5.0]


async def test_the_deadline_spans_all_retries() -> None:
    # Each wait is 0.4 s: after two, a third would end past the 1 s deadline, so the call gives up.
    script = Script(status(503, {"Retry-After": "0.4"}))
    client = script.client(retry=RetryPolicy(max_attempts=10), timeouts=HTTPTimeouts(total=1.0))
    with pytest.raises(CloudUnavailable, match=r"answered 503.*\(after 3 attempts\)"):
        await client.complete(BODY)
    assert script.waits == [0.4, 0.4] and len(script.requests) == 3


async def test_the_deadline_bounds_a_slow_server() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok(request)

    script = Script(ok)
    client = script.client(transport=httpx.MockTransport(slow), timeouts=HTTPTimeouts(total=0.05))
    with pytest.raises(CloudTimeout, match=r"did not answer within 0\.05s"):
        await client.complete(BODY)
    client = script.client(
        transport=httpx.MockTransport(slow), timeouts=HTTPTimeouts(total=0.05), network_error=LinkDown
    )
    with pytest.raises(LinkDown, match="did not answer within"):
        await client.complete(BODY)


# -- error mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name", "error"),
    [
        (400, "x", RequestError),
        (400, "context_length_exceeded", ContextLengthExceeded),
        (401, "x", AuthenticationError),
        (404, "x", ModelNotFound),
        (413, "x", PayloadTooLarge),
        (429, "x", CloudBackendError),
        (500, "x", CloudBackendError),
        (503, "x", CloudUnavailable),
        (504, "x", CloudTimeout),
    ],
)
async def test_error_statuses_map_to_the_router_error_tree(
    code: int, name: str, error: type[RouterError]
) -> None:
    script = Script(status(code, code_name=name))
    with pytest.raises(RouterError) as info:
        await script.client(retry=RetryPolicy(max_attempts=1)).complete(BODY)
    assert type(info.value) is error
    assert type(error_for_status(code, "m", name)) is error


async def test_an_error_body_that_is_not_json_is_quoted() -> None:
    script = Script(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(CloudBackendError, match="answered 502: <html>Bad Gateway</html>"):
        await script.client(retry=RetryPolicy(max_attempts=1)).complete(BODY)


async def test_a_caller_maps_statuses_and_network_failures_its_own_way() -> None:
    seen: list[tuple[int, str | None]] = []

    def mine(code: int, message: str, name: str | None) -> RouterError:
        seen.append((code, name))
        return RequestError(message)

    script = Script(status(418, code_name="teapot"))
    with pytest.raises(RequestError):
        await script.client(status_error=mine).complete(BODY)
    assert seen == [(418, "teapot")]
    script = Script(raises(httpx.ReadTimeout))
    with pytest.raises(LinkDown, match="timed out"):
        await script.client(network_error=LinkDown).complete(BODY)


async def test_an_invalid_body_is_a_backend_error_and_a_missing_model_can_be_filled_in() -> None:
    script = Script(lambda request: httpx.Response(200, text="<html>"))
    with pytest.raises(CloudBackendError, match="invalid response"):
        await script.client().complete(BODY)
    nameless = {k: v for k, v in completion().items() if k != "model"}
    script = Script(lambda request: httpx.Response(200, json=nameless))
    assert (await script.client(default_model="big").complete(BODY)).model == "big"


async def test_not_configured_fails_without_network() -> None:
    script = Script(ok)
    with pytest.raises(CloudUnavailable, match="test server is not configured"):
        await script.client(base_url=None).complete(BODY)
    assert script.requests == []


# -- SSE -------------------------------------------------------------------------------------------


async def test_stream_relays_chunks_until_done() -> None:
    script = Script(sse(Body(chunk("a"), chunk("b"), "[DONE]", chunk("after"))))
    chunks = [c.choices[0].delta.content async for c in script.client().stream({**BODY, "stream": True})]
    assert chunks == ["a", "b"] and script.outcomes == [None]


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (httpx.ReadError("reset"), CloudBackendError, "broke off mid-stream"),
        (httpx.RemoteProtocolError("peer closed"), CloudBackendError, "broke off mid-stream"),
        (httpx.ReadTimeout("stalled"), CloudTimeout, "timed out mid-stream"),
    ],
)
async def test_a_stream_broken_after_its_first_chunk(
    error: Exception, raised: type[Exception], message: str
) -> None:
    script = Script(sse(Body(chunk("a"), error=error)))
    stream = script.client().stream(BODY)
    assert (await anext(stream)).choices[0].delta.content == "a"
    with pytest.raises(raised, match=message):
        await anext(stream)
    assert script.outcomes[0] is None and isinstance(script.outcomes[1], raised)  # reported again
    script = Script(sse(Body(chunk("a"), error=error)))
    stream = script.client(network_error=LinkDown).stream(BODY)
    await anext(stream)
    with pytest.raises(LinkDown, match=message):
        await anext(stream)


def finish() -> str:
    event = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return json.dumps({**event, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})


async def test_a_stream_cut_before_done() -> None:
    script = Script(sse(Body(chunk("a"), finish())))
    assert [c async for c in script.client().stream(BODY)]  # a body that ends after a finish is the end...
    script = Script(sse(Body(chunk("a"))))
    stream = script.client().stream(BODY)
    await anext(stream)
    with pytest.raises(CloudStreamCut, match="cut the stream off"):  # ...one that just stops was cut...
        await anext(stream)
    assert script.outcomes[0] is None and isinstance(script.outcomes[1], CloudStreamCut)
    assert CloudStreamCut("x").code == "cloud_stream_cut"
    script = Script(sse(Body(chunk("a"), finish())))
    stream = script.client(require_done=True, network_error=LinkDown).stream(BODY)
    await anext(stream)
    await anext(stream)
    with pytest.raises(LinkDown, match=r"cut the stream off before data: \[DONE\]"):  # ...and so is one
        await anext(stream)  # that ends after its finish_reason where [DONE] is due


async def test_a_stream_that_fails_to_start_raises_on_the_first_chunk() -> None:
    script = Script(sse(Body("[DONE]")))
    with pytest.raises(CloudBackendError, match="before any chunk"):
        await anext(script.client().stream(BODY))
    script = Script(sse(Body('{"error": {"message": "engine died"}}')))
    with pytest.raises(CloudBackendError, match="engine died"):
        await anext(script.client().stream(BODY))
    script = Script(status(502), sse(Body(chunk("x"), "[DONE]")))
    assert [c.choices[0].delta.content async for c in script.client().stream(BODY)] == ["x"]
    assert len(script.requests) == 2


class RawBody(httpx.AsyncByteStream):
    """An SSE body sent as written, in pieces that split its lines anywhere."""

    def __init__(self, text: str, piece: int = 7) -> None:
        self.data, self.piece = text.encode(), piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.piece):
            yield self.data[start : start + self.piece]


async def test_a_data_field_over_several_lines_is_one_event() -> None:
    first, rest = chunk("multi").split(', "choices"')
    text = (
        ": keep-alive\n\n"
        f'id: 1\nevent: message\ndata: {first},\ndata:  "choices"{rest}\n\n'
        f"data: {finish()}\r\n\r\ndata: [DONE]\n\n"
    )
    script = Script(sse(RawBody(text)))
    chunks = [c async for c in script.client(require_done=True).stream(BODY)]
    assert [c.choices[0].delta.content for c in chunks] == ["multi", None]


async def test_an_error_event_is_the_servers_error() -> None:
    text = f'data: {chunk("a")}\n\nevent: error\ndata: {{"message": "GPU overloaded"}}\n\n'
    stream = Script(sse(RawBody(text))).client().stream(BODY)
    assert (await anext(stream)).choices[0].delta.content == "a"
    with pytest.raises(CloudBackendError, match="sent an error: GPU overloaded"):
        await anext(stream)


# -- hooks, probe, clients per loop ------------------------------------------------------------------


async def test_admit_can_refuse_a_call_before_any_network() -> None:
    async def refuse() -> None:
        raise CloudUnavailable("breaker open")

    script = Script(ok)
    with pytest.raises(CloudUnavailable, match="breaker open"):
        await script.client(admit=refuse).complete(BODY)
    with pytest.raises(CloudUnavailable, match="breaker open"):
        await anext(script.client(admit=refuse).stream(BODY))
    assert script.requests == [] and script.outcomes == []


async def test_a_cancelled_call_is_reported_as_such() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok(request)

    script = Script(ok)
    task = asyncio.create_task(script.client(transport=httpx.MockTransport(hang)).complete(BODY))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(script.outcomes[0], asyncio.CancelledError)


async def test_the_api_key_is_read_at_each_call_and_sent_as_a_bearer_token() -> None:
    keys = iter(["k1", None])
    script = Script(ok)
    client = script.client(api_key=lambda: next(keys), headers={"User-Agent": "ua"})
    await client.complete(BODY)
    await client.complete(BODY)
    assert script.requests[0].headers["authorization"] == "Bearer k1"
    assert "authorization" not in script.requests[1].headers
    assert script.requests[0].headers["user-agent"] == "ua"
    assert str(script.requests[0].url) == f"{URL}/chat/completions"


async def test_probe_measures_a_round_trip_and_maps_link_failures() -> None:
    script = Script(status(404))
    assert await script.client().probe(timeout_s=1.0) >= 0  # any status: the network carried it
    assert script.requests[0].url.path == "/v1/models"
    script = Script(raises(httpx.ConnectError))
    with pytest.raises(LinkDown, match="is unreachable"):
        await script.client(network_error=LinkDown).probe(timeout_s=1.0)


def test_each_event_loop_gets_its_own_http_client() -> None:
    script = Script(ok)
    client = script.client()
    seen = []
    for _ in range(2):
        asyncio.run(client.complete(BODY))
        seen.append(client.client)
    assert seen[0] is not seen[1] and seen[0] is not None and seen[0].is_closed is False
    asyncio.run(client.aclose())


def test_chat_body() -> None:
    request = ChatCompletionRequest.model_validate(
        {**BODY, "model": "x", "max_completion_tokens": 9, "stream_options": {"include_usage": True}}
    )
    body = chat_body(request, model="big", stream=False, max_tokens=4)
    assert (body["model"], body["max_tokens"], body["stream"]) == ("big", 4, False)
    assert "max_completion_tokens" not in body and "stream_options" not in body
    streamed = chat_body(request, model="big", stream=True)
    assert streamed["max_completion_tokens"] == 9 and streamed["stream_options"] == {"include_usage": True}
