"""The stand-in GPU endpoint: llama-cpp-python's OpenAI-compatible server on loopback.

`make run` and the functional tests start it where a real deployment has vLLM or SageMaker LMI;
the router talks to it over HTTP exactly as it would to those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

STANDIN_MODEL_ALIAS = "cloud-standin"


@dataclass
class StandinEndpoint:
    """A running stand-in endpoint process."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        """Stop the process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_standin(
    *,
    port: int,
    model_path: Path | None = None,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> StandinEndpoint:
    """Start llama-cpp-python's server on `host:port` and wait until it answers `/v1/models`."""
    from hyrouter.edge.model_files import default_model_path

    model = model_path or default_model_path()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        STANDIN_MODEL_ALIAS,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(n_threads or os.cpu_count() or 1),
        "--chat_format",
        "chatml",
        "--verbose",
        "False",
    ]
    if log_file is None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    else:
        with log_file.open("ab") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    endpoint = StandinEndpoint(process, f"http://{host}:{port}/v1")
    try:
        _wait_until_ready(endpoint, ready_timeout_s, log_file)
    except BaseException:  # a signal (SystemExit, KeyboardInterrupt) while waiting too: no orphan
        endpoint.stop()
        raise
    return endpoint


def _wait_until_ready(endpoint: StandinEndpoint, timeout_s: float, log_file: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if endpoint.process.poll() is not None:
            raise RuntimeError(
                f"the stand-in endpoint exited with code {endpoint.process.returncode}"
                + (f"; see {log_file}" if log_file else "")
            )
        try:
            if httpx.get(f"{endpoint.url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the stand-in endpoint did not start within {timeout_s:.0f} s")
