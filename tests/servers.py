"""Real servers on loopback for the functional tests: the router, and upstreams that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from hyrouter.router import hash_api_key, load_config

KEYS = {
    "free": "test-free-key",
    "standard": "test-standard-key",
    "premium": "test-premium-key",
    "strict": "test-strict-key",
    "edge-only": "test-edge-only-key",
}
ADMIN_KEY = "test-admin-key"  # reads /metrics and /healthz detail
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_router_config(cloud_url: str | None, **overrides: Any) -> dict[str, Any]:
    """The demo config made small and quick for tests: short timeouts, a 512-token edge context."""
    data = load_config(apply_env=False).model_dump(mode="json")
    data["edge"].update(n_ctx=512, n_threads=2, max_tokens=16, queue_timeout_s=20)
    data["cloud"].update(
        url=cloud_url,
        context_window=2048,
        max_tokens=16,
        timeouts={"connect": 0.5, "read": 15.0, "total": 30.0},
        retries={"max_attempts": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
        breaker={"failure_threshold": 2, "cooldown_s": 60.0},
        probe_interval_s=0,  # the fault tests count the upstream's calls: no probe unless a test asks
    )
    data["tiers"]["strict"] = {"cloud": "forced", "fallback_to_edge": False}
    data["tiers"]["edge-only"] = {"cloud": "never"}
    data["api_keys"] = [
        {"sha256": hash_api_key(key), "tenant": f"t-{tier}", "tier": tier} for tier, key in KEYS.items()
    ]
    data["admin_keys"] = [{"sha256": hash_api_key(ADMIN_KEY), "note": "tests"}]
    for section, values in overrides.items():
        data[section].update(values)
    return data


def spawn_router(
    config_file: Path, port: int, *, stdout: Any = None, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    """Start `hybrid-router serve` on `config_file` and `port`, without waiting for it; `log_level`
    "info" writes the decision log too."""
    command = [
        sys.executable,
        "-m",
        "hyrouter.cloud.cli",
        "serve",
        "--config",
        str(config_file),
        "--port",
        str(port),
    ]
    return subprocess.Popen(
        [*command, "--no-access-log", "--log-level", log_level],
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
    )


@contextlib.contextmanager
def running_router(config: dict[str, Any], tmp_path: Path, *, startup_s: float = 120.0) -> Iterator[str]:
    """`hybrid-router serve` in a subprocess on a free port; yields its base URL."""
    with router_process(config, tmp_path, startup_s=startup_s) as (_, base):
        yield base


def wait_until_up(process: subprocess.Popen[bytes], base: str, log_file: Path, startup_s: float) -> None:
    """Wait until the server at `base` answers `/health`; raise if `process` exits or time runs out."""
    deadline = time.monotonic() + startup_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"router exited: {log_file.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=1.0).status_code in (200, 503):
                return
        if time.monotonic() > deadline:
            raise RuntimeError("router did not start")
        time.sleep(0.1)


@contextlib.contextmanager
def router_process(
    config: dict[str, Any], tmp_path: Path, *, startup_s: float = 120.0, log_level: str = "warning"
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`hybrid-router serve` in a subprocess on a free port; yields the process and its base URL."""
    port = free_port()
    config_file = tmp_path / f"router-{port}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = (tmp_path / f"router-{port}.log").open("wb")
    process = spawn_router(config_file, port, stdout=log, log_level=log_level)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base, tmp_path / f"router-{port}.log", startup_s)
        yield process, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


SLOW_CHUNK = (
    b'data: {"id":"slow","object":"chat.completion.chunk","created":0,"model":"slow-upstream",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"tick "},"finish_reason":null}]}\n\n'
)
#: What the "cut" upstream streams before it closes the connection: no finish_reason, no [DONE].
CUT_PARTIAL = ["The", " capital", " of", " France"]


def _sse_chunk(delta: dict[str, str]) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    event = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    return f"data: {json.dumps({**event, 'choices': [choice]})}\n\n".encode()


_COMPLETION = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "from the cloud"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


class MisbehavingUpstream:
    """An HTTP server on loopback that misbehaves in one of these modes:

    - `error`: a 500 to every request;
    - `hang`: never answers;
    - `bad_request`: what vLLM answers to a message with `content: null`: a 500 whose body blames the
      request; any other request gets an answer;
    - `rate_limited`: a 429 with `Retry-After: 9` to every request;
    - `slow`: streams one token every `SLOW_INTERVAL_S` without ever finishing;
    - `cut`: streams `CUT_PARTIAL` and closes the connection: no finish_reason, no [DONE].
    """

    SLOW_INTERVAL_S = 0.25
    MODES: tuple[str, ...] = ("error", "hang", "bad_request", "rate_limited", "slow", "cut")

    def __init__(self, mode: str) -> None:
        assert mode in self.MODES, mode
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server

    def __enter__(self) -> MisbehavingUpstream:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "cut":
                # A body delimited by the connection's close: ending it early is a clean EOF.
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                )
                writer.write(_sse_chunk({"role": "assistant", "content": ""}))
                for word in CUT_PARTIAL:
                    writer.write(_sse_chunk({"content": word}))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                return
            if self.mode == "slow":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                )
                while True:
                    writer.write(SLOW_CHUNK)
                    await writer.drain()
                    await asyncio.sleep(self.SLOW_INTERVAL_S)
            status, extra = b"500 Internal Server Error", b""
            body = b'{"error": {"message": "upstream exploded", "type": "server_error"}}'
            if self.mode == "rate_limited":
                status, extra = b"429 Too Many Requests", b"retry-after: 9\r\n"
                body = (
                    b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
                )
            elif self.mode == "bad_request":
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                messages = json.loads(await reader.readexactly(length))["messages"]
                if all(m.get("content") is not None for m in messages):
                    status, body = b"200 OK", json.dumps(_COMPLETION).encode()
                else:
                    body = (
                        b'{"object": "error", "message": "Assistant message must have content or tool_calls",'
                    )
                    body += b' "type": "BadRequestError", "param": null, "code": 400}'
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: application/json\r\n"
                + extra
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
