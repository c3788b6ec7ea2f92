"""Edge-only is a mode, not a fault: a real router with no cloud URL, the real SmolLM2, the openai client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import ADMIN, KEYS, make_router_config, running_router

pytestmark = pytest.mark.functional

HARD = "Prove step by step that the square root of 2 is irrational, and explain why the proof works."


@pytest.fixture(scope="module")
def edge_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_router(make_router_config(None), Path(tmp_path_factory.mktemp("edge-only"))) as base:
        yield base


def ask(base: str, tier: str) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS[tier], max_retries=0, timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="hybrid-router", messages=[{"role": "user", "content": HARD}], max_tokens=8, temperature=0
        )
        assert raw.headers["x-route-target"] == "edge", raw.headers
        completion = raw.parse()
        assert raw.headers["x-route-reason"] == completion.model_extra["route"]["reason"]
        return completion


@pytest.mark.parametrize("tier", ["standard", "premium"])  # the score wants the cloud; the tier forces it
def test_a_request_that_wants_the_cloud_gets_the_edge_answer_and_says_why(edge_only: str, tier: str) -> None:
    completion = ask(edge_only, tier)
    route = completion.model_extra["route"]
    assert route["reason"] == "cloud_not_configured" and route["fallback"] is False
    assert completion.model == "smollm2-135m-instruct" and completion.choices[0].message.content


def test_a_tier_that_takes_no_edge_answer_gets_a_503_that_says_so(edge_only: str) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        ask(edge_only, "strict")
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "no_backend_available"  # type: ignore[index]


def test_health_is_ok_in_edge_only_mode(edge_only: str) -> None:
    detail = httpx.get(f"{edge_only}/healthz", headers=ADMIN).json()
    assert (detail["status"], detail["mode"]) == ("ok", "edge-only")
    assert detail["edge"]["available"] and detail["cloud"] == {
        "configured": False,
        "available": False,
        "detail": "not configured",
        "probe": None,  # no URL to probe
    }
    assert httpx.get(f"{edge_only}/health").json() == {"status": "ok"}
