"""What every benchmark shares: percentiles, the JSON report, and the router on loopback."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50, p90, p99, mean of a list of milliseconds."""
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "mean_ms": round(statistics.fmean(samples_ms), 3),
        "n": len(samples_ms),
    }


def report(name: str, result: dict[str, Any]) -> None:
    """Print `result` as JSON and write it to bench/results/<name>.json, with the machine it ran on."""
    result = {
        "benchmark": name,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        **result,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
