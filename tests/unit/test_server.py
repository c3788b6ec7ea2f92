"""How `hybrid-router serve` runs uvicorn: no query strings in the access log, proxy headers from
configured proxies only, and open streams ended with an error event when a shutdown's grace is over."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.logging import AccessFormatter

from hyrouter.cloud import routes
from hyrouter.cloud.app import SHUTDOWN_EVENTS, _unless_cut, _until_cut
from hyrouter.cloud.server import log_config, uvicorn_options
from hyrouter.router import ServerConfig


def access_line(path: str) -> str:
    """The access log line uvicorn writes for `GET path`, through the configured filter and format."""
    config = log_config()
    (name,) = config["loggers"]["uvicorn.access"]["filters"]
    log_filter = config["filters"][name]["()"]()
    args = ("203.0.113.9:5000", "GET", path, "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert log_filter.filter(record)
    return AccessFormatter(fmt='%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)


def test_the_access_log_leaves_out_query_strings() -> None:
    line = access_line("/v1/models?api_key=sk-secret&x=1")
    assert "sk-secret" not in line and "?" not in line
    assert '"GET /v1/models HTTP/1.1" 200' in line


async def client_seen(server: ServerConfig, peer: str, forwarded_for: str) -> Any:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["client"] = scope["client"]

    options = {**uvicorn_options(server), "log_config": None}
    config = uvicorn.Config(app, **options)
    config.load()
    scope = {
        "type": "http",
        "scheme": "http",
        "client": (peer, 5000),
        "headers": [(b"x-forwarded-for", forwarded_for.encode())],
    }
    await config.loaded_app(scope, None, None)
    return seen["client"][0]


@pytest.mark.anyio
async def test_x_forwarded_for_is_believed_only_from_configured_proxies() -> None:
    assert ServerConfig().forwarded_allow_ips == []
    # By default nobody's, loopback's neither (uvicorn's own default trusts 127.0.0.1).
    assert await client_seen(ServerConfig(), "127.0.0.1", "203.0.113.9") == "127.0.0.1"
    proxied = ServerConfig(forwarded_allow_ips=["10.0.0.0/8"])
    assert await client_seen(proxied, "10.1.2.3", "203.0.113.9") == "203.0.113.9"
    assert await client_seen(proxied, "192.0.2.7", "203.0.113.9") == "192.0.2.7"


def test_uvicorn_gets_the_grace_period_and_a_moment_for_the_error_events() -> None:
    options = uvicorn_options(ServerConfig(shutdown_grace_s=3))
    assert 3 < options["timeout_graceful_shutdown"] <= 5


@pytest.mark.anyio
async def test_a_cut_ends_an_open_stream_with_an_error_event_and_closes_it() -> None:
    closed = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            closed.set()

    cut = asyncio.Event()
    received = []
    async for part in _until_cut(slow(), cut):
        received.append(part)
        cut.set()
    assert received == [b"data: first\n\n", SHUTDOWN_EVENTS]
    assert b'"code":"server_shutting_down"' in SHUTDOWN_EVENTS and SHUTDOWN_EVENTS.endswith(
        b"data: [DONE]\n\n"
    )
    await asyncio.wait_for(closed.wait(), 1)  # the upstream stream is released


@pytest.mark.anyio
async def test_without_a_cut_a_stream_passes_unchanged_errors_included() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    assert [p async for p in _until_cut(parts(), asyncio.Event())] == [b"a", b"b"]

    async def failing() -> AsyncIterator[bytes]:
        yield b"a"
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async for _ in _until_cut(failing(), asyncio.Event()):
            pass


@pytest.mark.anyio
async def test_a_cut_answers_a_request_still_waiting_with_a_503() -> None:
    cancelled = asyncio.Event()

    async def slow() -> routes.HttpResponse:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()
        return routes.HttpResponse(200)

    cut = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, cut.set)
    answer = await _unless_cut(slow(), cut)
    assert answer.status == 503 and b'"code":"server_shutting_down"' in answer.body
    assert cancelled.is_set()

    async def quick() -> routes.HttpResponse:
        return routes.HttpResponse(204)

    assert (await _unless_cut(quick(), asyncio.Event())).status == 204


def test_serve_runs_on_uvloop_and_httptools_when_they_are_installed() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    options = uvicorn_options(ServerConfig())
    assert options["loop"] == "uvloop"
    assert issubclass(options["http"], HttpToolsProtocol)


def test_serve_falls_back_to_asyncio_and_h11_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from hyrouter.cloud.server_protocol import OpenAIErrorH11Protocol

    for name in ("uvloop", "httptools", "uvicorn.protocols.http.httptools_impl"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it raises ImportError
    options = uvicorn_options(ServerConfig())
    assert options["loop"] == "asyncio" and options["http"] is OpenAIErrorH11Protocol


#: Configures logging as `serve --log-level LEVEL` does, then logs what a routed request logs.
_LOG_A_REQUEST = """
import logging, sys
import uvicorn
from hyrouter.cloud.server import uvicorn_options
from hyrouter.router import ServerConfig
from hyrouter.router._metrics import DECISION_LOGGER

uvicorn.Config(lambda: None, **uvicorn_options(ServerConfig(), log_level=sys.argv[1]))
DECISION_LOGGER.info({"event": "route_decision", "target": "cloud"})
logging.getLogger("hybrid_router").info("a request's info line")
logging.getLogger("hybrid_router").warning("a warning")
"""


@pytest.mark.parametrize("level", ["info", "warning"])
def test_the_log_level_holds_for_the_decision_log_and_the_router(level: str) -> None:
    import subprocess

    ran = subprocess.run(
        [sys.executable, "-c", _LOG_A_REQUEST, level], capture_output=True, text=True, timeout=60, check=True
    )
    assert ("route_decision" in ran.stdout) is (level == "info")
    assert ("a request's info line" in ran.stderr) is (level == "info")
    assert "a warning" in ran.stderr
