"""Where the router's CPU goes per request: `hybrid-router serve` under cProfile, saturated.

    python -m bench.router_profile [--concurrency 32] [--seconds 8] [--top 25]

The router runs in a subprocess under cProfile in front of `bench.canned_upstream` (which answers at
once), on the premium tier (always the cloud); `--concurrency` clients keep it busy for `--seconds`,
then it is stopped (SIGINT: uvicorn's graceful exit, so the profile is written). The JSON gives the
requests served, the CPU seconds of the router process per request, and the functions with the most
time of their own (tottime) and in total (cumtime), grouped into the parts a request goes through.
Times are the process's CPU time (not wall time: the event loop's idle waits are not counted). The
profiler slows the process down (several-fold): read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml

from bench.common import report
from bench.router_overhead import BODY, saturate
from tests.servers import KEYS, free_port, make_router_config, wait_until_up

#: Parts of a request's path, by the file a function lives in (first match wins).
PARTS = (
    ("httpx / httpcore (the upstream call)", ("httpx", "httpcore", "h11")),
    ("uvicorn / httptools / uvloop (serving)", ("uvicorn", "httptools", "uvloop")),
    ("starlette (routing)", ("starlette",)),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("json", ("json",)),
    ("logging", ("logging",)),
    ("asyncio", ("asyncio",)),
    ("C built-ins (sockets, the loop, hashing, ...)", ("~",)),
    ("hybrid-router", ("hyrouter", "/router/", "/cloud/", "/edge/")),
)


#: The router's CLI under cProfile on the process's CPU clock (the default clock is wall time, which
#: would count the event loop's idle waits as its own time), from SIGUSR1 on: start-up (imports, the
#: edge model's load) is left out.
_PROFILED = """
import cProfile, runpy, signal, sys, time
out, sys.argv = sys.argv[1], ["hybrid-router", *sys.argv[2:]]
profile = cProfile.Profile(time.process_time)
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())  # after start-up and a warm request
try:
    runpy.run_module("hyrouter.cloud.cli", run_name="__main__")
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def _part(filename: str) -> str:
    for name, needles in PARTS:
        if any(needle in filename for needle in needles):
            return name
    return "other"


def _wait_for_upstream(url: str) -> None:
    for _ in range(100):
        try:
            httpx.get(f"{url}/models", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="also copy the raw profile here (for pstats / snakeviz)")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        upstream_port, port = free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "bench.canned_upstream", "--port", str(upstream_port)]
        )
        stack.callback(upstream.terminate)
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        _wait_for_upstream(upstream_url)
        config = make_router_config(upstream_url)
        config["cloud"]["model"] = "canned"
        config_file = tmp / "router.yaml"
        config_file.write_text(yaml.safe_dump(config))
        profile = tmp / "router.prof"
        log = (tmp / "router.log").open("wb")
        serve = ["serve", "--config", str(config_file), "--port", str(port), "--log-level", "warning"]
        command = [sys.executable, "-c", _PROFILED, str(profile), *serve]
        router = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        wait_until_up(router, base, tmp / "router.log", 120.0)
        premium = {"authorization": f"Bearer {KEYS['premium']}"}
        for _ in range(20):  # warm: connections, caches
            httpx.post(
                f"{base}/v1/chat/completions", json=BODY, headers=premium, timeout=30
            ).raise_for_status()
        router.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        load = asyncio.run(saturate(f"{base}/v1", premium, args.concurrency, args.seconds))
        router.send_signal(signal.SIGINT)
        router.wait(timeout=60)
        stats = pstats.Stats(str(profile))
        if args.keep:
            args.keep.write_bytes(profile.read_bytes())
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    parts: dict[str, float] = {}
    for (filename, _, _), (_, _, tt, _, _) in entries.items():
        parts[_part(filename)] = parts.get(_part(filename), 0.0) + tt
    answered = round(load["requests_per_s"] * args.seconds)

    def top(index: int) -> list[dict[str, object]]:
        ranked = sorted(entries.items(), key=lambda item: item[1][index], reverse=True)[: args.top]
        return [
            {"function": f"{Path(f).name}:{line}({name})", "seconds": round(v[index], 3), "calls": v[1]}
            for (f, line, name), v in ranked
        ]

    report(
        "router_profile",
        {
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "answered": answered,
            "profiled_cpu_s": round(total, 3),
            "profiled_cpu_ms_per_request": round(total * 1000 / answered, 3),
            "share_by_part": {
                k: round(v / total, 4) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
            },
            "top_tottime": top(2),
            "top_cumtime": top(3),
        },
    )


if __name__ == "__main__":
    main()
