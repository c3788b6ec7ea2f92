"""Continuous batching on the edge vs one request at a time: aggregate and per-request tokens/s.

    python -m bench.edge_batching [--tokens 64] [--rounds 2] [--parallel 4] [--models smollm2,gemma]
                                  [--no-http]

At 1, 2, 4 and 8 concurrent requests (each a different story prompt, greedy, `--tokens` at most),
the same model is run by two `LlamaCppBackend`s, one with `edge.parallel: 1` (today's path) and one
with `--parallel`, alternately, never at once. Aggregate tokens/s counts every request's completion
tokens over the wall time of the whole burst; per-request tokens/s is a request's completion tokens
over its own latency (queueing included), averaged. Then (unless `--no-http`) the same at 1 and 4
concurrent requests through the router over HTTP (`hybrid-router serve` on loopback, edge-only).

Models: SmolLM2-135M-Instruct (ChatML) and Gemma-3-270M (chat format "gemma": the batch takes the
prompt its llama-cpp-python handler renders; the `gemma` extra, left out with a note when not
installed). For each, a lone request's greedy answers on the two paths are compared (`lone_answers_equal`).
The router over HTTP runs SmolLM2, the default edge model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.common import report
from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.models.edge_labels import model_file
from hyrouter.models.routing_data import GEMMA3
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import ConfigError
from hyrouter.router._wire import ChatCompletionRequest
from tests.servers import KEYS, make_router_config, running_router

TOPICS = ["a dragon", "a lighthouse keeper", "a lost robot", "a pirate ship", "a snowy village"]
TOPICS += ["a clockmaker", "a desert caravan", "a talking cat"]
LEVELS = (1, 2, 4, 8)
TARGET_AGGREGATE_AT_4 = 1.6
TARGET_PER_REQUEST_AT_4 = 0.5  # of a lone request's tokens/s


def prompt(i: int) -> str:
    return f"Write a long story about {TOPICS[i % len(TOPICS)]}."


def body(i: int, tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt(i)}]
    return {"model": "hybrid-router", "messages": messages, "max_tokens": tokens, "temperature": 0}


def summary(counts: list[int], latencies: list[float], wall: float) -> dict[str, float]:
    speeds = [c / s for c, s in zip(counts, latencies, strict=True)]
    return {
        "aggregate_tokens_per_s": round(sum(counts) / wall, 1),
        "per_request_tokens_per_s": round(statistics.fmean(speeds), 1),
        "completion_tokens": sum(counts),
        "wall_s": round(wall, 3),
    }


async def burst(edge: LlamaCppBackend, concurrent: int, tokens: int) -> tuple[dict[str, float], list[str]]:
    """The burst's figures and its answers."""

    async def one(i: int) -> tuple[int, float, str]:
        started = time.perf_counter()
        response = await edge.complete(
            ChatCompletionRequest.model_validate(body(i, tokens)), max_tokens=tokens
        )
        text = response.choices[0].message.content or ""
        return response.usage.completion_tokens, time.perf_counter() - started, text

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(concurrent)))
    figures = summary([c for c, _, _ in done], [s for _, s, _ in done], time.perf_counter() - started)
    return figures, [t for _, _, t in done]


async def http_burst(client: httpx.AsyncClient, concurrent: int, tokens: int) -> dict[str, float]:
    async def one(i: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = await client.post("/chat/completions", json=body(i, tokens))
        response.raise_for_status()
        assert response.headers["x-route-target"] == "edge"
        return int(response.json()["usage"]["completion_tokens"]), time.perf_counter() - started

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(concurrent)))
    return summary([c for c, _ in done], [s for _, s in done], time.perf_counter() - started)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def compare(single: dict[int, dict[str, float]], batched: dict[int, dict[str, float]]) -> dict[str, Any]:
    lone = single[1]["per_request_tokens_per_s"]
    return {
        str(level): {
            "one_at_a_time": single[level],
            "batched": batched[level],
            "aggregate_ratio": round(
                batched[level]["aggregate_tokens_per_s"] / single[level]["aggregate_tokens_per_s"], 3
            ),
            "per_request_vs_lone": round(batched[level]["per_request_tokens_per_s"] / lone, 3),
        }
        for level in single
    }


def model_config(key: str) -> dict[str, Any]:
    """`EdgeConfig` fields of the model `key` ("smollm2" or "gemma"); raises `ConfigError` when the
    gemma package is not installed."""
    if key == "smollm2":
        return {}
    return {"model_path": str(model_file(GEMMA3)), "model_id": GEMMA3.key, "chat_format": "gemma"}


async def direct(
    args: argparse.Namespace, threads: int, model: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float], bool]:
    common: dict[str, Any] = {"n_ctx": 2048, "n_threads": threads, "max_queue": 16, "seed": 0}
    common.update(queue_timeout_s=600.0, **model)
    single = LlamaCppBackend(EdgeConfig(parallel=1, **common))
    batched = LlamaCppBackend(EdgeConfig(parallel=args.parallel, **common))
    single.load()
    batched.load()
    assert batched._batch is not None, "the model's chat format was not batched"
    runs: dict[str, dict[int, list[dict[str, float]]]] = {"single": {}, "batched": {}}
    steps: dict[str, float] = {}
    lone_equal = True
    try:
        for _ in range(args.rounds):
            for level in LEVELS:
                answers = []
                for name, edge in (("single", single), ("batched", batched)):
                    figures, texts = await burst(edge, level, args.tokens)
                    runs[name].setdefault(level, []).append(figures)
                    answers.append(texts)
                if level == 1:  # greedy, alone in the batch: the one-at-a-time answer
                    lone_equal = lone_equal and answers[0] == answers[1]
                assert batched._batch is not None
                width = min(level, args.parallel)  # the decoder's own measure of its steps
                if (tps := batched._batch.scheduler.times.tokens_per_s(width)) is not None:
                    steps[str(width)] = round(tps, 1)
    finally:
        await single.aclose()
        await batched.aclose()
    medians = {name: {level: median_of(r) for level, r in by.items()} for name, by in runs.items()}
    return compare(medians["single"], medians["batched"]), steps, lone_equal


async def through_router(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    levels = (1, 4)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {"single": {}, "batched": {}}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bases = {}
        for name, parallel in (("single", 1), ("batched", args.parallel)):
            config = make_router_config(None)
            config["edge"].update(
                n_ctx=2048, n_threads=threads, max_tokens=args.tokens, parallel=parallel, max_queue=16
            )
            bases[name] = stack.enter_context(running_router(config, tmp))
        headers = {"authorization": f"Bearer {KEYS['edge-only']}"}
        for _ in range(args.rounds):
            for level in levels:
                for name, base in bases.items():
                    async with httpx.AsyncClient(base_url=f"{base}/v1", timeout=600, headers=headers) as c:
                        runs[name].setdefault(level, []).append(await http_burst(c, level, args.tokens))
    medians = {name: {level: median_of(r) for level, r in by.items()} for name, by in runs.items()}
    return compare(medians["single"], medians["batched"])


def measure(args: argparse.Namespace, threads: int, key: str) -> dict[str, Any]:
    """The direct comparison for the model `key`."""
    try:
        model = model_config(key)
    except ConfigError as exc:
        return {"left_out": str(exc)}
    by_level, steps, lone_equal = asyncio.run(direct(args, threads, model))
    at_4 = by_level["4"]
    return {
        "model": model.get("model_id", EdgeConfig().model_id),
        "chat_format": model.get("chat_format", EdgeConfig().chat_format),
        "lone_answers_equal": lone_equal,
        "concurrency": by_level,
        "decode_step_tokens_per_s_per_sequence_by_width": steps,
        "target_met": at_4["aggregate_ratio"] >= TARGET_AGGREGATE_AT_4
        and at_4["per_request_vs_lone"] >= TARGET_PER_REQUEST_AT_4,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--models", default="smollm2,gemma", help="comma-separated: smollm2, gemma")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    before = os.getloadavg()[0]
    result: dict[str, Any] = {
        "max_tokens": args.tokens,
        "rounds": args.rounds,
        "threads": threads,
        "parallel": args.parallel,
        "min_tokens_per_s": EdgeConfig().min_tokens_per_s,
        "target": {
            "aggregate_ratio_at_4": TARGET_AGGREGATE_AT_4,
            "per_request_vs_lone_at_4": TARGET_PER_REQUEST_AT_4,
        },
        "models": {},
    }
    for key in args.models.split(","):
        result["models"][key] = measure(args, threads, key)
        # other work on the machine skews every figure: the 1-minute load average before and after
        result["load_average"] = [round(before, 2), round(os.getloadavg()[0], 2)]
        report("edge_batching", result)  # kept should a later model or the router fail
    if not args.no_http:
        result["through_router_http"] = {
            "model": EdgeConfig().model_id,
            **asyncio.run(through_router(args, threads)),
        }
        result["load_average"] = [round(before, 2), round(os.getloadavg()[0], 2)]
        report("edge_batching", result)


if __name__ == "__main__":
    main()
