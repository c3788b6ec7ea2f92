"""`hybrid-router eval` end to end: the table, the JSON numbers and the PNG curves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_eval_writes_json_and_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "eval.json", tmp_path / "curves.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hyrouter.cloud.cli",
            "eval",
            "--benchmark",
            "gsm8k",
            "--benchmark",
            "mt-bench",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "APGR" in result.stdout
    report = json.loads(out.read_text())
    routers = report["benchmarks"]["gsm8k"]["routers"]
    assert routers["random"]["apgr"] == 0.5
    assert {"heuristic@1.0.0", "static-minilm@1.1.0", "prompt-length", "litellm-complexity"} <= set(routers)
    assert report["benchmarks"]["mt-bench"]["contaminated_excluded"] == 8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
