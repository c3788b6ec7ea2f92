"""Edge speed of the portable llama.cpp build against a native one (-march=native), side by side.

    python -m bench.llama_build [--rounds 5] [--tokens 64] [--threads N]

Both wheels come from infra/llama_cpp_build.py: the portable one as `make install` builds it, the
native one with `-DGGML_NATIVE=ON` (each built on first use, then kept in the keyed wheelhouse). Each
is unpacked into its own folder beside the wheelhouse (~/.cache/hybrid-router/bench); every round
runs one child process per build, alternately, never at once, on the same model, prompt, threads
and greedy decoding. llama.cpp's own counters give prompt tokens/s and generation tokens/s; the
report has the medians and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import report
from hyrouter.edge.model_files import default_model_path
from infra import llama_cpp_build as build

#: Where each wheel is unpacked for the children: beside the wheelhouse, never in the source tree.
CACHE = build.wheelhouse_root().parent / "bench"
NATIVE_ARGS = "-DGGML_NATIVE=ON"
# About 230 tokens of plain prose, so that prompt processing runs in full batches.
PROMPT = (
    "The lighthouse stood on a rock a mile from the shore, and for forty years the same family had kept "
    "its lamp burning through every storm. The keeper's logbook recorded the weather each morning, the "
    "ships that passed each afternoon, and the oil that the lamp consumed each night. "
) * 4 + "Continue the story of the keeper's last winter on the rock:"

_CHILD = """
import json, sys
import llama_cpp
path, prompt = sys.argv[1], sys.argv[2]
threads, tokens, runs = (int(a) for a in sys.argv[3:6])
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
llm.create_completion("Hello", max_tokens=2, temperature=0)  # page the weights in
results = []
for _ in range(runs):
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    llm.create_completion(prompt, max_tokens=tokens, temperature=0)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    results.append({
        "prompt_tokens": perf.n_p_eval, "prompt_tps": perf.n_p_eval / perf.t_p_eval_ms * 1e3,
        "gen_tokens": perf.n_eval, "gen_tps": perf.n_eval / perf.t_eval_ms * 1e3,
    })
print(json.dumps({"system_info": llama_cpp.llama_print_system_info().decode(), "runs": results}))
"""


def unpacked(wheel: Path) -> Path:
    """The wheel installed (no dependencies) into its own folder, once per wheelhouse digest."""
    target = CACHE / wheel.parent.name
    if not (target / "llama_cpp").is_dir():
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        subprocess.run([*command, "--target", str(target), str(wheel)], check=True)
    return target


def run_child(site: Path, threads: int, tokens: int) -> dict[str, Any]:
    """One child process on the build unpacked in `site`: two timed runs after a warm-up."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    numbers = [str(threads), str(tokens), "2"]
    command = [sys.executable, "-c", _CHILD, str(default_model_path()), PROMPT, *numbers]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout.splitlines()[-1]))


def main() -> None:
    """Build or reuse both wheels, run them alternately, report medians and native/portable ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    builds = {
        "portable": build.baseline_cmake_args(),
        "native": NATIVE_ARGS,
    }
    sites = {name: unpacked(build.ensure_wheel(cmake)) for name, cmake in builds.items()}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    info: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, site in sites.items():
            child = run_child(site, args.threads, args.tokens)
            info[name] = child["system_info"]
            runs[name].extend(child["runs"])
    summary: dict[str, Any] = {}
    for name, samples in runs.items():
        summary[name] = {
            "cmake_args": builds[name],
            "system_info": info[name],
            "prompt_tokens": samples[0]["prompt_tokens"],
            "prompt_tps_median": round(statistics.median(s["prompt_tps"] for s in samples), 1),
            "gen_tps_median": round(statistics.median(s["gen_tps"] for s in samples), 1),
            "runs": len(samples),
        }
    ratio = {
        f"portable_over_native_{metric}": round(
            summary["portable"][f"{metric}_median"] / summary["native"][f"{metric}_median"], 3
        )
        for metric in ("prompt_tps", "gen_tps")
    }
    report(
        "llama_build",
        {
            "model": default_model_path().name,
            "threads": args.threads,
            "gen_tokens": args.tokens,
            **summary,
            **ratio,
        },
    )


if __name__ == "__main__":
    main()
