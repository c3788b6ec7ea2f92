"""The router end to end: real llama.cpp edge model, real stand-in GPU endpoint, real HTTP, openai client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.servers import ADMIN, KEYS, make_router_config, running_router

pytestmark = pytest.mark.functional

EASY = "What is the capital of France?"
HARD = "Prove step by step that the square root of 2 is irrational, and explain why the proof works."


@pytest.fixture(scope="module")
def router_url(standin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_router(make_router_config(standin_url), tmp_path_factory.mktemp("router")) as base:
        yield base


_CLIENTS: dict[tuple[str, str], openai.OpenAI] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    """Close the module's openai clients: an unclosed one leaks a socket that a later test's GC reports."""
    yield
    for c in _CLIENTS.values():
        c.close()
    _CLIENTS.clear()


def client(base: str, tier: str) -> openai.OpenAI:
    key = (base, tier)
    if key not in _CLIENTS:
        _CLIENTS[key] = openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS[tier], max_retries=0, timeout=60)
    return _CLIENTS[key]


def chat(base: str, tier: str, content: str, **kwargs: Any) -> tuple[httpx.Headers, Any]:
    raw = client(base, tier).chat.completions.with_raw_response.create(
        model="hybrid-router",
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        temperature=0,
        **kwargs,
    )
    return raw.headers, raw.parse()


def test_free_key_easy_prompt_is_answered_on_the_edge(router_url: str) -> None:
    headers, completion = chat(router_url, "free", EASY)
    assert headers["x-route-target"] == "edge"
    assert headers["x-route-reason"] == "score_below_threshold"
    assert headers["x-route-tier"] == "free"
    assert headers["x-route-model"] == "smollm2-135m-instruct"
    assert 0.0 <= float(headers["x-route-score"]) < 0.7
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0
    route = completion.model_extra["route"]
    assert route["target"] == "edge" and route["reason"] == "score_below_threshold"
    assert route["cost_saved_usd"] > 0 and route["cost_usd"] == 0


def test_premium_key_is_routed_to_the_cloud(router_url: str) -> None:
    headers, completion = chat(router_url, "premium", EASY)
    assert headers["x-route-target"] == "cloud"
    assert headers["x-route-reason"] == "tier_forces_cloud"
    assert headers["x-route-model"] == "cloud-standin"
    assert completion.model == "cloud-standin"
    assert completion.choices[0].message.content
    assert completion.model_extra["route"]["cost_usd"] > 0


def test_standard_key_hard_prompt_escalates_on_its_score(router_url: str) -> None:
    headers, completion = chat(router_url, "standard", HARD)
    assert headers["x-route-target"] == "cloud"
    assert headers["x-route-reason"] == "score_above_threshold"
    assert float(headers["x-route-score"]) >= completion.model_extra["route"]["threshold"]


@pytest.mark.parametrize(("tier", "target"), [("free", "edge"), ("premium", "cloud")])
def test_streamed_chat_through_the_router(router_url: str, tier: str, target: str) -> None:
    raw = client(router_url, tier).chat.completions.with_raw_response.create(
        model="hybrid-router",
        messages=[{"role": "user", "content": EASY}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-route-target"] == target
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[0].model_extra["route"]["target"] == target
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_prompt_too_long_for_the_edge_goes_to_the_cloud(router_url: str) -> None:
    # About 740 tokens: past the edge's 512, and short enough that the stand-in (the same small model
    # on the same two cores) reads it well within the test config's 15 s read timeout under load.
    long_prompt = "Tell me about this list: " + ", ".join(f"item {i}" for i in range(140))
    headers, completion = chat(router_url, "free", long_prompt)
    assert headers["x-route-target"] == "cloud"
    assert headers["x-route-reason"] == "context_too_long"
    assert completion.usage.prompt_tokens > 512


def test_prompt_too_long_for_every_backend_is_a_400(router_url: str) -> None:
    huge = "word " * 5000
    with pytest.raises(openai.BadRequestError) as info:
        chat(router_url, "standard", huge)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        chat(router_url, "edge-only", "Tell me about: " + ", ".join(f"item {i}" for i in range(300)))


def test_models_and_health(router_url: str) -> None:
    models = client(router_url, "free").models.list()
    assert [m.id for m in models.data] == ["hybrid-router"]
    assert httpx.get(f"{router_url}/health").json() == {"status": "ok"}  # liveness, for anyone
    assert httpx.get(f"{router_url}/v1/models").status_code == 401
    health = httpx.get(f"{router_url}/healthz", headers=ADMIN).json()
    assert health["status"] == "ok"
    assert health["edge"]["available"] and health["cloud"]["available"]


BAD_REQUESTS = [
    pytest.param(b"{not json", "Bearer test-free-key", 400, "invalid_request", id="malformed-json"),
    pytest.param(b"[1, 2]", "Bearer test-free-key", 400, "invalid_request", id="not-an-object"),
    pytest.param(
        b'{"model": "hybrid-router", "messages": "hi"}',
        "Bearer test-free-key",
        400,
        "invalid_request",
        id="wrong-type",
    ),
    pytest.param(
        b'{"model": "hybrid-router", "messages": []}',
        "Bearer test-free-key",
        400,
        "invalid_request",
        id="empty-messages",
    ),
    pytest.param(
        b'{"model": "hybrid-router", "messages": [{"role": "wizard", "content": "hi"}]}',
        "Bearer test-free-key",
        400,
        "invalid_request",
        id="unknown-role",
    ),
    pytest.param(
        b'{"model": "hybrid-router", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}',
        "Bearer test-free-key",
        400,
        "integer_below_min_value",
        id="negative-max-tokens",
    ),
    pytest.param(
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}',
        "Bearer test-free-key",
        404,
        "model_not_found",
        id="unknown-model",
    ),
    pytest.param(
        b'{"model": "hybrid-router", "messages": [{"role": "user", "content": "hi"}]}',
        None,
        401,
        "invalid_api_key",
        id="missing-key",
    ),
    pytest.param(
        b'{"model": "hybrid-router", "messages": [{"role": "user", "content": "hi"}]}',
        "Bearer not-a-key",
        401,
        "invalid_api_key",
        id="unknown-key",
    ),
    pytest.param(
        b'{"model": "hybrid-router", "messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}',
        "Bearer test-free-key",
        413,
        "request_too_large",
        id="body-over-limit",
    ),
]


@pytest.mark.parametrize(("body", "auth", "status", "code"), BAD_REQUESTS)
def test_bad_input_gets_an_openai_error_object(
    router_url: str, body: bytes, auth: str | None, status: int, code: str
) -> None:
    headers = {"content-type": "application/json"}
    if auth:
        headers["authorization"] = auth
    response = httpx.post(f"{router_url}/v1/chat/completions", content=body, headers=headers, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["type"]
    assert "Traceback" not in response.text


def test_chunked_body_over_the_limit_is_a_413(router_url: str) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "hybrid-router", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 32_768
        yield b'"}]}'

    response = httpx.post(
        f"{router_url}/v1/chat/completions",
        content=body(),
        timeout=30,
        headers={"authorization": "Bearer test-free-key", "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_path_and_method_get_error_objects(router_url: str) -> None:
    assert httpx.get(f"{router_url}/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{router_url}/v1/chat/completions").status_code == 405


def test_server_keeps_serving_after_bad_input(router_url: str) -> None:
    for _ in range(3):
        httpx.post(
            f"{router_url}/v1/chat/completions",
            content=b"{oops",
            headers={"authorization": "Bearer test-free-key"},
        )
    headers, completion = chat(router_url, "free", EASY)
    assert headers["x-route-target"] == "edge"
    assert completion.choices[0].message.content


def test_metrics_count_the_decisions(router_url: str) -> None:
    chat(router_url, "premium", EASY)
    assert httpx.get(f"{router_url}/metrics").status_code == 401
    snapshot = httpx.get(f"{router_url}/metrics", headers=ADMIN, params={"format": "json"}).json()
    assert any(d["target"] == "cloud" and d["tier"] == "premium" for d in snapshot["decisions"])
