"""Cold start: `import router`, and process start → first routed answer (edge model loaded).

python -m bench.cold_start [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.common import report
from tests.servers import KEYS, free_port, make_router_config, spawn_router

BODY = {"model": "hybrid-router", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


def time_command(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - started) * 1000


def first_answer_ms(config_file: Path) -> float:
    port = free_port()
    started = time.perf_counter()
    process = spawn_router(config_file, port)
    try:
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=BODY,
                    timeout=30,
                    headers={"authorization": f"Bearer {KEYS['free']}"},
                )
                if r.status_code == 200:
                    return (time.perf_counter() - started) * 1000
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError("router did not answer")
            time.sleep(0.02)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(yaml.safe_dump(make_router_config(None)))
        python_ms = [time_command("pass") for _ in range(args.runs)]
        router_ms = [time_command("import router") for _ in range(args.runs)]
        app_ms = [
            time_command("import hyrouter.cloud.app, hyrouter.edge.llama_cpp_backend")
            for _ in range(args.runs)
        ]
        answer_ms = [first_answer_ms(config_file) for _ in range(args.runs)]
    med = statistics.median
    report(
        "cold_start",
        {
            "runs": args.runs,
            "python_startup_ms": round(med(python_ms), 1),
            "import_router_ms": round(med(router_ms) - med(python_ms), 1),
            "import_app_and_edge_ms": round(med(app_ms) - med(python_ms), 1),
            "process_start_to_first_routed_answer_ms": round(med(answer_ms), 1),
            "samples_first_answer_ms": [round(x, 1) for x in answer_ms],
        },
    )


if __name__ == "__main__":
    main()
