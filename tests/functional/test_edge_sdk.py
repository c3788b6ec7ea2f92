"""The on-device SDK for real: SmolLM2 on this CPU, the real router on loopback, and a cut network.

Network cuts: nothing listening, a server that stalls, a connection reset mid-stream, and a proxy in
front of the real router that is cut and restored. Every call must answer locally or fail clearly
within its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from hyrouter.edge import (
    DeviceSignals,
    EdgeOffline,
    EdgeRouter,
    EdgeRouterConfig,
    EdgeStream,
    EscalationInterrupted,
    StaticSignals,
)
from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.router import AuthenticationError, EdgeConfig
from tests.servers import KEYS, MisbehavingUpstream, free_port, make_router_config, running_router

pytestmark = [pytest.mark.functional, pytest.mark.anyio]

EASY = "What is the capital of France?"
HARD = "Prove step by step that the square root of 2 is irrational, and explain why the proof works."
#: A cut link is given up on within this (`CUT` below: 1 s read timeout, 2 s deadline); the margin is
#: for a busy two-core machine. Generous link settings elsewhere, where the real router must answer.
DEADLINE_S = 4.0
CUT = {"read_timeout_s": 1.0, "deadline_s": 2.0}


@pytest.fixture(scope="module")
def local_model() -> Iterator[LlamaCppBackend]:
    """SmolLM2 loaded once for the module, shared by every `EdgeRouter` here."""
    backend = LlamaCppBackend(EdgeConfig(n_threads=2, n_ctx=512, max_tokens=16, seed=0))
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(scope="module")
def router_url(standin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_router(make_router_config(standin_url), tmp_path_factory.mktemp("router")) as base:
        yield base


@contextlib.asynccontextmanager
async def sdk(
    local_model: LlamaCppBackend,
    url: str | None,
    *,
    tier: str = "premium",
    key: str | None = None,
    keep_private_local: bool = False,
    clock: Callable[[], float] = time.monotonic,
    **cloud: Any,
) -> AsyncIterator[EdgeRouter]:
    config = EdgeRouterConfig.model_validate(
        {
            "tier": tier,
            "privacy": {"keep_personal_data_local": keep_private_local},
            "tiers": {
                "free": {"routing": {"threshold": 0.7}, "signals": {"slow_link_rtt_ms": None}},
                "premium": {"routing": {"cloud": "forced"}, "signals": {"slow_link_rtt_ms": None}},
                "strict": {"routing": {"cloud": "forced", "fallback_to_edge": False}},
            },
            "model": {"n_threads": 2, "n_ctx": 512, "max_tokens": 16},
            "cloud": {
                "url": url,
                "connect_timeout_s": 0.5,
                "read_timeout_s": 30.0,
                "deadline_s": 60.0,
                "retries": {"max_attempts": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.1},
                **cloud,
            },
        }
    )
    router = EdgeRouter(
        config,
        local=local_model,
        signals=StaticSignals(DeviceSignals()),
        api_key=key or KEYS.get(tier, "unknown-key"),
        clock=clock,
    )
    try:
        yield router
    finally:
        await router.escalation.aclose()  # the shared model stays loaded


def ask(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0, **fields}


async def read_all(stream: EdgeStream) -> str:
    return "".join([c.choices[0].delta.content or "" async for c in stream.chunks if c.choices])


# -- with the real cloud router ------------------------------------------------------------------


async def test_easy_request_is_answered_on_the_device(local_model: LlamaCppBackend) -> None:
    async with sdk(local_model, "http://127.0.0.1:9/v1", tier="free") as router:
        answer = await router.complete(ask(EASY))
        assert answer.route is not None
        assert (answer.route.target, answer.route.reason, answer.route.offline) == (
            "edge",
            "score_below_threshold",
            False,
        )
        assert answer.model == answer.route.model == "smollm2-135m-instruct"
        assert "Paris" in (answer.choices[0].message.content or "")
        assert answer.usage.completion_tokens > 0 and answer.route.cost_saved_usd > 0
        assert not router.offline  # the network was never touched


async def test_premium_escalates_to_the_real_router(local_model: LlamaCppBackend, router_url: str) -> None:
    async with sdk(local_model, f"{router_url}/v1") as router:
        answer = await router.complete(ask(EASY))
        route = answer.route
        assert route is not None and route.upstream is not None
        assert (route.target, route.reason, route.offline, route.model) == (
            "cloud",
            "tier_forces_cloud",
            False,
            "cloud-standin",
        )
        # The cloud decided the tier from the device's key.
        assert (route.upstream.tier, route.upstream.tenant, route.upstream.target) == (
            "premium",
            "t-premium",
            "cloud",
        )
        assert answer.choices[0].message.content and route.cost_usd > 0

        stream = await router.stream(ask(EASY, stream_options={"include_usage": True}))
        assert stream.route.target == "cloud" and stream.route.upstream is not None
        chunks = [c async for c in stream.chunks]
        assert chunks[0].route is stream.route
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_a_hard_request_escalates_on_its_score(local_model: LlamaCppBackend, router_url: str) -> None:
    async with sdk(local_model, f"{router_url}/v1", tier="free") as router:
        answer = await router.complete(ask(HARD))
        route = answer.route
        assert route is not None and route.upstream is not None
        assert (route.target, route.reason) == ("cloud", "score_above_threshold")
        assert route.score >= 0.7 and route.upstream.reason == "score_above_threshold"


async def test_a_wrong_device_key_is_a_clear_error(local_model: LlamaCppBackend, router_url: str) -> None:
    async with sdk(local_model, f"{router_url}/v1", key="not-a-key") as router:
        with pytest.raises(AuthenticationError, match="401"):
            await router.complete(ask(EASY))


# -- with the network cut ------------------------------------------------------------------------


async def test_nothing_listening_answers_locally_with_reason_offline(local_model: LlamaCppBackend) -> None:
    async with sdk(local_model, f"http://127.0.0.1:{free_port()}/v1", **CUT) as router:
        started = time.monotonic()
        stream = await router.stream(ask(EASY))
        assert time.monotonic() - started < DEADLINE_S
        assert (stream.route.reason, stream.route.offline) == ("offline", True)
        assert await read_all(stream)

        answer = await router.complete(ask(EASY))
        assert answer.route is not None
        assert (answer.route.target, answer.route.reason, answer.route.offline, answer.route.fallback) == (
            "edge",
            "offline",
            True,
            True,
        )
        assert answer.choices[0].message.content


async def test_a_tier_that_forbids_local_answers_fails_fast_offline(local_model: LlamaCppBackend) -> None:
    async with sdk(local_model, f"http://127.0.0.1:{free_port()}/v1", tier="strict", **CUT) as router:
        for call in (router.complete, router.stream):
            started = time.monotonic()
            with pytest.raises(EdgeOffline, match="offline"):
                await call(ask(EASY))
            assert time.monotonic() - started < DEADLINE_S


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_stalled_server_answers_locally_within_the_deadline(
    local_model: LlamaCppBackend, streamed: bool
) -> None:
    with MisbehavingUpstream("hang") as stalled:
        async with sdk(local_model, stalled.url, **CUT) as router:
            started = time.monotonic()
            if streamed:
                stream = await router.stream(ask(EASY))
                assert time.monotonic() - started < DEADLINE_S  # the local answer has started
                route, text = stream.route, await read_all(stream)
            else:
                answer = await router.complete(ask(EASY, max_tokens=1))
                assert time.monotonic() - started < DEADLINE_S
                assert answer.route is not None
                route, text = answer.route, answer.choices[0].message.content
            assert (route.target, route.reason, route.offline) == ("edge", "offline", True)
            assert text and stalled.requests == 1
            # Offline now: the next request does not wait on the stalled server again.
            started = time.monotonic()
            again = await router.stream(ask(EASY))
            assert again.route.reason == "offline" and time.monotonic() - started < 1.0
            assert await read_all(again) and stalled.requests == 1


class LoopbackServer:
    """A TCP server on its own loop and thread; every connection is closed when it stops."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        start = asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ResettingServer(LoopbackServer):
    """Answers a chat completion with stream headers and one SSE chunk, then resets the connection."""

    def __init__(self, first_content: str) -> None:
        super().__init__()
        self.first_content = first_content

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            event = (
                '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"cloud","choices":'
                f'[{{"index":0,"delta":{{"role":"assistant","content":"{self.first_content}"}}}}]}}'
            )
            data = f"data: {event}\n\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                + f"{len(data):x}\r\n".encode()
                + data
                + b"\r\n"
            )
            await writer.drain()
            await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close → RST


async def test_a_reset_before_any_content_falls_back_locally(local_model: LlamaCppBackend) -> None:
    with ResettingServer(first_content="") as server:
        async with sdk(local_model, server.url, **CUT) as router:
            started = time.monotonic()
            stream = await router.stream(ask(EASY))
            assert (stream.route.target, stream.route.reason, stream.route.offline) == (
                "edge",
                "offline",
                True,
            )
            assert await read_all(stream)
            assert time.monotonic() - started < DEADLINE_S


async def test_a_reset_mid_answer_fails_clearly(local_model: LlamaCppBackend) -> None:
    with ResettingServer(first_content="Paris") as server:
        async with sdk(local_model, server.url, **CUT) as router:
            started = time.monotonic()
            stream = await router.stream(ask(EASY))
            assert (stream.route.target, stream.route.offline) == ("cloud", False)
            received: list[str] = []
            with pytest.raises(EscalationInterrupted, match="broke mid-answer"):
                async for chunk in stream.chunks:
                    received.append(chunk.choices[0].delta.content or "")
            assert received == ["Paris"] and time.monotonic() - started < DEADLINE_S + 1.0
            assert router.offline


class CuttableProxy(LoopbackServer):
    """A TCP proxy to the real router whose link can be cut (connections reset) and restored."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.cut = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            return  # the connection is reset at once
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()


async def test_recovery_when_the_network_returns(local_model: LlamaCppBackend, router_url: str) -> None:
    now = [0.0]  # the link's clock: offline_retry_s passes when the test says so
    with CuttableProxy(int(router_url.rsplit(":", 1)[1])) as proxy:
        async with sdk(local_model, proxy.url, offline_retry_s=10.0, clock=lambda: now[0]) as router:
            proxy.cut = True
            down = await router.complete(ask(EASY, max_tokens=1))
            assert down.route is not None and (down.route.reason, down.route.offline) == ("offline", True)
            assert router.offline

            proxy.cut = False
            still = await router.complete(ask(EASY, max_tokens=1))  # before offline_retry_s: no try
            assert still.route is not None and still.route.reason == "offline"
            now[0] += 10.0
            back = await router.complete(ask(EASY))
            assert back.route is not None
            assert (back.route.target, back.route.reason, back.route.offline) == (
                "cloud",
                "tier_forces_cloud",
                False,
            )
            assert not router.offline and router.link.rtt_ms is not None


async def test_personal_data_stays_on_the_device_even_for_premium(
    local_model: LlamaCppBackend, router_url: str
) -> None:
    async with sdk(local_model, f"{router_url}/v1", keep_private_local=True) as router:
        answer = await router.complete(ask("My card is 4111 1111 1111 1111; is it valid?"))
        assert answer.route is not None
        assert (answer.route.target, answer.route.reason, answer.route.personal_data) == (
            "edge",
            "private_data",
            ["card"],
        )


# -- config sync from the real cloud router ------------------------------------------------------


async def test_config_sync_keeps_the_devices_signals(
    local_model: LlamaCppBackend, router_url: str, tmp_path: Path
) -> None:
    signals = {"slow_link_rtt_ms": None, "low_battery_pct": 50.0}
    config = EdgeRouterConfig.model_validate(
        {
            "tier": "premium",
            "tiers": {"free": {"routing": {"threshold": 0.05}, "signals": signals}, "premium": {}},
            "cloud": {"url": f"{router_url}/v1"},
            "sync": {"url": f"{router_url}/v1/edge/config", "state_file": str(tmp_path / "policy.json")},
        }
    )
    async with httpx.AsyncClient() as client:
        served = await client.get(
            f"{router_url}/v1/edge/config", headers={"authorization": f"Bearer {KEYS['free']}"}
        )
    router = EdgeRouter(
        config, local=local_model, signals=StaticSignals(DeviceSignals()), api_key=KEYS["free"]
    )
    try:
        assert (await router.sync_config()).outcome == "updated"
        assert router.tier == "free"  # the key's tier, from the router
        assert router.policy.routing.model_dump(mode="json") == served.json()["policy"]["routing"]
        assert (
            router.policy.signals.slow_link_rtt_ms is None and router.policy.signals.low_battery_pct == 50.0
        )
        assert (await router.sync_config()).outcome == "unchanged"  # If-None-Match: 304
    finally:
        await router.escalation.aclose()
