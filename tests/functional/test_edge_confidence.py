"""The confidence cascade on the real SmolLM2 edge model: a question it knows stays on the edge, a
gibberish one escalates to the cloud (a fake: no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.router import (
    ChatCompletionRequest,
    EdgeConfig,
    HeuristicEstimator,
    RoutingEngine,
    Tenant,
    TokenSignal,
    answer_confidence,
    parse_config,
)
from tests.fakes import FakeBackend

pytestmark = [pytest.mark.functional, pytest.mark.anyio]

KNOWN = "What is the capital of France?"
GIBBERISH = "Translate to Klingon: xqzv plorb snerk wub"
# Measured with SmolLM2-135M Q4_1, greedy, uncalibrated: about 0.87 and 0.32.
CONFIG = parse_config(
    {"tiers": {"verified": {"threshold": 1.0, "verify": {"enabled": True, "min_confidence": 0.6}}}}
)


def request(text: str, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "hybrid-router",
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            **fields,
        }
    )


@pytest.fixture(scope="module")
def edge() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(EdgeConfig(n_threads=2, n_ctx=512, seed=0, max_tokens=48))
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


async def test_signals_make_up_the_answer_and_leave_the_wire_output_unchanged(edge: LlamaCppBackend) -> None:
    signals: list[TokenSignal] = []
    answer = await edge.complete_with_signals(request(KNOWN), max_tokens=24, signals=signals)
    plain = await edge.complete(request(KNOWN), max_tokens=24)
    assert answer.choices[0].logprobs is None  # not asked for: not sent
    assert answer.choices[0].message.content == plain.choices[0].message.content
    assert b"".join(s.piece for s in signals).decode() == answer.choices[0].message.content  # type: ignore[attr-defined]
    streamed: list[TokenSignal] = []
    text = [
        c.delta.content
        async for chunk in edge.stream_with_signals(request(KNOWN), max_tokens=24, signals=streamed)
        for c in chunk.choices
        if c.delta.content
    ]
    assert b"".join(s.piece for s in streamed).decode() == "".join(text)  # type: ignore[attr-defined]
    assert answer_confidence(streamed) == pytest.approx(answer_confidence(signals))


async def test_a_known_answer_stays_on_the_edge_and_gibberish_escalates(edge: LlamaCppBackend) -> None:
    cloud = FakeBackend("cloud", reply="I cannot translate that.")
    router = RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=edge, cloud=cloud)
    tenant = Tenant("acme", "verified")
    known = await router.complete(request(KNOWN), tenant)
    assert known.route is not None and known.route.confidence is not None
    assert (known.route.target, known.route.reason) == ("edge", "score_below_threshold")
    assert "Paris" in (known.choices[0].message.content or "")
    unsure = await router.complete(request(GIBBERISH), tenant)
    assert unsure.route is not None and unsure.route.confidence is not None
    assert (unsure.route.target, unsure.route.reason) == ("cloud", "edge_unsure")
    assert unsure.route.confidence < known.route.confidence
    assert unsure.route.edge_tokens_discarded is not None and unsure.route.edge_tokens_discarded > 0
    stream = await router.stream(request(GIBBERISH, stream=True), tenant)
    assert (stream.route.target, stream.route.reason) == ("cloud", "edge_unsure")
    models = {c.model async for c in stream.chunks if c.choices and c.choices[0].delta.content}
    assert models == {"cloud-model"}  # not one edge chunk
