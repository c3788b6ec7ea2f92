"""What reading each token's log-probability costs the edge model: generation with `logprobs` on vs off.

    python -m bench.token_signals [--tokens 64] [--rounds 4]

The same backend (`LlamaCppBackend`, SmolLM2), prompt and greedy settings, the two modes alternating,
never at once; ms per completion token over the whole call. `logprobs: true` reads every step's logits
as llama.cpp samples (`hyrouter.edge._token_signals`), with no `logits_all`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from bench.common import report
from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.router import ChatCompletionRequest, EdgeConfig

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


async def _run(tokens: int, rounds: int) -> dict[str, object]:
    backend = LlamaCppBackend(EdgeConfig(n_ctx=1024, n_threads=os.cpu_count() or 1))
    backend.load()
    plain = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}
    )
    modes = {"off": plain, "on": plain.model_copy(update={"logprobs": True, "top_logprobs": 5})}
    ms_per_token: dict[str, list[float]] = {name: [] for name in modes}
    try:
        await backend.complete(plain, max_tokens=4)  # warm
        for _ in range(rounds):
            for name, request in modes.items():
                started = time.perf_counter()
                answer = await backend.complete(request, max_tokens=tokens)
                elapsed_ms = (time.perf_counter() - started) * 1000
                ms_per_token[name].append(elapsed_ms / max(1, answer.usage.completion_tokens))
    finally:
        await backend.aclose()
    median = {name: statistics.median(values) for name, values in ms_per_token.items()}
    return {
        "tokens": tokens,
        "rounds": rounds,
        "ms_per_token": {name: [round(v, 3) for v in values] for name, values in ms_per_token.items()},
        "median_ms_per_token": {name: round(v, 3) for name, v in median.items()},
        "on_over_off": round(median["on"] / median["off"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    report("token_signals", asyncio.run(_run(args.tokens, args.rounds)))


if __name__ == "__main__":
    main()
