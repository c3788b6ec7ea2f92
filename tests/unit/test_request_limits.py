"""Heavy and hostile requests: caps on messages and text, malformed input as 400s, CPU work off the loop.

Through the Starlette app with fake backends (TestClient); what a real server does with the
connection afterwards is in `tests/functional/test_bad_input.py`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud import routes
from hyrouter.cloud.app import create_app
from hyrouter.router import (
    ChatMessage,
    HeuristicEstimator,
    RequestError,
    RouterConfig,
    RoutingEngine,
    hash_api_key,
    parse_config,
)
from tests.fakes import FakeBackend

LIMITS = {"max_messages": 10, "max_prompt_chars": 1000}
CONFIG = parse_config(
    {
        "server": LIMITS,
        "tiers": {"free": {"cloud": "never"}},
        "api_keys": [{"sha256": hash_api_key("k-free"), "tenant": "a", "tier": "free"}],
    }
)
AUTH = {"authorization": "Bearer k-free", "content-type": "application/json"}
CHAT = "/v1/chat/completions"


def chat(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "hybrid-router", "messages": messages}


def users(count: int, text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text} for _ in range(count)]


class CountingBackend(FakeBackend):
    """Records every token count; `hold` makes a count wait (up to 5 s) until it is released."""

    def __init__(self, *, hold: bool = False) -> None:
        super().__init__("edge", reply="hello")
        self.counted = 0
        self.hold = hold
        self.counting, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        self.counted += 1
        self.counting.set()
        if self.hold:
            self.release.wait(timeout=5.0)  # stands in for a long tokenisation (blocking, like llama.cpp)
        self.finished.set()
        return super().count_tokens(messages)


@pytest.fixture
def edge() -> CountingBackend:
    return CountingBackend()


@pytest.fixture
def client(edge: CountingBackend) -> Iterator[TestClient]:
    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=edge)

    with TestClient(create_app(CONFIG, engine_factory=factory), raise_server_exceptions=False) as c:
        yield c


def assert_error(response: Any, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["type"] == "invalid_request_error" and error["code"] == code, error
    assert error["param"] == param, error


# -- item 1: caps before any counting, and the count off the event loop -------------------------


def test_the_message_and_text_caps_are_the_config_s_and_documented() -> None:
    defaults = RouterConfig().server
    assert defaults.max_messages == 2048 and defaults.max_prompt_chars == 400_000
    assert CONFIG.server.max_messages == 10


def test_at_the_caps_a_request_is_answered(client: TestClient, edge: CountingBackend) -> None:
    r = client.post(CHAT, json=chat(users(10, "x" * 100)), headers=AUTH)
    assert r.status_code == 200 and edge.counted == 1


def test_more_messages_than_the_cap_get_400_before_any_count(
    client: TestClient, edge: CountingBackend
) -> None:
    r = client.post(CHAT, json=chat(users(11)), headers=AUTH)
    assert_error(r, 400, "array_above_max_length", "messages")
    assert "11 messages" in r.json()["error"]["message"] and edge.counted == 0


def test_more_text_than_the_cap_gets_413_before_any_count(client: TestClient, edge: CountingBackend) -> None:
    parts = [{"type": "text", "text": "y" * 400}] * 2
    r = client.post(CHAT, json=chat([*users(1, "x" * 200), {"role": "user", "content": parts}]), headers=AUTH)
    assert_error(r, 413, "request_too_large", "messages")
    assert "1001 characters" in r.json()["error"]["message"] and edge.counted == 0


def test_healthz_answers_while_a_long_count_runs() -> None:
    # The count holds until released (at most 5 s): /healthz must be answered meanwhile, which it
    # cannot be when the count runs on the event loop. Ordering only, no absolute times.
    slow = CountingBackend(hold=True)

    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=slow)

    with (
        TestClient(create_app(CONFIG, engine_factory=factory)) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        big = pool.submit(client.post, CHAT, json=chat(users(10)), headers=AUTH)
        assert slow.counting.wait(timeout=10.0)
        health = client.get("/healthz")
        count_was_running = not slow.finished.is_set()
        slow.release.set()
        answer = big.result(timeout=30.0)
    assert health.status_code == 200 and answer.status_code == 200
    assert count_was_running, "/healthz waited for the token count: it ran on the event loop"


# -- item 6: input that used to give 500 --------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 5000])
def test_deeply_nested_json_is_a_400(client: TestClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = f'{{"model": "hybrid-router", "messages": [{{"role": "user", "content": "hi"}}], "x": {nested}}}'
    r = client.post(CHAT, content=body, headers=AUTH)
    assert_error(r, 400, "invalid_request")
    assert "nests JSON more than 64 levels" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "content",
    ['"\\ud800"', '"a\\uDFFFb"', '"\\ud800\\ud800"', '[{"type": "text", "text": "\\udbff"}]'],
)
def test_a_lone_surrogate_is_a_400(client: TestClient, edge: CountingBackend, content: str) -> None:
    body = '{"model": "hybrid-router", "messages": [{"role": "user", "content": ' + content + "}]}"
    r = client.post(CHAT, content=body.encode(), headers=AUTH)
    assert_error(r, 400, "invalid_request")
    assert "surrogate" in r.json()["error"]["message"] and edge.counted == 0


def test_raw_surrogate_bytes_are_not_utf8(client: TestClient) -> None:
    body = b'{"model": "hybrid-router", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'
    r = client.post(CHAT, content=body, headers=AUTH)
    assert_error(r, 400, "invalid_request")
    assert "not valid UTF-8" in r.json()["error"]["message"]


def test_a_paired_surrogate_escape_is_text(client: TestClient) -> None:
    body = '{"model": "hybrid-router", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    r = client.post(CHAT, content=body.encode(), headers=AUTH)
    assert r.status_code == 200, r.text


@pytest.mark.anyio
async def test_an_unreadable_content_length_is_a_400() -> None:
    # (Through uvicorn the server itself answers it: tests/functional/test_bad_input.py.)
    request = routes.HttpRequest("POST", CHAT, {"content-length": "abc"}, json.dumps(chat(users(1))).encode())
    with pytest.raises(RequestError) as raised:
        await routes.read_body(request, 1024)
    assert raised.value.status_code == 400 and "Content-Length" in raised.value.message


@pytest.mark.anyio
async def test_an_unexpected_error_is_answered_not_raised() -> None:
    # A server that sees an exception escape the app closes the connection: answer it here.
    async def explode(request: routes.HttpRequest, engine: RoutingEngine) -> routes.HttpResponse:
        raise ZeroDivisionError("boom")

    engine = RoutingEngine(CONFIG, estimator=HeuristicEstimator())
    response = await routes.respond(
        routes.Route("GET", "/x", explode), routes.HttpRequest("GET", "/x"), engine
    )
    assert response.status == 500 and json.loads(response.body)["error"]["code"] == "internal_error"
    assert b"boom" not in response.body


def test_serve_answers_an_unreadable_request_head_with_an_error_object() -> None:
    from hyrouter.cloud.server import uvicorn_options
    from hyrouter.cloud.server_protocol import OpenAIErrorH11Protocol
    from hyrouter.router import ServerConfig

    http = uvicorn_options(ServerConfig())["http"]
    assert http is OpenAIErrorH11Protocol or http.__name__ == "OpenAIErrorHttpToolsProtocol"
