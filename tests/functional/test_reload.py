"""SIGHUP reloads the config file of a running `hybrid-router serve`: the next requests see it, a stream
in flight finishes on the config it started with, and an invalid file keeps the last good config."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import KEYS, free_port, make_router_config, router_process, spawn_router, wait_until_up

pytestmark = pytest.mark.functional

FREE = {"authorization": f"Bearer {KEYS['free']}"}


def free_threshold(base: str) -> float:
    policy = httpx.get(f"{base}/v1/edge/config", headers=FREE, timeout=10).json()["policy"]
    return float(policy["routing"]["threshold"])


def hang_up_until(
    process: subprocess.Popen[bytes], base: str, threshold: float, timeout_s: float = 20
) -> None:
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while free_threshold(base) != threshold:
        assert time.monotonic() < deadline, "the reload never took effect"
        time.sleep(0.1)


def test_sighup_reloads_without_dropping_a_stream_and_keeps_the_last_good_config(tmp_path: Path) -> None:
    config: dict[str, Any] = make_router_config(None)
    config["edge"]["max_tokens"] = 400  # a stream of several seconds: it outlasts the reload
    with router_process(config, tmp_path) as (process, base):
        config_file = next(tmp_path.glob("router-*.yaml"))
        log_file = next(tmp_path.glob("router-*.log"))
        assert free_threshold(base) == 0.7
        body = {
            "model": "hybrid-router",
            "stream": True,
            "max_tokens": 96,
            "messages": [{"role": "user", "content": "Count from one to forty in words."}],
        }
        edge_only = {"authorization": f"Bearer {KEYS['edge-only']}"}
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json=body, headers=edge_only, timeout=60
        ) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            # The stream is open: the config changes under it.
            config["tiers"]["free"]["threshold"] = 0.123
            config_file.write_text(yaml.safe_dump(config))
            hang_up_until(process, base, 0.123)
            reloaded_at = time.monotonic()
            events = [first, *(line for line in lines if line.startswith("data: "))]
            # Tokens were still being generated after the reload (not read from a buffer).
            assert time.monotonic() - reloaded_at > 0.1
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(event[6:]) for event in events[:-1]]
        assert not [c for c in chunks if "error" in c]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

        # An invalid file: logged on one line, the last good config still served.
        for broken in (
            "tiers: [free, {threshold: ",
            yaml.safe_dump({**config, "tiers": {"free": {"threshold": 7}}}),
        ):
            config_file.write_text(broken)
            process.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            assert process.poll() is None
            assert free_threshold(base) == 0.123
            assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        failures = [line for line in log_file.read_text().splitlines() if "config reload failed" in line]
        assert len(failures) == 2, failures
        assert "keeping the last good config" in failures[0] and "not valid YAML" in failures[0]
        assert "tiers.free.threshold" in failures[1]


def test_sighup_while_starting_does_not_kill_the_server(tmp_path: Path) -> None:
    port = free_port()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(make_router_config(None)))
    log_file = tmp_path / "router.log"
    with log_file.open("wb") as log:
        process = spawn_router(config_file, port, stdout=log)
        try:
            time.sleep(1.5)  # importing, checking the llama.cpp build, loading the model (or sooner)
            process.send_signal(signal.SIGHUP)
            wait_until_up(process, f"http://127.0.0.1:{port}", log_file, 120)
            assert free_threshold(f"http://127.0.0.1:{port}") == 0.7
        finally:
            process.terminate()
            process.wait(timeout=15)
