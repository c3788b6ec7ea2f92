"""The response cache end to end: the real server with SmolLM2 on the edge, the openai client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from hyrouter.router import hash_api_key
from tests.servers import ADMIN, KEYS, make_router_config, running_router

pytestmark = pytest.mark.functional

# Short enough that SmolLM2 finishes (finish_reason "stop") within max_tokens: only whole answers are kept.
PROMPT = "Answer with one word only. What color is the sky on a clear day?"
MAX_TOKENS = 48
OTHER_FREE_KEY = "test-other-free-key"  # another tenant of the same tier


@pytest.fixture(scope="module")
def router_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = make_router_config(None)  # no cloud: every miss is answered on the edge
    config["tiers"]["free"]["cache"] = {"exact": True}
    config["api_keys"].append({"sha256": hash_api_key(OTHER_FREE_KEY), "tenant": "t-other", "tier": "free"})
    with running_router(config, tmp_path_factory.mktemp("router")) as base:
        yield base


@pytest.fixture(scope="module")
def client(router_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{router_url}/v1", api_key=KEYS["free"], max_retries=0, timeout=60) as c:
        yield c


def ask(client: openai.OpenAI, content: str = PROMPT, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}
    return client.chat.completions.with_raw_response.create(
        model="hybrid-router", messages=[{"role": "user", "content": content}], **params
    )


def test_a_second_identical_request_is_answered_from_the_cache_streamed_too(
    client: openai.OpenAI, router_url: str
) -> None:
    first = ask(client)
    answer = first.parse()
    assert first.headers["x-route-target"] == "edge"
    assert answer.choices[0].finish_reason == "stop", "the prompt must get a whole answer to be cached"

    second = ask(client)
    assert (second.headers["x-route-target"], second.headers["x-route-reason"]) == ("cache", "cache_hit")
    assert second.headers["x-route-model"] == "smollm2-135m-instruct"
    hit = second.parse()
    assert hit.choices[0].message.content == answer.choices[0].message.content
    assert hit.choices[0].finish_reason == "stop" and hit.usage.completion_tokens > 0
    assert hit.model_extra["route"]["target"] == "cache" and hit.model_extra["route"]["cost_saved_usd"] > 0

    streamed = ask(client, stream=True, stream_options={"include_usage": True})
    assert (streamed.headers["x-route-target"], streamed.headers["x-route-reason"]) == ("cache", "cache_hit")
    chunks = list(streamed.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    metrics = httpx.get(f"{router_url}/metrics?format=json", headers=ADMIN).json()
    hits = [d for d in metrics["decisions"] if d["target"] == "cache" and d["reason"] == "cache_hit"]
    assert hits == [{"target": "cache", "tier": "free", "reason": "cache_hit", "count": 2}]
    assert metrics["cost_saved_usd"] > 0


def test_a_sampled_request_and_another_tenant_of_the_tier_are_not_served_from_the_cache(
    client: openai.OpenAI, router_url: str
) -> None:
    question = "Answer with one word only. What is frozen water called?"
    assert ask(client, question).parse().choices[0].finish_reason == "stop"
    assert ask(client, question).headers["x-route-target"] == "cache"  # kept for this tenant
    assert ask(client, question, temperature=0.7).headers["x-route-target"] == "edge"
    with openai.OpenAI(
        base_url=f"{router_url}/v1", api_key=OTHER_FREE_KEY, max_retries=0, timeout=60
    ) as other:
        assert ask(other, question).headers["x-route-target"] == "edge"
