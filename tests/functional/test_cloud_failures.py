"""The cloud endpoint down, failing or hanging: fallback to the edge, breaker, and clear 503s."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import ADMIN, KEYS, MisbehavingUpstream, free_port, make_router_config, running_router

pytestmark = pytest.mark.functional

HARD = "Prove step by step that the square root of 2 is irrational, and explain why the proof works."
DEADLINE_S = 3.0  # the cloud total timeout set below
FAST_FAIL = {"timeouts": {"connect": 0.5, "read": 2.0, "total": DEADLINE_S}}
EDGE_BUDGET_S = 20.0  # generous room for 16 edge tokens on a loaded 2-core machine


def ask(base: str, tier: str, *, stream: bool = False) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    body = {
        "model": "hybrid-router",
        "messages": [{"role": "user", "content": HARD}],
        "max_tokens": 8,
        "stream": stream,
    }
    response = httpx.post(
        f"{base}/v1/chat/completions",
        json=body,
        timeout=60,
        headers={"authorization": f"Bearer {KEYS[tier]}"},
    )
    return response, time.monotonic() - started


def assert_degraded_edge_answer(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-route-target"] == "edge"
    assert response.headers["x-route-reason"] == "cloud_unavailable"
    assert response.headers["x-route-fallback"] == "true"
    assert elapsed < DEADLINE_S + EDGE_BUDGET_S


def test_nothing_listening_falls_back_opens_the_breaker_and_503s_strict_tiers(tmp_path: Path) -> None:
    with running_router(
        make_router_config(f"http://127.0.0.1:{free_port()}/v1", cloud=FAST_FAIL), tmp_path
    ) as base:
        for _ in range(2):  # the breaker's threshold in the test config
            response, elapsed = ask(base, "standard")
            assert_degraded_edge_answer(response, elapsed)
            assert response.json()["route"]["reason"] == "cloud_unavailable"
        health = httpx.get(f"{base}/healthz", headers=ADMIN).json()
        assert health["status"] == "degraded"
        assert not health["cloud"]["available"] and "circuit" in health["cloud"]["detail"]
        # The breaker is open: the decision is made before any call to the cloud.
        response, elapsed = ask(base, "premium")
        assert_degraded_edge_answer(response, elapsed)
        # A tier that must not fall back gets a clear 503 error object.
        with (
            openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["strict"], max_retries=0) as strict,
            pytest.raises(openai.APIStatusError) as info,
        ):
            strict.chat.completions.create(
                model="hybrid-router", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 503
        assert info.value.body["code"] in ("no_backend_available", "cloud_unavailable")  # type: ignore[index]
        # The edge still serves.
        response, _ = ask(base, "free")
        assert response.status_code == 200


def test_upstream_returning_500s_falls_back_without_retrying(tmp_path: Path) -> None:
    with (
        MisbehavingUpstream("error") as upstream,
        running_router(make_router_config(upstream.url, cloud=FAST_FAIL), tmp_path) as base,
    ):
        response, elapsed = ask(base, "standard")
        assert_degraded_edge_answer(response, elapsed)
        assert upstream.requests == 1  # a 500 is not retried: most often the request provoked it
        strict, _ = ask(base, "strict")
        assert strict.status_code in (502, 503)
        assert strict.json()["error"]["message"]


def test_requests_that_provoke_a_500_do_not_switch_the_cloud_off_for_others(tmp_path: Path) -> None:
    bad = {
        "model": "hybrid-router",
        "max_tokens": 8,
        "messages": [
            {"role": "user", "content": "What is the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }
    with (
        MisbehavingUpstream("bad_request") as upstream,
        running_router(make_router_config(upstream.url, cloud=FAST_FAIL), tmp_path) as base,
    ):
        for _ in range(3):  # more than the breaker's threshold (2 in the test config)
            response = httpx.post(
                f"{base}/v1/chat/completions",
                json=bad,
                timeout=60,
                headers={"authorization": f"Bearer {KEYS['premium']}"},
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-route-target"] == "edge"  # its own degraded answer
        assert upstream.requests == 3  # not retried
        assert httpx.get(f"{base}/healthz", headers=ADMIN).json()["cloud"]["available"]
        response, _ = ask(base, "premium")
        assert response.status_code == 200, response.text
        assert response.headers["x-route-target"] == "cloud"
        assert response.headers["x-route-fallback"] == "false"


def test_an_upstream_429_reaches_a_tier_without_fallback_with_its_retry_after(tmp_path: Path) -> None:
    with (
        MisbehavingUpstream("rate_limited") as upstream,
        running_router(make_router_config(upstream.url, cloud=FAST_FAIL), tmp_path) as base,
    ):
        for _ in range(3):  # past the breaker's threshold: a 429 is no evidence the endpoint is down
            with (
                openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["strict"], max_retries=0) as strict,
                pytest.raises(openai.RateLimitError) as info,
            ):
                strict.chat.completions.create(
                    model="hybrid-router", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
            assert info.value.status_code == 429
            assert info.value.response.headers["retry-after"] == "9"
            assert info.value.code == "rate_limit_exceeded"
        assert upstream.requests == 3  # Retry-After 9 s is past the 3 s deadline: no retry
        assert httpx.get(f"{base}/healthz", headers=ADMIN).json()["cloud"]["available"]


def test_hanging_upstream_falls_back_within_the_deadline(tmp_path: Path) -> None:
    with (
        MisbehavingUpstream("hang") as upstream,
        running_router(make_router_config(upstream.url, cloud=FAST_FAIL), tmp_path) as base,
    ):
        response, elapsed = ask(base, "standard")
        assert_degraded_edge_answer(response, elapsed)
        streamed, elapsed = ask(base, "premium", stream=True)
        assert_degraded_edge_answer(streamed, elapsed)
        assert "data: [DONE]" in streamed.text
        strict, elapsed = ask(base, "strict")
        assert strict.status_code in (503, 504)
        assert strict.json()["error"]["code"] in (
            "cloud_timeout",
            "cloud_unavailable",
            "no_backend_available",
        )
        assert elapsed < DEADLINE_S + 2.0
