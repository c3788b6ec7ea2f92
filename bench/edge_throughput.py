"""Edge generation through the router vs llama-cpp-python directly, same model, prompt and settings.

    python -m bench.edge_throughput [--tokens 128] [--rounds 3]

Both sides generate greedily (temperature 0) from the same prompt, alternately, never at once;
tokens/s counts completion tokens over the whole call (prompt processing included on both sides).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.common import report
from hyrouter.edge.model_files import default_model_path
from tests.servers import KEYS, make_router_config, running_router

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import llama_cpp

    threads = os.cpu_count() or 1
    config = make_router_config(None)
    config["edge"].update(n_ctx=2048, n_threads=threads, max_tokens=args.tokens)
    messages = [{"role": "user", "content": PROMPT}]
    direct_tps: list[float] = []
    routed_tps: list[float] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base = stack.enter_context(running_router(config, tmp))
        client = stack.enter_context(
            httpx.Client(
                base_url=f"{base}/v1", timeout=300, headers={"authorization": f"Bearer {KEYS['free']}"}
            )
        )
        llm = llama_cpp.Llama(
            model_path=str(default_model_path()),
            n_ctx=2048,
            n_threads=threads,
            n_batch=512,
            chat_format="chatml",
            verbose=False,
        )
        for _ in range(args.rounds):
            started = time.perf_counter()
            out = llm.create_chat_completion(
                messages=messages,
                max_tokens=args.tokens,  # type: ignore[arg-type]
                temperature=0.0,
            )
            direct_tps.append(out["usage"]["completion_tokens"] / (time.perf_counter() - started))  # type: ignore[index]
            started = time.perf_counter()
            response = client.post(
                "/chat/completions",
                json={
                    "model": "hybrid-router",
                    "messages": messages,
                    "max_tokens": args.tokens,
                    "temperature": 0,
                },
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            assert response.headers["x-route-target"] == "edge"
            routed_tps.append(response.json()["usage"]["completion_tokens"] / elapsed)
        llm.close()
    direct, routed = statistics.median(direct_tps), statistics.median(routed_tps)
    report(
        "edge_throughput",
        {
            "max_tokens": args.tokens,
            "rounds": args.rounds,
            "threads": threads,
            "direct_tokens_per_s": round(direct, 1),
            "through_router_tokens_per_s": round(routed, 1),
            "ratio": round(routed / direct, 3),
            "target_ratio": 0.95,
            "samples": {
                "direct": [round(x, 1) for x in direct_tps],
                "router": [round(x, 1) for x in routed_tps],
            },
        },
    )


if __name__ == "__main__":
    main()
