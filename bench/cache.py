"""The response cache: a hit's latency against a miss's, in one run, through the engine.

    python -m bench.cache [--requests 2000] [--entries 1000]

In process, through `RoutingEngine.complete` / `stream` (no HTTP: `bench.router_overhead` measures
that part), with a backend that answers at once, so a miss costs only the router's own work
(estimate, decide, call, record, keep the answer): the least a hit can save. A real edge answer
costs SmolLM2's generation on top (~90 tokens/s), a cloud one the endpoint's time and price.

- exact hit, heuristic estimator: `complete` and a streamed answer read to its end;
- semantic hit, `static-minilm` (when its artefact loads): a paraphrase of a kept question, matched
  by cosine among `--entries` kept answers of the same tenant and parameters;
- misses: a new prompt each time, with the cache on (lookup + keep) and with it off.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import percentiles, report
from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.router import (
    ChatCompletionRequest,
    ComplexityEstimator,
    Embedder,
    HeuristicEstimator,
    RoutingEngine,
    Tenant,
    load_estimator,
    parse_config,
)
from tests.fakes import FakeBackend

THRESHOLD = 0.98
CONFIG = parse_config(
    {
        "tiers": {
            "cached": {"cloud": "never", "cache": {"exact": True, "semantic_threshold": THRESHOLD}},
            "plain": {"cloud": "never"},
        }
    }
)
CACHED, PLAIN = Tenant("acme", "cached"), Tenant("acme", "plain")
QUESTION = "What is the capital city of France?"
PARAPHRASE = "what is the capital city of france"  # casing and punctuation: what a high threshold is for
#: pairs whose cosine says what a threshold trades: a paraphrase, and near misses that must not match
PAIRS = {
    "paraphrase": ("What is the capital city of France?", "What's the capital of France?"),
    "france_vs_spain": ("What is the capital city of France?", "What is the capital city of Spain?"),
    "2plus3_vs_2plus4": ("What is 2+3?", "What is 2+4?"),
}


def request(text: str, **kw: Any) -> ChatCompletionRequest:
    body = {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], "temperature": 0}
    return ChatCompletionRequest.model_validate({**body, **kw})


def engine(estimator: ComplexityEstimator) -> RoutingEngine:
    return RoutingEngine(
        CONFIG,
        estimator=estimator,
        edge=FakeBackend("edge", reply="Paris is the capital of France."),
        cloud=FakeBackend("cloud"),
        log_decisions=False,
    )


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    for i in range(min(50, n)):  # warm: thread pool, caches
        await call(-1 - i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - started) * 1000.0)
    return percentiles(samples)


async def exact(n: int) -> dict[str, Any]:
    e = engine(HeuristicEstimator())
    first = await e.complete(request(QUESTION), CACHED)
    assert first.route is not None and first.route.target == "edge"

    async def hit(_: int) -> None:
        response = await e.complete(request(QUESTION), CACHED)
        assert response.route is not None and response.route.reason == "cache_hit"

    async def streamed_hit(_: int) -> None:
        routed = await e.stream(request(QUESTION, stream=True), CACHED)
        assert routed.route.reason == "cache_hit"
        async for _chunk in routed.chunks:
            pass

    return {
        "exact_hit": await timed(n, hit),
        "exact_hit_streamed": await timed(n, streamed_hit),
        **await misses(e, n, "heuristic"),
    }


@functools.cache
def _words() -> list[str]:
    """Whole words of the estimator's WordPiece vocabulary: prompts of ten random ones match nothing kept
    ("the number 7919" and "the number 15838" are near neighbours for a static embedding)."""
    tokenizer = json.loads((ARTEFACTS_DIR / "static-minilm-1.1.0" / "tokenizer.json").read_text())
    return sorted(w for w in tokenizer["model"]["vocab"] if w.isalpha() and w.isascii() and len(w) >= 5)


def novel_prompt(label: str, i: int) -> str:
    rng = random.Random(f"{label}{i}")
    return " ".join(rng.sample(_words(), 10))


async def misses(e: RoutingEngine, n: int, label: str) -> dict[str, Any]:
    async def miss_cached(i: int) -> None:
        response = await e.complete(request(novel_prompt(f"{label} kept", i)), CACHED)
        assert response.route is not None and response.route.target == "edge"

    async def miss_plain(i: int) -> None:
        response = await e.complete(request(novel_prompt(f"{label} plain", i)), PLAIN)
        assert response.route is not None and response.route.target == "edge"

    return {"miss_cache_on": await timed(n, miss_cached), "miss_cache_off": await timed(n, miss_plain)}


async def semantic(n: int, entries: int) -> dict[str, Any]:
    try:
        estimator = load_estimator("static-minilm")
    except Exception as exc:  # the artefact or onnxruntime is missing: say so, measure the rest
        return {"skipped": f"static-minilm unavailable: {exc}"}
    assert isinstance(estimator, Embedder) and estimator.can_embed
    e = engine(estimator)
    for i in range(entries):  # other kept answers in the same bucket: the scan's real size
        await e.complete(request(novel_prompt("entry", i)), CACHED)
    await e.complete(request(QUESTION), CACHED)
    cosines = {
        name: round(_cosine(*(estimator.embed(request(t).messages) for t in pair)), 4)
        for name, pair in PAIRS.items()
    }

    async def hit(_: int) -> None:
        response = await e.complete(request(PARAPHRASE), CACHED)
        assert response.route is not None and response.route.reason == "semantic_cache_hit"

    return {
        "estimator": f"{estimator.name}@{estimator.version}",
        "threshold": THRESHOLD,
        "kept_answers": entries + 1,
        "cosine_hit_pair": round(
            _cosine(*(estimator.embed(request(t).messages) for t in (QUESTION, PARAPHRASE))), 4
        ),
        "cosines": cosines,
        "semantic_hit": await timed(n, hit),
        **await misses(e, n, "onnx"),
    }


def _cosine(a: Any, b: Any) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=True)))  # the vectors are unit length


async def run(n: int, entries: int) -> dict[str, Any]:
    return {"heuristic": await exact(n), "static_minilm": await semantic(n, entries)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=1000, help="answers kept before the semantic runs")
    args = parser.parse_args()
    results = asyncio.run(run(args.requests, args.entries))
    report(
        "cache",
        {
            "requests": args.requests,
            "path": "in process, RoutingEngine.complete/stream, a backend that answers at once",
            **results,
            "targets": {"exact_hit_p50_ms": 1.0, "exact_hit_p99_ms": 1.0},
        },
    )


if __name__ == "__main__":
    main()
