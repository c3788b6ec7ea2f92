"""Liveness and readiness, and the active probe of the cloud endpoint (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from hyrouter.cloud.app import create_app
from hyrouter.cloud.endpoint import CloudEndpointClient
from hyrouter.cloud.probe import CloudProbe
from hyrouter.router import BackendHealth, CloudConfig, HeuristicEstimator, RouterConfig, RoutingEngine
from tests.fakes import FakeBackend
from tests.unit import test_app as app_tests

ADMIN = {"authorization": "Bearer k-admin"}
MODELS = {"object": "list", "data": [{"id": "gpu", "object": "model"}]}


def app_client(
    edge: FakeBackend | None,
    cloud_transport: httpx.AsyncBaseTransport | None = None,
    *,
    cloud_probe: bool = True,
    **cloud: object,
) -> TestClient:
    config = app_tests.CONFIG.model_copy(
        update={
            "edge": app_tests.CONFIG.edge.model_copy(update={"enabled": edge is not None}),
            "cloud": app_tests.CONFIG.cloud.model_copy(update=cloud),
        }
    )

    async def factory(config: RouterConfig) -> RoutingEngine:
        backend = CloudEndpointClient(config.cloud, transport=cloud_transport) if config.cloud.url else None
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=edge, cloud=backend)

    app = create_app(config, engine_factory=factory, cloud_probe=cloud_probe)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def cold_edge() -> FakeBackend:
    return FakeBackend("edge", health=BackendHealth(available=False, detail="not loaded"))


def test_livez_is_200_for_anyone_and_readyz_waits_for_the_edge_model(cold_edge: FakeBackend) -> None:
    with app_client(cold_edge) as client:
        assert client.get("/livez").json() == {"status": "ok"}
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not_ready", "reason": "edge model not warm"}
        cold_edge._health = BackendHealth(available=True)  # the model has decoded its first token
        assert client.get("/readyz").status_code == 200 and client.get("/readyz").json() == {
            "status": "ready"
        }
        assert (
            client.get("/livez", headers={"authorization": "Bearer nope"}).status_code == 200
        )  # no key check


def test_readyz_needs_no_edge_model_when_the_edge_is_off() -> None:
    with app_client(None, url="http://gpu.invalid/v1", probe_interval_s=0) as client:
        assert client.get("/readyz").status_code == 200


def probe_config(interval_s: float = 0.02, url: str | None = "http://gpu.test/v1") -> CloudConfig:
    return CloudConfig(url=url, probe_interval_s=interval_s)


@pytest.mark.anyio
async def test_the_probe_gets_models_every_interval_and_stops_on_close() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=MODELS)

    probe = CloudProbe(probe_config(), transport=httpx.MockTransport(answer))
    probe.start()
    probe.start()  # once only
    await asyncio.sleep(0.15)
    await probe.aclose()
    calls = len(seen)
    assert calls >= 3 and not probe.running
    assert {str(r.url) for r in seen} == {"http://gpu.test/v1/models"}
    status = probe.status()
    assert status is not None and status["ok"] and status["status"] == 200 and status["interval_s"] == 0.02
    await asyncio.sleep(0.06)
    assert len(seen) == calls  # stopped


@pytest.mark.anyio
async def test_the_probe_reports_a_refused_connection_and_an_unhealthy_status() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    refused = CloudProbe(probe_config(), transport=httpx.MockTransport(refuse))
    async with httpx.AsyncClient(base_url="http://gpu.test/v1/", transport=httpx.MockTransport(refuse)) as c:
        result = await refused.check(c)
    assert not result.ok and result.status is None and "ConnectError" in (result.error or "")
    async with httpx.AsyncClient(
        base_url="http://gpu.test/v1/", transport=httpx.MockTransport(lambda r: httpx.Response(503))
    ) as c:
        result = await refused.check(c)
    assert not result.ok and result.status == 503 and refused.last == result


def test_no_probe_without_a_url_or_an_interval() -> None:
    assert not CloudProbe(probe_config(url=None)).enabled
    assert not CloudProbe(probe_config(interval_s=0)).enabled


def test_the_probe_shows_in_healthz_and_a_hung_endpoint_blocks_nothing(cold_edge: FakeBackend) -> None:
    release = asyncio.Event()
    calls = 0

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()  # the second probe never gets an answer
        return httpx.Response(200, json=MODELS)

    cold_edge._health = BackendHealth(available=True)
    started = time.monotonic()
    with app_client(
        cold_edge, httpx.MockTransport(hang), url="http://gpu.test/v1", probe_interval_s=0.05
    ) as client:
        deadline = time.monotonic() + 5
        while calls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        detail = client.get("/healthz", headers=ADMIN).json()  # answered while the probe hangs
        probe = detail["cloud"]["probe"]
        assert probe["ok"] and probe["status"] == 200 and probe["latency_ms"] >= 0
        assert client.get("/readyz").status_code == 200
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.cloud.endpoint_probe.running
    assert not engine.cloud.endpoint_probe.running  # the lifespan's end stopped it
    assert time.monotonic() - started < 5 and calls >= 2


@pytest.fixture
def no_probe_client() -> Iterator[TestClient]:
    with app_client(None, url="http://gpu.test/v1", probe_interval_s=0) as client:
        yield client


def test_healthz_shows_no_probe_when_it_is_off(no_probe_client: TestClient) -> None:
    assert no_probe_client.get("/healthz", headers=ADMIN).json()["cloud"]["probe"] is None


def test_an_app_made_without_the_probe_never_starts_it() -> None:
    # What the Lambda streaming app does: a frozen Lambda must not wake to probe.
    with app_client(None, url="http://gpu.test/v1", probe_interval_s=0.01, cloud_probe=False) as client:
        assert not client.app.state.engine.cloud.endpoint_probe.running  # type: ignore[attr-defined]
        assert client.get("/healthz", headers=ADMIN).json()["cloud"]["probe"] is None
