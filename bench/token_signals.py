"""What reading each token's log-probability costs the edge model: generation with `logprobs` on vs off.

    python -m bench.token_signals [--tokens 64] [--rounds 4]

The same backend (`LlamaCppBackend`, SmolLM2), prompt and greedy settings, the two modes alternating,
never at once; ms per completion token over the whole call. `logprobs: true` reads every step's logits
as llama.cpp samples (`hyrouter.edge._token_signals`), with no `logits_all`. On a noisy machine the
end-to-end ratio swings by more than the cost itself, so the step's own cost is timed too
(`step_signals` on a logits row of the model's vocabulary: top 2 as verification reads, top 5 as
`top_logprobs: 5` does) and given as a share of a token's generation time.
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
        assert backend._llm is not None  # loaded above
        vocab = int(backend._llm.n_vocab())
        for _ in range(rounds):
            for name, request in modes.items():
                started = time.perf_counter()
                answer = await backend.complete(request, max_tokens=tokens)
                elapsed_ms = (time.perf_counter() - started) * 1000
                ms_per_token[name].append(elapsed_ms / max(1, answer.usage.completion_tokens))
    finally:
        await backend.aclose()
    median = {name: statistics.median(values) for name, values in ms_per_token.items()}
    step_ms = {f"top{top}": _step_ms(vocab, top) for top in (2, 5)}
    return {
        "vocab": vocab,
        "step_signals_ms": step_ms,
        "step_share_of_token": {k: round(v / median["off"], 5) for k, v in step_ms.items()},
        "tokens": tokens,
        "rounds": rounds,
        "ms_per_token": {name: [round(v, 3) for v in values] for name, values in ms_per_token.items()},
        "median_ms_per_token": {name: round(v, 3) for name, v in median.items()},
        "on_over_off": round(median["on"] / median["off"], 4),
    }


def _step_ms(vocab: int, top: int, repeats: int = 2000) -> float:
    """The ms `step_signals` takes on one random logits row of `vocab` entries (mean of `repeats`)."""
    import numpy as np

    from hyrouter.edge._token_signals import step_signals

    row = (np.random.default_rng(0).normal(size=vocab) * 3).astype(np.float32)
    step_signals(row, top)
    started = time.perf_counter()
    for _ in range(repeats):
        step_signals(row, top)
    return round((time.perf_counter() - started) * 1000 / repeats, 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    report("token_signals", asyncio.run(_run(args.tokens, args.rounds)))


if __name__ == "__main__":
    main()
