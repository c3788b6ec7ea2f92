"""Load: N concurrent clients for T seconds against `hybrid-router serve` on loopback, a mix of tiers.

    python -m bench.load [--clients 16] [--seconds 20]      # make bench runs it with the defaults

The cloud is `bench.canned_upstream` (answers at once, streamed when asked); the edge is the real
SmolLM2. Each client sends one request after another, its tier and streaming fixed by its index (free
easy prompts on the edge, standard hard ones and premium on the cloud, every other client streams).
Reported: sent, answered (a 200 with a whole answer: a stream ends in `[DONE]` with no error event),
errors by status (or by exception), lost (sent − answered − errors: 0 expected), p50/p99 latency of
the answers, and the server's RSS and open file descriptors after the warm-up and after the run.
Bounded: at most 64 clients and 120 seconds. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import percentiles, report
from tests.servers import KEYS, free_port, make_router_config, router_process

MAX_CLIENTS, MAX_SECONDS = 64, 120.0
EASY = "What is the capital of France?"
HARD = "Prove step by step that the square root of 2 is irrational, and explain why the proof works."
#: (tier, prompt) by client index: the edge, the cloud by score, the cloud by tier.
MIX = (("free", EASY), ("standard", HARD), ("premium", EASY), ("free", EASY))


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    latencies_by_target: dict[str, list[float]] = field(default_factory=dict)
    by_tier: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)


def process_usage(pid: int) -> dict[str, int]:
    """RSS (kB) and open file descriptors of `pid`: psutil when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return {"rss_kb": rss_kb, "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}
    proc = psutil.Process(pid)
    return {"rss_kb": int(proc.memory_info().rss // 1024), "open_fds": int(proc.num_fds())}


def whole_answer(response: httpx.Response, stream: bool) -> bool:
    """Whether a 200's body is a complete answer (a stream: `[DONE]` last, no error event)."""
    if not stream:
        return bool(response.json()["choices"][0]["message"]["content"] is not None)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return bool(events) and events[-1] == "[DONE]" and not any(e.startswith('{"error"') for e in events)


async def client(base: str, index: int, until: float, tally: Tally) -> None:
    tier, prompt = MIX[index % len(MIX)]
    stream = index % 2 == 1
    body = {
        "model": "hybrid-router",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 8,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {KEYS[tier]}"}
    async with httpx.AsyncClient(base_url=base, timeout=60.0, headers=headers) as http:
        while time.monotonic() < until:
            tally.sent += 1
            tally.by_tier[tier] += 1
            started = time.perf_counter()
            try:
                response = await http.post("/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                tally.errors[type(exc).__name__] += 1
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if response.status_code != 200:
                tally.errors[str(response.status_code)] += 1
            elif not whole_answer(response, stream):
                tally.errors["200 with an error event"] += 1
            else:
                tally.answered += 1
                tally.latencies_ms.append(elapsed_ms)
                target = response.headers.get("x-route-target", "?")
                tally.targets[target] += 1
                tally.latencies_by_target.setdefault(target, []).append(elapsed_ms)


def wait_for(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16, help=f"concurrent clients (at most {MAX_CLIENTS})")
    parser.add_argument("--seconds", type=float, default=20.0, help=f"duration (at most {MAX_SECONDS:g})")
    args = parser.parse_args()
    clients = max(1, min(args.clients, MAX_CLIENTS))
    seconds = max(1.0, min(args.seconds, MAX_SECONDS))
    with ExitStack() as stack:
        port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "bench.canned_upstream", "--port", str(port)])
        stack.callback(upstream.wait, 10)
        stack.callback(upstream.terminate)
        upstream_url = f"http://127.0.0.1:{port}/v1"
        wait_for(f"{upstream_url}/models")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = make_router_config(upstream_url)
        config["cloud"]["model"] = "canned"
        server, base = stack.enter_context(router_process(config, tmp))
        warm = Tally()
        asyncio.run(run(base, min(clients, len(MIX) * 2), 2.0, warm))  # connections, caches, the model
        before = process_usage(server.pid)
        tally = Tally()
        started = time.monotonic()
        asyncio.run(run(base, clients, seconds, tally))
        wall_s = time.monotonic() - started
        time.sleep(1.0)  # let the server close what the clients left
        after = process_usage(server.pid)
    lost = tally.sent - tally.answered - sum(tally.errors.values())
    result: dict[str, Any] = {
        "clients": clients,
        "seconds": seconds,
        "wall_s": round(wall_s, 2),
        "mix": [{"tier": tier, "prompt": "easy" if p == EASY else "hard"} for tier, p in MIX],
        "streamed": "every other client",
        "sent": tally.sent,
        "answered": tally.answered,
        "errors": dict(tally.errors),
        "lost": lost,
        "answered_per_s": round(tally.answered / wall_s, 2),
        "sent_by_tier": dict(tally.by_tier),
        "answered_by_target": dict(tally.targets),
        "latency": percentiles(tally.latencies_ms) if len(tally.latencies_ms) > 1 else {},
        "latency_by_target": {
            target: percentiles(samples)
            for target, samples in tally.latencies_by_target.items()
            if len(samples) > 1
        },
        "server": {
            "before": before,
            "after": after,
            "rss_growth_kb": after["rss_kb"] - before["rss_kb"],
            "fd_growth": after["open_fds"] - before["open_fds"],
        },
        "expected": {"lost": 0, "fd_growth": 0},
    }
    report("load", result)


async def run(base: str, clients: int, seconds: float, tally: Tally) -> None:
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(base, i, until, tally) for i in range(clients)))


if __name__ == "__main__":
    main()
