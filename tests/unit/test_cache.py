"""The response cache on its own: keys, tenant isolation, TTL, the LRU bound, the semantic index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from hyrouter.router import ChatCompletionRequest, ChatMessage, Tenant, TierCacheConfig
from hyrouter.router._cache import (
    CachedAnswer,
    MemoryCacheStore,
    ResponseCache,
    SemanticIndex,
    TieredCacheStore,
    answer_of,
    repeatable,
    request_key,
)
from hyrouter.router._wire import AssistantMessage, ChatCompletionResponse, Choice, Usage

ACME = Tenant("acme", "free")
GLOBEX = Tenant("globex", "free")
EXACT = TierCacheConfig(exact=True)
ANSWER = CachedAnswer("Paris.", "edge-model", "edge", 10, 2)


def request(text: str = "What is the capital of France?", **kw: Any) -> ChatCompletionRequest:
    body = {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], "temperature": 0, **kw}
    return ChatCompletionRequest.model_validate(body)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- keys ---------------------------------------------------------------------------------------


def test_the_key_ignores_how_an_answer_is_delivered_and_how_a_parameter_is_spelt() -> None:
    base = request_key(request(max_tokens=8, stop="\n"), ACME)
    same = [
        request(max_completion_tokens=8, stop=["\n"]),  # the newer name, a list of one stop
        request(max_tokens=8, stop="\n", stream=True, stream_options={"include_usage": True}),
        request(max_tokens=8, stop="\n", user="u-1", store=False, n=1),
        request(max_tokens=8, stop="\n", temperature=0.0, top_p=1.0),  # the defaults, written out
    ]
    for other in same:
        assert request_key(other, ACME) == base


def test_the_key_changes_with_whatever_changes_the_answer() -> None:
    base = request_key(request(max_tokens=8), ACME)
    different = [
        request("What is the capital of Spain?", max_tokens=8),
        request(max_tokens=9),
        request(max_tokens=8, temperature=0.5),
        request(max_tokens=8, top_p=0.5),
        request(max_tokens=8, seed=7),
        request(max_tokens=8, stop="."),
        request(max_tokens=8, response_format={"type": "json_object"}),
        request(max_tokens=8, presence_penalty=0.5),
        request(max_tokens=8, logit_bias={"42": 1}),  # a field this router does not know
        request(
            max_tokens=8,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        ),
    ]
    keys = {request_key(other, ACME) for other in different}
    assert base not in keys and len(keys) == len(different)
    assert request_key(request(max_tokens=8), ACME, "edge=other-model") != base


def test_only_repeatable_requests_are_cached_unless_the_tier_opts_in() -> None:
    assert repeatable(request(), EXACT)
    assert repeatable(request(temperature=0.8, seed=3), EXACT)
    assert not repeatable(request(temperature=0.8), EXACT)
    assert not repeatable(request(temperature=None), EXACT)  # the default temperature samples
    assert repeatable(request(temperature=0.8), TierCacheConfig(exact=True, nondeterministic=True))
    assert not repeatable(request(logprobs=True), EXACT)


def test_a_tenant_never_gets_another_tenants_answer() -> None:
    cache = ResponseCache()
    lookup = cache.lookup(request(), ACME, EXACT)
    assert lookup is not None and lookup.hit is None
    cache.remember(lookup, ANSWER)
    again = cache.lookup(request(), ACME, EXACT)
    assert again is not None and again.hit is not None and again.hit.answer == ANSWER
    other = cache.lookup(request(), GLOBEX, EXACT)
    assert other is not None and other.hit is None
    assert cache.lookup(request(), Tenant("acme", "premium"), EXACT).hit is None  # type: ignore[union-attr]


def test_a_tier_without_the_cache_neither_looks_up_nor_keeps() -> None:
    assert ResponseCache().lookup(request(), ACME, TierCacheConfig()) is None


# -- stores -------------------------------------------------------------------------------------


def test_an_answer_expires_after_its_ttl() -> None:
    clock = Clock()
    store = MemoryCacheStore(clock=clock)
    store.put("k", ANSWER, ttl_s=10)
    clock.now = 9.9
    assert store.get("k") == ANSWER
    clock.now = 10.0
    assert store.get("k") is None
    assert len(store) == 0


def test_the_store_keeps_at_most_max_entries_dropping_the_least_recently_used() -> None:
    store = MemoryCacheStore(max_entries=2)
    store.put("a", ANSWER, 60)
    store.put("b", ANSWER, 60)
    assert store.get("a") == ANSWER  # a is now more recent than b
    store.put("c", ANSWER, 60)
    assert len(store) == 2
    assert store.get("b") is None
    assert store.get("a") == ANSWER and store.get("c") == ANSWER


def test_a_tiered_store_reads_through_to_the_shared_one_and_writes_both() -> None:
    local, shared = MemoryCacheStore(), MemoryCacheStore()
    tiered = TieredCacheStore(local, shared)
    shared.put("k", ANSWER, 60)
    assert tiered.get("k") == ANSWER
    assert local.get("k") == ANSWER  # copied for the next read
    tiered.put("j", ANSWER, 60)
    assert local.get("j") == ANSWER and shared.get("j") == ANSWER


def test_an_answer_round_trips_through_json() -> None:
    assert CachedAnswer.from_json(ANSWER.to_json()) == ANSWER


# -- what is kept -------------------------------------------------------------------------------


def response(
    content: str | None = "Paris.", finish: str | None = "stop", **message: Any
) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        model="m",
        choices=[Choice(message=AssistantMessage(content=content, **message), finish_reason=finish)],
        usage=Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12),
    )


def test_only_a_whole_text_answer_is_kept() -> None:
    assert answer_of(response(), "edge") == CachedAnswer("Paris.", "m", "edge", 10, 2)
    assert answer_of(response(finish="length"), "edge") is None
    assert answer_of(response(finish="tool_calls"), "edge") is None
    assert answer_of(response(content=None), "edge") is None
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert answer_of(response(tool_calls=calls), "edge") is None
    assert answer_of(response(content=None, refusal="no"), "edge") is None
    # what servers send empty alongside a plain answer (vLLM, OpenAI) does not stop it being kept
    assert answer_of(response(tool_calls=None, annotations=[], function_call=None), "edge") is not None


# -- semantic -----------------------------------------------------------------------------------


class FakeEmbedder:
    """Embeds by a table of texts to vectors; None for a text it was not given (read in part)."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = table

    can_embed = True

    def embed(self, messages: Sequence[ChatMessage]) -> Sequence[float] | None:
        return self.table.get(messages[-1].text)


def semantic(threshold: float) -> TierCacheConfig:
    return TierCacheConfig(semantic_threshold=threshold)


def test_a_similar_request_hits_at_or_above_the_threshold_and_misses_below() -> None:
    embedder = FakeEmbedder(
        {"capital of France?": [1.0, 0.0], "France's capital?": [0.96, 0.28], "Spain?": [0.6, 0.8]}
    )
    cache = ResponseCache(embedder=embedder)
    first = cache.lookup(request("capital of France?"), ACME, semantic(0.95))
    assert first is not None and first.hit is None and first.vector is not None
    cache.remember(first, ANSWER)
    near = cache.lookup(request("France's capital?"), ACME, semantic(0.95))  # cosine 0.96
    assert near is not None and near.hit is not None and near.hit.semantic
    assert near.hit.similarity == pytest.approx(0.96, abs=1e-6)
    assert cache.lookup(request("France's capital?"), ACME, semantic(0.97)).hit is None  # type: ignore[union-attr]
    assert cache.lookup(request("Spain?"), ACME, semantic(0.5)).hit is not None  # type: ignore[union-attr]
    assert cache.lookup(request("Spain?"), ACME, semantic(0.61)).hit is None  # type: ignore[union-attr]
    # never across tenants, nor across parameters
    assert cache.lookup(request("France's capital?"), GLOBEX, semantic(0.5)).hit is None  # type: ignore[union-attr]
    assert cache.lookup(request("France's capital?", max_tokens=3), ACME, semantic(0.5)).hit is None  # type: ignore[union-attr]


def test_no_embedding_means_no_semantic_lookup() -> None:
    cache = ResponseCache(embedder=FakeEmbedder({}))
    lookup = cache.lookup(request(), ACME, semantic(0.5))
    assert lookup is not None and lookup.vector is None
    assert not ResponseCache().semantic_available and cache.semantic_available


def test_a_semantic_match_whose_answer_expired_is_a_miss_and_is_forgotten() -> None:
    clock = Clock()
    cache = ResponseCache(MemoryCacheStore(clock=clock), embedder=FakeEmbedder({"a": [1.0], "b": [1.0]}))
    settings = TierCacheConfig(semantic_threshold=0.9, ttl_s=5)
    first = cache.lookup(request("a"), ACME, settings)
    assert first is not None
    cache.remember(first, ANSWER)
    clock.now = 6
    assert cache.lookup(request("b"), ACME, settings).hit is None  # type: ignore[union-attr]
    assert cache.index.nearest(first.bucket, [1.0]) is None


def test_the_semantic_index_is_bounded() -> None:
    index = SemanticIndex(max_entries=2)
    for key in "abc":
        index.add("bucket", key, [1.0, 0.0])
    assert len(index._entries) == 2 and "a" not in index._entries


def test_the_semantic_index_finds_each_vector_after_others_leave_and_it_grows() -> None:
    index = SemanticIndex()
    vectors = {f"k{i}": [float(i == j) for j in range(20)] for i in range(20)}  # orthogonal
    for key, vector in vectors.items():
        index.add("bucket", key, vector)
    for gone in ("k0", "k7", "k19"):
        index.discard("bucket", gone)
    for key, vector in vectors.items():
        found = index.nearest("bucket", vector)
        assert found is not None
        if key in ("k0", "k7", "k19"):
            assert found[1] == pytest.approx(0.0)
        else:
            assert found == (key, pytest.approx(1.0))
    assert index.nearest("other bucket", vectors["k1"]) is None


def test_the_semantic_index_matches_brute_force_past_one_block_of_rows() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(700, 16)).astype(np.float32)
    index = SemanticIndex()
    for i, vector in enumerate(vectors):
        index.add("bucket", f"k{i}", vector.tolist())
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for probe in rng.normal(size=(20, 16)):
        expected = int(np.argmax(units @ (probe / np.linalg.norm(probe))))
        found = index.nearest("bucket", probe.tolist())
        assert found is not None and found[0] == f"k{expected}"
