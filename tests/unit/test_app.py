"""The HTTP app with fake backends: headers, error objects, in-band stream errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from hyrouter.cloud.app import create_app, reload_config
from hyrouter.router import (
    BackendHealth,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    CloudBackendError,
    CloudUnavailable,
    ConfigError,
    Delta,
    HeuristicEstimator,
    RouterConfig,
    RoutingEngine,
    hash_api_key,
    parse_config,
)
from tests.fakes import FakeBackend

CONFIG = parse_config(
    {
        "tiers": {"free": {"threshold": 0.7}, "premium": {"cloud": "forced", "fallback_to_edge": False}},
        "api_keys": [
            {"sha256": hash_api_key("k-free"), "tenant": "a", "tier": "free"},
            {"sha256": hash_api_key("k-prem"), "tenant": "b", "tier": "premium"},
        ],
        "admin_keys": [{"sha256": hash_api_key("k-admin"), "note": "operators"}],
    }
)
BODY = {"model": "hybrid-router", "messages": [{"role": "user", "content": "hi"}]}


class DiesMidStream(FakeBackend):
    async def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        yield ChatCompletionChunk(
            id="x", model="m", choices=[ChunkChoice(delta=Delta(role="assistant", content="a"))]
        )
        raise CloudBackendError("connection dropped mid-stream")


@pytest.fixture
def client() -> Iterator[TestClient]:
    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(
            config,
            estimator=HeuristicEstimator(),
            edge=FakeBackend("edge", reply="hello there"),
            cloud=DiesMidStream("cloud"),
        )

    with TestClient(create_app(CONFIG, engine_factory=factory), raise_server_exceptions=False) as c:
        yield c


def test_route_headers_and_body(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer k-free"})
    assert r.status_code == 200
    assert r.headers["x-route-target"] == "edge" and r.headers["x-route-tier"] == "free"
    assert (
        r.headers["x-route-model"] == "edge-model" and r.headers["x-route-reason"] == "score_below_threshold"
    )
    assert r.json()["route"]["target"] == "edge"
    assert r.json()["choices"][0]["message"]["content"] == "hello there"


def test_stream_error_after_first_chunk_is_reported_in_band(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json={**BODY, "stream": True}, headers={"authorization": "Bearer k-prem"}
    )
    assert r.status_code == 200 and r.headers["x-route-target"] == "cloud"
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert '"error"' in events[-2] and "cloud_error" in events[-2]
    assert "mid-stream" not in events[-2]  # the internal text goes to the log, not to the caller
    assert events[-1] == "data: [DONE]"


def test_bearer_scheme_is_required(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Basic k-free"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert "param" in r.json()["error"]  # `param: null` included, as OpenAI sends it


def test_unexpected_errors_become_500_objects_without_a_trace(client: TestClient) -> None:
    engine: RoutingEngine = client.app.state.engine  # type: ignore[attr-defined]

    def explode(*args: object) -> float:
        raise ZeroDivisionError("boom")

    engine.authenticate = explode  # type: ignore[method-assign,assignment]
    r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer k-free"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error" and "boom" not in r.text


FREE = {"authorization": "Bearer k-free"}
ADMIN = {"authorization": "Bearer k-admin"}


def test_models_need_a_key_and_health_details_an_admin_key(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=ADMIN).status_code == 401  # an admin key is not a tenant's
    assert client.get("/v1/models", headers=FREE).json()["data"][0]["id"] == "hybrid-router"
    for path in ("/health", "/healthz"):  # liveness for anyone, and nothing more
        assert client.get(path).json() == {"status": "ok"}
    assert client.get("/healthz", headers=FREE).status_code == 401
    detail = client.get("/healthz", headers=ADMIN).json()
    assert detail["status"] == "ok" and "queue_depth" in detail["edge"] and "estimator" in detail
    assert detail["cache"] == {"semantic_available": False}  # the heuristic estimator embeds nothing
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=FREE).status_code == 401
    assert "decisions" in client.get("/metrics", headers=ADMIN, params={"format": "json"}).json()
    assert "decisions" in client.get("/metrics", headers={**ADMIN, "accept": "application/json"}).json()
    text = client.get("/metrics", headers=ADMIN)  # what a Prometheus scraper gets
    assert (
        text.headers["content-type"].startswith("text/plain") and "# TYPE hybrid_router_requests" in text.text
    )


@pytest.mark.parametrize(
    ("backends", "mode", "status", "code"),
    [
        ({"edge": BackendHealth(available=True)}, "edge-only", "ok", 200),
        ({"cloud": BackendHealth(available=True)}, "cloud-only", "ok", 200),
        ({"cloud": BackendHealth(available=False, detail="circuit open")}, "cloud-only", "unavailable", 503),
        (
            {"edge": BackendHealth(available=True), "cloud": BackendHealth(available=False)},
            "hybrid",
            "degraded",
            200,
        ),
    ],
)
def test_health_detail_of_each_mode(
    backends: dict[str, BackendHealth], mode: str, status: str, code: int
) -> None:
    async def factory(config: RouterConfig) -> RoutingEngine:
        made = {name: FakeBackend(name, health=health) for name, health in backends.items()}
        return RoutingEngine(
            config, estimator=HeuristicEstimator(), edge=made.get("edge"), cloud=made.get("cloud")
        )

    with TestClient(create_app(CONFIG, engine_factory=factory)) as c:
        r = c.get("/healthz", headers=ADMIN)
    detail = r.json()
    assert (r.status_code, detail["status"], detail["mode"]) == (code, status, mode)
    for name in ("edge", "cloud"):
        assert detail[name]["configured"] is (name in backends)


def test_edge_config_sync_with_etag(client: TestClient) -> None:
    first = client.get("/v1/edge/config", headers={"authorization": "Bearer k-free"})
    assert first.status_code == 200
    assert first.json() == {"tier": "free", "policy": {"routing": first.json()["policy"]["routing"]}}
    assert first.json()["policy"]["routing"]["threshold"] == 0.7
    again = client.get(
        "/v1/edge/config", headers={"authorization": "Bearer k-free", "if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert client.get("/v1/edge/config").status_code == 401


INTERNAL = "http://10.0.0.5:8000/v1/chat/completions: ConnectError: [Errno 111] Connection refused"


def test_server_side_errors_hide_internal_text_and_log_it_under_a_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(
            config,
            estimator=HeuristicEstimator(),
            edge=FakeBackend("edge"),
            cloud=FakeBackend("cloud", fail=CloudUnavailable(INTERNAL)),
        )

    with TestClient(create_app(CONFIG, engine_factory=factory), raise_server_exceptions=False) as c:
        r = c.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer k-prem"})
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "cloud_unavailable" and error["type"] == "server_error"
    assert error["message"].startswith("The cloud endpoint failed (cloud_unavailable).")
    assert "10.0.0.5" not in r.text and "Errno" not in r.text
    request_id = error["message"].rsplit(" ", 1)[-1].rstrip(".")
    logged = [rec.getMessage() for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and INTERNAL in logged[0]


def test_caller_errors_keep_their_helpful_messages(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", content=b"{oops", headers={"authorization": "Bearer k-free"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


# -- CORS ----------------------------------------------------------------------------------------


def _plain(config: RouterConfig) -> TestClient:
    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge", reply="hi"))

    return TestClient(create_app(config, engine_factory=factory))


PREFLIGHT = {
    "origin": "https://app.example.com",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


def test_cors_is_off_by_default() -> None:
    with _plain(CONFIG) as c:
        preflight = c.options("/v1/chat/completions", headers=PREFLIGHT)
        answer = c.get("/health", headers={"origin": "https://app.example.com"})
    assert preflight.status_code == 405
    assert not [h for h in (*preflight.headers, *answer.headers) if h.startswith("access-control-")]


def test_cors_allows_the_configured_origins_only() -> None:
    cors = {"allow_origins": ["https://app.example.com"], "max_age_s": 60}
    config = CONFIG.model_copy(update={"server": CONFIG.server.model_validate({"cors": cors})})
    with _plain(config) as c:
        preflight = c.options("/v1/chat/completions", headers=PREFLIGHT)
        other = c.options("/v1/chat/completions", headers={**PREFLIGHT, "origin": "https://evil.example"})
        answer = c.post(
            "/v1/chat/completions",
            json=BODY,
            headers={"authorization": "Bearer k-free", "origin": "https://app.example.com"},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert preflight.headers["access-control-max-age"] == "60"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-route-target" in answer.headers["access-control-expose-headers"]


def test_cors_credentials_need_explicit_origins() -> None:
    with pytest.raises(ConfigError, match="allow_credentials"):
        parse_config({"server": {"cors": {"allow_origins": ["*"], "allow_credentials": True}}})


# -- config reload -------------------------------------------------------------------------------


def test_a_reload_serves_new_tiers_and_keys_while_requests_in_flight_keep_theirs() -> None:
    with _plain(CONFIG) as c:
        app = c.app
        assert isinstance(app, Starlette)
        before = app.state.engine
        data = CONFIG.model_dump(mode="json")
        data["tiers"]["free"]["threshold"] = 0.123
        data["api_keys"].append({"sha256": hash_api_key("k-new"), "tenant": "c", "tier": "free"})
        reload_config(app, parse_config(data))
        assert c.get("/v1/edge/config", headers={"authorization": "Bearer k-new"}).json()["policy"][
            "routing"
        ]["threshold"] == pytest.approx(0.123)
        assert app.state.engine is not before
        assert app.state.engine.backends["edge"] is before.backends["edge"]  # nothing rebuilt
        assert before.config.tiers["free"].threshold == 0.7  # what a request in flight holds is unchanged


def test_a_reload_that_changes_the_backends_is_refused() -> None:
    with _plain(CONFIG) as c:
        app = c.app
        assert isinstance(app, Starlette)
        before = app.state.engine
        changed = CONFIG.model_copy(update={"cloud": CONFIG.cloud.model_copy(update={"url": "http://x/v1"})})
        with pytest.raises(ConfigError, match="cloud changed: restart"):
            reload_config(app, changed)
        assert app.state.engine is before and app.state.config is CONFIG


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("ledger", {"kind": "sqlite", "path": "spend.sqlite3"}),
        ("cache", {"max_entries": 7}),
        ("outcomes", {"store": "sqlite"}),
    ],
)
def test_a_reload_that_changes_what_the_engine_is_built_from_is_refused(
    section: str, value: dict[str, object]
) -> None:
    """The engine's stores are built at start: a reload that only swapped tiers silently kept the old
    ledger and cache (the Lambda kept the old outcome writer); one list now says what needs a restart."""
    with _plain(CONFIG) as c:
        app = c.app
        assert isinstance(app, Starlette)
        data = CONFIG.model_dump(mode="json")
        data[section] = {**data[section], **value}
        with pytest.raises(ConfigError, match=f"{section} changed: restart"):
            reload_config(app, parse_config(data))
