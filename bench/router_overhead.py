"""Router overhead: the same upstream called directly and through the router, interleaved, in one run.

    python -m bench.router_overhead [--requests 300] [--concurrency 32] [--seconds 5]

The upstream is `bench.canned_upstream` (answers at once), so the difference is the router's work:
HTTP parse, auth, validation, token count, estimate, decide, the upstream call, accounting, response.
One client, interleaved, gives the overhead per request; then `--concurrency` clients for `--seconds`
each, on the upstream alone and through the router, give the requests per second at saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.common import percentiles, report
from tests.servers import KEYS, free_port, make_router_config, running_router

BODY = {
    "model": "hybrid-router",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 8,
}


async def saturate(base_url: str, headers: dict[str, str], clients: int, seconds: float) -> dict[str, float]:
    """`clients` clients sending one request after another for `seconds`: answers per second."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    answered = errors = 0
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal answered, errors
            while time.perf_counter() < stop:
                response = await client.post("/chat/completions", json=BODY)
                if response.status_code == 200:
                    answered += 1
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"requests_per_s": round(answered / elapsed, 1), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with ExitStack() as stack:
        port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "bench.canned_upstream", "--port", str(port)])
        stack.callback(upstream.terminate)
        upstream_url = f"http://127.0.0.1:{port}/v1"
        for _ in range(100):
            try:
                httpx.get(f"{upstream_url}/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = make_router_config(upstream_url)
        config["cloud"]["model"] = "canned"
        router = stack.enter_context(running_router(config, tmp))
        direct = stack.enter_context(httpx.Client(base_url=upstream_url, timeout=30))
        routed = stack.enter_context(
            httpx.Client(
                base_url=f"{router}/v1", timeout=30, headers={"authorization": f"Bearer {KEYS['premium']}"}
            )
        )
        for _ in range(20):  # warm both paths: connections, caches
            direct.post("/chat/completions", json=BODY).raise_for_status()
            routed.post("/chat/completions", json=BODY).raise_for_status()
        direct_ms: list[float] = []
        routed_ms: list[float] = []
        for _ in range(args.requests):  # interleaved, so machine noise hits both alike
            for client, samples in ((direct, direct_ms), (routed, routed_ms)):
                started = time.perf_counter()
                response = client.post("/chat/completions", json=BODY)
                samples.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            assert response.headers["x-route-target"] == "cloud"
        premium = {"authorization": f"Bearer {KEYS['premium']}"}
        direct_load = asyncio.run(saturate(upstream_url, {}, args.concurrency, args.seconds))
        routed_load = asyncio.run(saturate(f"{router}/v1", premium, args.concurrency, args.seconds))
    d, r = percentiles(direct_ms), percentiles(routed_ms)
    report(
        "router_overhead",
        {
            "requests": args.requests,
            "direct": d,
            "through_router": r,
            "overhead_p50_ms": round(r["p50_ms"] - d["p50_ms"], 3),
            "overhead_p99_ms": round(r["p99_ms"] - d["p99_ms"], 3),
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "direct_saturated": direct_load,
            "through_router_saturated": routed_load,
            "targets": {"overhead_p50_ms": 2.0, "overhead_p99_ms": 10.0},
        },
    )


if __name__ == "__main__":
    main()
