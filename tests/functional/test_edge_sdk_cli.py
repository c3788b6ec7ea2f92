"""`hybrid-router edge ask` and `edge chat` as a user runs them (`python -m hyrouter.cloud.cli`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.functional

DEVICES = Path(__file__).parents[1] / "fixtures" / "device"
SMALL = ["--threads", "2", "--n-ctx", "512", "--max-tokens", "8"]


def edge_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYBRID_ROUTER_DEVICE_KEY": "some-device-key"}
    return subprocess.run(
        [sys.executable, "-m", "hyrouter.cloud.cli", "edge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_ask_offline_answers_on_the_device_and_says_so() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    done = edge_cli("ask", "What is the capital of France?", "--tier", "premium", "--cloud-url", dead, *SMALL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "[edge · offline · " in done.stderr and "OFFLINE]" in done.stderr


def test_ask_json_reads_device_signals_from_a_fixture_tree(tmp_path: Path) -> None:
    config = tmp_path / "device.yaml"
    config.write_text("tier: free\ncloud: {url: null}\n")
    done = edge_cli(
        "ask",
        "Hello there",
        "--config",
        str(config),
        "--signals-root",
        str(DEVICES / "laptop-low-battery"),
        "--json",
        *SMALL,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # Low battery prefers the cloud, but this device has none configured: answered here.
    assert answer["route"]["target"] == "edge" and answer["route"]["offline"] is False
    assert answer["choices"][0]["message"]["content"]


def test_chat_keeps_a_conversation_until_quit() -> None:
    done = edge_cli("chat", *SMALL, stdin="Hi\n/route\n/status\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert '"reason": "score_below_threshold"' in done.stdout
    assert '"offline": false' in done.stdout
    assert done.stderr.count("[edge · score_below_threshold") == 1


def test_a_bad_tier_is_a_clear_error() -> None:
    done = edge_cli("ask", "hi", "--tier", "gold")
    assert done.returncode == 2
    assert "unknown tier 'gold'" in done.stderr
