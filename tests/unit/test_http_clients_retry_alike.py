"""The GPU endpoint client and the device's escalation retry the same way: they share one HTTP client.

Each scripted failure is played to both, with the same retry settings, deadline and random seed; the
requests sent, the waits between them and the outcome must be the same. There is no difference
left: the GPU client used to retry a 500 too, and no longer does (a 500 is most often the request's
own fault; see `hyrouter.cloud.endpoint`).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from hyrouter.cloud.endpoint import GPU_RETRY_STATUSES, CloudEndpointClient
from hyrouter.edge._escalation import EscalationClient
from hyrouter.edge._sdk_config import CloudLink
from hyrouter.router._config import CloudConfig, CloudRetries, CloudTimeouts
from hyrouter.router._openai_client import RETRY_STATUSES
from hyrouter.router._wire import ChatCompletionRequest

pytestmark = pytest.mark.anyio

URL = "http://llm.test/v1"
RETRIES = CloudRetries(max_attempts=3, backoff_base_s=0.1, backoff_max_s=1.0)
DEADLINE_S = 3.0
Step = Callable[[httpx.Request], httpx.Response]


def ok(request: httpx.Request) -> httpx.Response:
    message = {"role": "assistant", "content": "hi"}
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"message": message}],
        },
    )


def status(code: int, headers: dict[str, str] | None = None) -> Step:
    return lambda request: httpx.Response(code, json={"error": {"message": "no"}}, headers=headers)


def raises(exc_type: type[httpx.RequestError]) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return step


class Run:
    """What one client did against a script: requests sent, waits, and whether it got an answer."""

    def __init__(self, *steps: Step) -> None:
        self.steps, self.requests, self.waits, self.now = steps, 0, list[float](), 0.0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.steps[min(self.requests, len(self.steps)) - 1](request)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def injected(self) -> dict[str, Any]:
        return {
            "transport": httpx.MockTransport(self.handle),
            "sleep": self.sleep,
            "clock": lambda: self.now,
            "rng": random.Random(11),
        }


async def gpu(run: Run) -> Any:
    config = CloudConfig(url=URL, model="m", retries=RETRIES, timeouts=CloudTimeouts(total=DEADLINE_S))
    client = CloudEndpointClient(config, **run.injected())
    try:
        return await client.complete(chat(), max_tokens=4)
    finally:
        await client.aclose()


async def device(run: Run) -> Any:
    link = CloudLink(url=URL, model="m", retries=RETRIES, deadline_s=DEADLINE_S)
    client = EscalationClient(link, **run.injected())
    try:
        return await client.complete(chat())
    finally:
        await client.aclose()


def chat() -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}])


async def play(
    call: Callable[[Run], Awaitable[Any]], steps: tuple[Step, ...]
) -> tuple[int, list[float], bool]:
    run = Run(*steps)
    try:
        await call(run)
    except Exception:
        return run.requests, run.waits, False
    return run.requests, run.waits, True


SCRIPTS: dict[str, tuple[tuple[Step, ...], int, bool]] = {
    # name: (steps, requests sent, answered)
    "connect error, then ok": ((raises(httpx.ConnectError), ok), 2, True),
    "connect timeout, then ok": ((raises(httpx.ConnectTimeout), ok), 2, True),
    "dropped before any answer, then ok": ((raises(httpx.RemoteProtocolError), ok), 2, True),
    "429, then ok": ((status(429), ok), 2, True),
    "502, then ok": ((status(502), ok), 2, True),
    "503 twice, then ok": ((status(503), status(503), ok), 3, True),
    "504 always": ((status(504),), 3, False),
    "Retry-After 1.5, then ok": ((status(503, {"Retry-After": "1.5"}), ok), 2, True),
    "Retry-After past the deadline": ((status(503, {"Retry-After": "5"}), ok), 1, False),
    "read timeout": ((raises(httpx.ReadTimeout), ok), 1, False),
    "400": ((status(400), ok), 1, False),
    "404": ((status(404), ok), 1, False),
}


@pytest.mark.parametrize("name", SCRIPTS)
async def test_both_clients_retry_alike(name: str) -> None:
    steps, requests, answered = SCRIPTS[name]
    by_gpu, by_device = await play(gpu, steps), await play(device, steps)
    assert by_gpu == by_device
    assert by_gpu[0] == requests and by_gpu[2] is answered
    assert len(by_gpu[1]) == requests - 1  # one wait between two attempts, none after the last


async def test_retry_after_is_waited_alike() -> None:
    steps = (status(429, {"Retry-After": "1.5"}), ok)
    assert (await play(gpu, steps))[1] == (await play(device, steps))[1] == [1.5]


async def test_neither_retries_a_500() -> None:
    assert GPU_RETRY_STATUSES == RETRY_STATUSES and 500 not in GPU_RETRY_STATUSES
    steps = (status(500), ok)
    assert (await play(gpu, steps))[0] == (await play(device, steps))[0] == 1
