"""Big requests: token counting time by message count, and /healthz while one big request is routed.

    python -m bench.big_request

Counting: SmolLM2's tokenizer on N short ChatML messages, the whole prompt in one call (what the
router did before: its time grows with the square of N) against `LlamaCppBackend.count_tokens` (turn
by turn), in one run. Serving: a real router on loopback (the edge model, no cloud) answers a request
of N messages or of C characters while /healthz is polled every 10 ms; the idle /healthz latency of
the same run is the baseline.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.common import report
from hyrouter.edge.llama_cpp_backend import LlamaCppBackend, _plain_messages, render_chatml
from hyrouter.router import ChatMessage, EdgeConfig
from tests.servers import KEYS, make_router_config, running_router

COUNTS = (1000, 2000, 4000, 10000)
REQUESTS: tuple[tuple[str, int], ...] = (
    ("messages", 1000),
    ("messages", 2000),
    ("messages", 4000),
    ("messages", 10000),
    ("chars", 390_000),
    ("chars", 500_000),
)


def conversation(n: int) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}, hello there"}
        for i in range(n)
    ]


def counting() -> list[dict[str, Any]]:
    backend = LlamaCppBackend(EdgeConfig(n_ctx=512, n_threads=1))
    backend.load()
    llm = backend._llm
    assert llm is not None
    rows = []
    for n in COUNTS:
        messages = [ChatMessage.model_validate(m) for m in conversation(n)]
        started = time.perf_counter()
        whole = len(
            llm.tokenize(render_chatml(_plain_messages(messages)).encode(), add_bos=False, special=True)
        )
        one_call_s = time.perf_counter() - started
        started = time.perf_counter()
        counted = backend.count_tokens(messages)
        turn_by_turn_s = time.perf_counter() - started
        assert counted == whole
        rows.append(
            {
                "messages": n,
                "tokens": counted,
                "one_call_s": round(one_call_s, 3),
                "turn_by_turn_s": round(turn_by_turn_s, 3),
            }
        )
    return rows


def serving() -> dict[str, Any]:
    headers = {"authorization": f"Bearer {KEYS['free']}"}
    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base = stack.enter_context(running_router(make_router_config(None), tmp))
        client = stack.enter_context(httpx.Client(base_url=base, timeout=120))
        idle = []
        for _ in range(50):
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            idle.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        for kind, size in REQUESTS:
            if kind == "messages":
                body = {"model": "hybrid-router", "messages": conversation(size)}
            else:
                text = "lorem ipsum dolor sit amet " * (size // 27)
                body = {"model": "hybrid-router", "messages": [{"role": "user", "content": text}]}
            answer: dict[str, Any] = {}

            def big(body: dict[str, Any] = body, answer: dict[str, Any] = answer) -> None:
                started = time.perf_counter()
                r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=120)
                error = r.json().get("error") or {}
                answer.update(status=r.status_code, code=error.get("code"))
                answer["seconds"] = round(time.perf_counter() - started, 3)

            thread = threading.Thread(target=big)
            thread.start()
            during = []
            while thread.is_alive():
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                during.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)
            thread.join()
            rows.append(
                {
                    kind: size,
                    "body_kb": len(json.dumps(body)) // 1024,
                    **answer,
                    "healthz_polls": len(during),
                    "healthz_max_ms": round(max(during), 1),
                }
            )
    return {"healthz_idle_max_ms": round(max(idle), 1), "requests": rows}


def main() -> None:
    report("big_request", {"counting": counting(), "serving": serving()})


if __name__ == "__main__":
    main()
