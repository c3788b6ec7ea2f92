"""What outcome records add to the request path: the engine's `complete()` with the writer on vs off.

python -m bench.outcomes [--requests 3000]

One run, two engines on the same zero-latency fake backends and the same estimator (the heuristic,
handing over 257 features as the ONNX estimator's embedding would): one without outcome records, one
whose `OutcomeWriter` writes to a real SQLite file (WAL) in a temporary folder. Requests alternate
between the two in blocks of 500 (off, on, on, off, ...) so that drift on a shared machine hits both
alike; the writer's thread runs during the "on" blocks (lingering 50 ms, then writing what came) and is
flushed, untimed, after each, so that its work never lands on an "off" block. Also timed
alone: `OutcomeWriter.record`, the only part of the writer on the request path. The budget is
+0.1 ms at p99.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import percentiles, report
from hyrouter.router import (
    ChatCompletionRequest,
    ChatMessage,
    HeuristicEstimator,
    OutcomeWriter,
    RequestOutcome,
    RoutingEngine,
    Tenant,
    parse_config,
)
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.fakes import FakeBackend

CONFIG = parse_config({"tiers": {"free": {"threshold": 0.7}}})
TENANT = Tenant("acme", "free")
PROMPTS = [
    "What is the capital of France?",
    "Prove step by step that the square root of 2 is irrational, and explain why the proof works.",
    "Write a Python function that parses ISO dates and explain its complexity.",
]
BLOCK = 500  # requests per block; blocks alternate off, on, on, off ...
FEATURES = [0.01 * i for i in range(257)]  # the static-minilm student's 256 dims + length


class FeaturedHeuristic(HeuristicEstimator):
    """The heuristic, handing over an embedding-sized feature vector."""

    def score_with_features(self, messages: Sequence[ChatMessage]) -> tuple[float, Sequence[float] | None]:
        return self.score(messages), FEATURES


def engine(writer: OutcomeWriter | None) -> RoutingEngine:
    return RoutingEngine(
        CONFIG,
        estimator=FeaturedHeuristic(),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        outcomes=writer,
        log_decisions=False,
    )


async def run(n: int, folder: Path) -> dict[str, Any]:
    writer = OutcomeWriter(SqliteOutcomeStore(folder / "outcomes.sqlite3"), salt="bench")
    engines = {"off": engine(None), "on": engine(writer)}
    requests = [
        ChatCompletionRequest.model_validate(
            {"model": "hybrid-router", "messages": [{"role": "user", "content": p}]}
        )
        for p in PROMPTS
    ]
    samples: dict[str, list[float]] = {"off": [], "on": []}
    warm_up = 2 * BLOCK
    for block in range((n + warm_up) // BLOCK):
        for mode in ("off", "on") if block % 2 else ("on", "off"):
            for i in range(BLOCK):
                started = time.perf_counter()
                await engines[mode].complete(requests[i % len(requests)], TENANT)
                if block * BLOCK >= warm_up:
                    samples[mode].append((time.perf_counter() - started) * 1000.0)
            if mode == "on":  # untimed: the writer's work must not land on the next "off" block
                await asyncio.to_thread(writer.flush)
    record_ms = time_record(writer, requests[0], n)
    flushed_at = time.perf_counter()
    await engines["on"].aclose()
    close_ms = (time.perf_counter() - flushed_at) * 1000.0
    stats = writer.stats()
    reader = SqliteOutcomeStore(folder / "outcomes.sqlite3")
    rows = reader.count()
    reader.close()
    off, on = percentiles(samples["off"]), percentiles(samples["on"])
    return {
        "requests_per_mode": n,
        "complete_off": off,
        "complete_on": on,
        "added_p50_ms": round(on["p50_ms"] - off["p50_ms"], 3),
        "added_p99_ms": round(on["p99_ms"] - off["p99_ms"], 3),
        "record_call": percentiles(record_ms),
        "writer": stats,
        "rows_in_sqlite": rows,
        "close_flush_ms": round(close_ms, 1),
        "budget_p99_ms": 0.1,
    }


def time_record(writer: OutcomeWriter, request: ChatCompletionRequest, n: int) -> list[float]:
    """`OutcomeWriter.record` alone, paced so that the queue never fills (its drop path is not timed)."""
    from hyrouter.router import Decision, RouteReason

    decision = Decision(
        "edge", RouteReason.SCORE_BELOW_THRESHOLD, 0.1, 0.7, "free", "acme", "heuristic@1.0.0"
    )
    samples = []
    for i in range(n):
        outcome = RequestOutcome(
            decision,
            "edge-model",
            200,
            False,
            10,
            2,
            completion_id=f"chatcmpl-r{i}",
            features=FEATURES,
            request=request,
        )
        started = time.perf_counter()
        writer.record(outcome)
        samples.append((time.perf_counter() - started) * 1000.0)
        if i % 100 == 99:
            writer.flush()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(run(args.requests, Path(folder)))
    report("outcomes", result)


if __name__ == "__main__":
    main()
