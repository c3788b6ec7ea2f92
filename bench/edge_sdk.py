"""The on-device SDK: decision overhead, RSS with the model loaded, first token here vs via the cloud.

python -m bench.edge_sdk [--decisions 2000] [--ttft-runs 10]

- decision overhead: estimator + device signals + privacy scan + policy (`EdgeRouter.plan`'s work,
  with the real tokenizer counting prompt tokens), p50/p99, for a mix of easy, hard and personal prompts;
- RSS of this process before and after loading SmolLM2 (and after a first answer);
- time to first content token: answered on the device vs escalated through the real router on
  loopback to the stand-in GPU endpoint (the same model on the same CPU, so the gap is the path).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentiles, report
from hyrouter.edge import EdgeRouter, EdgeRouterConfig, StaticSignals
from hyrouter.router import ChatCompletionRequest
from tests.servers import KEYS, free_port, make_router_config, running_router

PROMPTS = [
    "What is the capital of France?",
    "Prove step by step that the square root of 2 is irrational, and explain why the proof works.",
    "Write a Python function that parses ISO dates and explain its complexity.",
    "Remind me to email jane.doe@example.com tomorrow and call +1 415 555 0132.",
    "Translate 'good morning' into Spanish.",
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(url: str | None, **extra: Any) -> EdgeRouterConfig:
    return EdgeRouterConfig.model_validate(
        {
            "tier": "free",
            "model": {"n_threads": 2, "n_ctx": 2048, "max_tokens": 16},
            "cloud": {"url": url},
            **extra,
        }
    )


def decision_overhead(router: EdgeRouter, n: int) -> dict[str, float]:
    requests = [
        ChatCompletionRequest.model_validate(
            {"model": "hybrid-router", "messages": [{"role": "user", "content": p}]}
        )
        for p in PROMPTS
    ]
    for r in requests:  # warm-up
        router._decide(r)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        router._decide(requests[i % len(requests)])
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


async def first_token_ms(router: EdgeRouter, prompt: str) -> tuple[float, str]:
    started = time.perf_counter()
    stream = await router.stream({"messages": [{"role": "user", "content": prompt}], "max_tokens": 16})
    first = None
    async for chunk in stream.chunks:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - started) * 1000
    assert first is not None
    return first, stream.route.target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--ttft-runs", type=int, default=10)
    args = parser.parse_args()

    rss_before = rss_mb()
    local = EdgeRouter.open(config(None))
    rss_loaded = rss_mb()
    asyncio.run(first_token_ms(local, PROMPTS[0]))
    rss_answered = rss_mb()

    overhead = {
        "privacy_off_signals_cached": decision_overhead(local, args.decisions),
        "privacy_on_signals_cached": decision_overhead(
            EdgeRouter(config(None, privacy={"keep_personal_data_local": True}), local=local.local),
            args.decisions,
        ),
        "privacy_on_signals_read_each_time": decision_overhead(
            EdgeRouter(
                config(None, privacy={"keep_personal_data_local": True}, signals_refresh_s=0),
                local=local.local,
            ),
            args.decisions,
        ),
        "estimator_and_policy_only": decision_overhead(
            EdgeRouter(config(None), local=local.local, signals=StaticSignals()), args.decisions
        ),
    }

    from hyrouter.cloud.standin import start_standin

    with tempfile.TemporaryDirectory() as tmp:
        standin = start_standin(port=free_port(), n_ctx=2048, n_threads=2, log_file=Path(tmp) / "standin.log")
        try:
            with running_router(make_router_config(standin.url), Path(tmp)) as base:
                premium = config(f"{base}/v1", tier="premium")
                cloud = EdgeRouter(premium, local=local.local, api_key=KEYS["premium"])

                async def ttft() -> tuple[list[float], list[float]]:
                    here, there = [], []
                    for _ in range(args.ttft_runs):
                        ms, target = await first_token_ms(local, PROMPTS[0])
                        assert target == "edge"
                        here.append(ms)
                        ms, target = await first_token_ms(cloud, PROMPTS[0])
                        assert target == "cloud"
                        there.append(ms)
                    await cloud.escalation.aclose()
                    return here, there

                await_first = asyncio.run(first_token_ms(cloud, PROMPTS[0]))  # warm the path
                assert await_first[1] == "cloud"
                here, there = asyncio.run(ttft())
        finally:
            standin.stop()

    med = statistics.median
    report(
        "edge_sdk",
        {
            "decision_overhead_ms": overhead,
            "rss_mb": {
                "before_model": round(rss_before, 1),
                "model_loaded": round(rss_loaded, 1),
                "after_first_answer": round(rss_answered, 1),
                "target": "< 300 MB with SmolLM2",
            },
            "time_to_first_token_ms": {
                "runs": args.ttft_runs,
                "local_p50": round(med(here), 1),
                "cloud_via_loopback_router_p50": round(med(there), 1),
                "local_samples": [round(x, 1) for x in here],
                "cloud_samples": [round(x, 1) for x in there],
            },
        },
    )


if __name__ == "__main__":
    main()
