"""Bad input against the real server (uvicorn on loopback, fake backends): every refusal is an OpenAI
error object, and a handled error, a 500 included, leaves the keep-alive connection open for the next
request on it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from hyrouter.cloud.app import create_app
from hyrouter.cloud.server_protocol import OpenAIErrorH11Protocol, http_protocol
from hyrouter.router import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    HeuristicEstimator,
    RouterConfig,
    RoutingEngine,
    hash_api_key,
    parse_config,
)
from tests.fakes import FakeBackend
from tests.servers import free_port

pytestmark = pytest.mark.functional

CONFIG = parse_config(
    {
        "server": {"max_messages": 10, "max_prompt_chars": 1000},
        "tiers": {"free": {"cloud": "never"}},
        "api_keys": [{"sha256": hash_api_key("k-free"), "tenant": "a", "tier": "free"}],
    }
)
GOOD = json.dumps({"model": "hybrid-router", "messages": [{"role": "user", "content": "hi"}]})


class Explodes(FakeBackend):
    """Raises a bug (not a `RouterError`) for the prompt "explode": an unexpected 500."""

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        if request.messages[-1].text == "explode":
            raise ZeroDivisionError("a bug")
        return await super().complete(request, max_tokens=max_tokens)


@pytest.fixture(scope="module", params=["h11", "httptools"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A server with the h11 protocol, and one with what `serve` picks (httptools, installed here)."""

    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=Explodes("edge", reply="hello"))

    port = free_port()
    config = uvicorn.Config(
        create_app(CONFIG, engine_factory=factory),
        host="127.0.0.1",
        port=port,
        http=OpenAIErrorH11Protocol if request.param == "h11" else http_protocol(),
        ws="none",
        log_level="critical",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(timeout=10)


class Connection:
    """One keep-alive HTTP/1.1 connection, read by hand: a server that closes it cannot go unseen."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, body: bytes | str, *, length: str | None = None) -> tuple[int, dict[str, str], Any]:
        data = body.encode() if isinstance(body, str) else body
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer k-free\r\n"
            f"content-type: application/json\r\ncontent-length: {length or len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data)
        return self.read()

    def read(self) -> tuple[int, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.buffer:
            self.receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        while len(self.buffer) < int(headers["content-length"]):
            self.receive()
        body, self.buffer = (
            self.buffer[: int(headers["content-length"])],
            self.buffer[int(headers["content-length"]) :],
        )
        return int(status_line.split()[1]), headers, json.loads(body)

    def receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data


def assert_error_object(body: Any, error_type: str = "invalid_request_error") -> None:
    assert set(body["error"]) == {"message", "type", "param", "code", "request_id"}
    assert body["error"]["type"] == error_type


BAD = [
    pytest.param(
        '{"model": "hybrid-router", "messages": [{"role": "user", "content": "\\ud800"}]}',
        400,
        id="surrogate",
    ),
    pytest.param('{"model": "hybrid-router", "x": ' + "[" * 5000 + "]" * 5000 + "}", 400, id="deep"),
    pytest.param('{"model": "hybrid-router", "x": ' + "[" * 100 + "]" * 100 + "}", 400, id="nested"),
    pytest.param(
        json.dumps({"model": "hybrid-router", "messages": [{"role": "user"}] * 11}), 400, id="messages"
    ),
    pytest.param(
        json.dumps({"model": "hybrid-router", "messages": [{"role": "user", "content": "x" * 1001}]}),
        413,
        id="chars",
    ),
    pytest.param('{"model": ', 400, id="json"),
    pytest.param(
        json.dumps({"model": "other", "messages": [{"role": "user", "content": "hi"}]}), 404, id="model"
    ),
]


@pytest.mark.parametrize(("body", "status"), BAD)
def test_bad_input_is_refused_and_the_connection_serves_on(port: int, body: str, status: int) -> None:
    connection = Connection(port)
    try:
        for _ in range(2):
            got, headers, answer = connection.send(body)
            assert got == status and headers["content-type"] == "application/json", answer
            assert_error_object(answer)
            assert "connection" not in headers
        for _ in range(3):  # the follow-ups on the same connection
            got, _, answer = connection.send(GOOD)
            assert got == 200 and answer["choices"][0]["message"]["content"] == "hello"
    finally:
        connection.close()


def test_an_unexpected_500_leaves_the_connection_open(port: int) -> None:
    connection = Connection(port)
    explode = json.dumps({"model": "hybrid-router", "messages": [{"role": "user", "content": "explode"}]})
    try:
        got, _, answer = connection.send(explode)
        assert (
            got == 500 and answer["error"]["code"] == "internal_error" and "a bug" not in json.dumps(answer)
        )
        for _ in range(3):
            assert connection.send(GOOD)[0] == 200
    finally:
        connection.close()


def test_an_unreadable_content_length_gets_an_error_object(port: int) -> None:
    connection = Connection(port)
    try:
        got, headers, answer = connection.send(GOOD, length="abc")
        assert got == 400 and headers["content-type"] == "application/json"
        assert_error_object(answer)
        assert "Content-Length" in answer["error"]["message"]
    finally:
        connection.close()
    again = Connection(port)
    try:
        assert again.send(GOOD)[0] == 200  # the server itself is fine
    finally:
        again.close()
