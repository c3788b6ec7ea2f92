"""SIGTERM with a stream in flight: stop accepting, end the stream with an error event after the grace
period, exit; `demo` stops its stand-in GPU endpoint too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    KEYS,
    MisbehavingUpstream,
    free_port,
    make_router_config,
    router_process,
    wait_until_up,
)

pytestmark = pytest.mark.functional

GRACE_S = 2.0
MARGIN_S = 6.0  # uvicorn's own limit (grace + 2 s) and the lifespan's shutdown, on a loaded machine


def test_sigterm_ends_an_open_stream_with_an_error_event_and_exits(tmp_path: Path) -> None:
    with MisbehavingUpstream("slow") as upstream:
        config = make_router_config(upstream.url, server={"shutdown_grace_s": GRACE_S})
        with router_process(config, tmp_path) as (process, base):
            lines: list[str] = []
            first_token = threading.Event()

            def read_stream() -> None:
                body = {
                    "model": "hybrid-router",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Count forever"}],
                }
                headers = {"authorization": f"Bearer {KEYS['strict']}"}  # cloud only, no edge fallback
                try:
                    with httpx.stream(
                        "POST", f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60
                    ) as response:
                        for line in response.iter_lines():
                            if line:
                                lines.append(line)
                                first_token.set()
                except httpx.HTTPError as exc:  # a stream cut without its end: asserted below
                    lines.append(f"cut: {exc!r}")

            waiting: list[httpx.Response] = []

            def ask_not_streamed() -> None:  # the slow upstream never finishes a JSON answer
                body = {"model": "hybrid-router", "messages": [{"role": "user", "content": "Hi"}]}
                headers = {"authorization": f"Bearer {KEYS['strict']}"}
                with contextlib.suppress(httpx.HTTPError):
                    waiting.append(
                        httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
                    )

            reader = threading.Thread(target=read_stream, daemon=True)
            asker = threading.Thread(target=ask_not_streamed, daemon=True)
            reader.start()
            asker.start()
            assert first_token.wait(30), "the stream did not start"
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                httpx.get(f"{base}/health", timeout=2)
            process.wait(timeout=GRACE_S + MARGIN_S)
            took = time.monotonic() - sent
            reader.join(5)
            asker.join(5)
    assert GRACE_S - 0.5 <= took <= GRACE_S + MARGIN_S
    assert not reader.is_alive() and not asker.is_alive()
    (answer,) = waiting  # a request not answered within the grace gets a 503, not a dropped connection
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "server_shutting_down"
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    ticks = [line for line in lines[:-2] if '"tick ' in line]
    assert len(ticks) >= 2  # the stream went on during the grace period


def group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` still runs (signal 0 only asks)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_demo_and_its_stand_in(tmp_path: Path) -> None:
    """demo in a session of its own: the stand-in it starts is in its process group, so that the group
    empties exactly when both have stopped (no /proc needed), and a failure kills them all."""
    port, cloud_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_ROUTER_CLOUD_")}
    log_file = tmp_path / "demo.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "hyrouter.cloud.cli", "demo", "--port", str(port)),
                *("--cloud-port", str(cloud_port), "--cloud-log", str(tmp_path / "standin.log")),
                *("--no-edge-check", "--no-access-log", "--log-level", "warning"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}", log_file, 180)
        standin = httpx.get(f"http://127.0.0.1:{cloud_port}/v1/models", timeout=30)
        assert standin.status_code == 200, "demo started no stand-in"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10 + MARGIN_S)  # the demo config's grace period, 10 s, with nothing in flight
        deadline = time.monotonic() + 5
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(process.pid), "the stand-in outlived demo"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{cloud_port}/v1/models", timeout=2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # never leave one behind, whatever failed
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
