"""`hyrouter.cloud.routes` through both front doors: the same request gets the same status, headers and body.

The local Starlette app and the buffered Lambda handler (real API Gateway REST events, moto SSM) run
on the same config and the same fake backends; only what differs per answer (`id`, `created`) and
per transport (`content-length`) is left out of the comparison.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud import routes
from hyrouter.cloud.app import create_app
from hyrouter.router import parse_config
from tests.unit import test_lambda_handler as lambda_tests
from tests.unit.test_lambda_handler import CONFIG, fake_engine, load_event

# The Lambda handler's fixtures (moto SSM, its log stream, a call with a LambdaContext stub).
ssm, log_lines, call_lambda = lambda_tests.ssm, lambda_tests.log_lines, lambda_tests.invoke

STANDARD_KEY = "hr-standard-0123456789abcdef"  # in CONFIG's `api_keys`, by sha256
BEARER = {"authorization": f"Bearer {STANDARD_KEY}"}
ADMIN = {"authorization": "Bearer hr-admin-0123456789abcdef"}  # in CONFIG's `admin_keys`
CHAT = {"model": "hybrid-router", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


@dataclass(frozen=True)
class Answer:
    """What a caller sees, less what differs per answer or per transport."""

    status: int
    headers: dict[str, str]
    body: Any


@pytest.fixture
def local() -> Iterator[TestClient]:
    app = create_app(parse_config(CONFIG), engine_factory=fake_engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def comparable(body: bytes, content_type: str | None) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("id", "created")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    if content_type == routes.JSON:
        return strip(json.loads(body))
    if content_type == routes.SSE:
        lines = body.decode().split("\n\n")
        return [
            line if line.endswith("[DONE]") or not line else strip(json.loads(line[6:])) for line in lines
        ]
    return body


def through_starlette(
    client: TestClient, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> Answer:
    r = client.request(method, path, headers=headers, content=body)
    kept = {k: v for k, v in r.headers.items() if k != "content-length"}
    return Answer(r.status_code, kept, comparable(r.content, kept.get("content-type")))


def through_lambda(
    call_lambda: Any, method: str, path: str, headers: dict[str, str], body: bytes | None, **identity: Any
) -> Answer:
    event = load_event("models.json")
    event.update(httpMethod=method, path=path, resource=path, body=body.decode() if body else None)
    event["headers"] = dict(headers)
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    event["requestContext"].update(httpMethod=method, path=f"/prod{path}", resourcePath=path)
    event["requestContext"]["identity"].update(apiKeyId=None, apiKey=None, **identity)
    result = call_lambda(event)
    kept = {k.lower(): v[0] for k, v in result["multiValueHeaders"].items()}
    return Answer(result["statusCode"], kept, comparable(result["body"].encode(), kept.get("content-type")))


SAME_REQUESTS = [
    pytest.param("POST", "/v1/chat/completions", BEARER, json.dumps(CHAT).encode(), id="chat"),
    pytest.param(
        "POST",
        "/v1/chat/completions",
        BEARER,
        json.dumps({**CHAT, "stream": True}).encode(),
        id="chat-stream",
    ),
    pytest.param("POST", "/v1/chat/completions", BEARER, b"{not json", id="bad-json"),
    pytest.param("POST", "/v1/chat/completions", BEARER, b"[1, 2]", id="not-an-object"),
    pytest.param(
        "POST",
        "/v1/chat/completions",
        BEARER,
        json.dumps({**CHAT, "model": "gpt-4o"}).encode(),
        id="unknown-model",
    ),
    pytest.param(
        "POST",
        "/v1/chat/completions",
        {**BEARER, "content-length": "2000000"},
        json.dumps(CHAT).encode(),
        id="body-over-limit",
    ),
    pytest.param(
        "POST",
        "/v1/chat/completions",
        {"authorization": "Bearer not-a-key"},
        json.dumps(CHAT).encode(),
        id="unknown-key",
    ),
    pytest.param("POST", "/v1/chat/completions", {}, json.dumps(CHAT).encode(), id="missing-key"),
    pytest.param("GET", "/v1/models", BEARER, None, id="models"),
    pytest.param(
        "POST", "/v1/feedback", BEARER, b'{"id": "chatcmpl-x", "rating": 5}', id="feedback-bad-rating"
    ),
    pytest.param(
        "POST", "/v1/feedback", BEARER, b'{"id": "chatcmpl-x", "rating": 1}', id="feedback-records-off"
    ),
    pytest.param("POST", "/v1/feedback", {}, b'{"id": "chatcmpl-x", "rating": 1}', id="feedback-no-key"),
    pytest.param("GET", "/v1/models", {}, None, id="models-without-a-key"),
    pytest.param("GET", "/health", {}, None, id="health"),
    pytest.param("GET", "/healthz", {}, None, id="healthz"),
    pytest.param("GET", "/healthz", ADMIN, None, id="healthz-admin"),
    pytest.param("GET", "/healthz", BEARER, None, id="healthz-tenant-key"),
    pytest.param("GET", "/livez", {}, None, id="livez"),
    pytest.param("GET", "/readyz", {}, None, id="readyz"),
    pytest.param("GET", "/metrics", {}, None, id="metrics-without-a-key"),
    pytest.param("GET", "/metrics", BEARER, None, id="metrics-tenant-key"),
    pytest.param("GET", "/v1/edge/config", BEARER, None, id="edge-config"),
    pytest.param("GET", "/v1/edge/config", {"authorization": "Bearer nope"}, None, id="edge-config-bad-key"),
    pytest.param("GET", "/openapi.json", {}, None, id="openapi"),
    pytest.param("GET", "/v1/embeddings", {}, None, id="unknown-path"),
    pytest.param("DELETE", "/v1/models", {}, None, id="wrong-method"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), SAME_REQUESTS)
def test_both_front_doors_answer_alike(
    local: TestClient, call_lambda: Any, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    if headers.get("content-length") is None and body is not None:
        headers = {**headers, "content-type": "application/json"}
    headers = {**headers, "x-request-id": f"compare-{method}-{path}"}  # each door takes the caller's id
    starlette = through_starlette(local, method, path, headers, body)
    lambda_ = through_lambda(call_lambda, method, path, headers, body)
    assert starlette == lambda_
    assert starlette.status != 500
    assert starlette.headers["x-request-id"] == f"compare-{method}-{path}"
    if starlette.status >= 400 and isinstance(starlette.body, dict):
        assert starlette.body["error"]["request_id"] == f"compare-{method}-{path}"


def test_the_errors_compared_are_the_documented_ones(local: TestClient, call_lambda: Any) -> None:
    # A guard on the comparison above: equal could also mean equally wrong.
    bad = through_lambda(call_lambda, "POST", "/v1/chat/completions", BEARER, b"{not json")
    assert bad.status == 400 and "not valid JSON" in bad.body["error"]["message"]
    assert set(bad.body["error"]) == {"message", "type", "param", "code", "request_id"}
    unknown = through_lambda(
        call_lambda, "POST", "/v1/chat/completions", {"authorization": "Bearer x"}, b"{}"
    )
    assert unknown.status == 401 and unknown.body["error"]["code"] == "invalid_api_key"
    wrong = through_lambda(call_lambda, "DELETE", "/v1/models", {}, None)
    assert wrong.status == 405 and wrong.headers["allow"] == "GET"
    assert through_lambda(call_lambda, "GET", "/v1/embeddings", {}, None).status == 404
    stream = through_lambda(
        call_lambda, "POST", "/v1/chat/completions", BEARER, json.dumps({**CHAT, "stream": True}).encode()
    )
    assert stream.headers["content-type"] == "text/event-stream" and stream.body[-2] == "data: [DONE]"
    # The same route, but Lambda's metrics are EMF records in the log, not an in-process snapshot.
    lambda_metrics = through_lambda(call_lambda, "GET", "/metrics", ADMIN, None)
    assert (lambda_metrics.status, lambda_metrics.headers["content-type"], lambda_metrics.body) == (
        200,
        routes.JSON,
        {},
    )
    assert "decisions" in through_starlette(local, "GET", "/metrics?format=json", ADMIN, None).body
    # What anyone may read, and what only a key may read.
    assert through_lambda(call_lambda, "GET", "/health", {}, None).body == {"status": "ok"}
    assert through_lambda(call_lambda, "GET", "/healthz", {}, None).body == {"status": "ok"}
    assert "estimator" in through_lambda(call_lambda, "GET", "/healthz", ADMIN, None).body
    for path, headers in (("/v1/models", {}), ("/metrics", {}), ("/metrics", BEARER), ("/healthz", BEARER)):
        denied = through_lambda(call_lambda, "GET", path, headers, None)
        assert denied.status == 401 and denied.body["error"]["code"] == "invalid_api_key", path


def test_every_route_is_compared(local: TestClient) -> None:
    shared = {(route.method, route.path) for route in routes.ROUTES}
    compared = {(p.values[0], p.values[1]) for p in SAME_REQUESTS} | {("GET", "/metrics")}  # metrics: above
    assert shared <= compared
    mounted = {(m, r.path) for r in local.app.routes for m in getattr(r, "methods", ()) if m != "HEAD"}  # type: ignore[attr-defined]
    assert mounted == shared


# -- /v1/edge/config through API Gateway ---------------------------------------------------------


def edge_config_event(key_id: str | None, key: str | None, **headers: str) -> dict[str, Any]:
    event = load_event("models.json")
    event.update(path="/v1/edge/config", resource="/v1/edge/config")
    event["headers"].update(headers)
    event["multiValueHeaders"].update({k: [v] for k, v in headers.items()})
    event["requestContext"].update(path="/prod/v1/edge/config", resourcePath="/v1/edge/config")
    event["requestContext"]["identity"].update(apiKeyId=key_id, apiKey=key)
    return event


def header(result: dict[str, Any], name: str) -> str | None:
    values = {k.lower(): v for k, v in result["multiValueHeaders"].items()}.get(name)
    return values[0] if values else None


def test_lambda_edge_config_for_an_api_gateway_key_with_etag(call_lambda: Any) -> None:
    first = call_lambda(edge_config_event("k1free0001", "hr-free-0123456789abcdef"))
    assert first["statusCode"] == 200
    document = json.loads(first["body"])
    assert document["tier"] == "free" and document["policy"]["routing"]["threshold"] == 0.7
    assert set(document["policy"]) == {"routing"}
    etag = header(first, "etag")
    assert etag and header(first, "cache-control") == "private, no-cache"

    again = call_lambda(
        edge_config_event("k1free0001", "hr-free-0123456789abcdef", **{"If-None-Match": etag})
    )
    assert again["statusCode"] == 304 and header(again, "etag") == etag and not again["body"]

    premium = call_lambda(
        edge_config_event("k3prem0003", "hr-premium-0123456789abcdef", **{"If-None-Match": etag})
    )
    assert premium["statusCode"] == 200 and json.loads(premium["body"])["tier"] == "premium"
    assert header(premium, "etag") != etag


def test_lambda_edge_config_finds_a_key_by_hash_and_refuses_unknown_ones(call_lambda: Any) -> None:
    by_hash = call_lambda(edge_config_event("unmapped-id", STANDARD_KEY))
    assert by_hash["statusCode"] == 200 and json.loads(by_hash["body"])["tier"] == "standard"
    unknown = call_lambda(edge_config_event("unknown-id", "unknown-key"))
    assert unknown["statusCode"] == 401
    assert json.loads(unknown["body"])["error"]["code"] == "invalid_api_key"
    assert call_lambda(edge_config_event(None, None))["statusCode"] == 401


def test_the_etag_is_the_same_through_both_front_doors(local: TestClient, call_lambda: Any) -> None:
    lambda_ = call_lambda(edge_config_event("unmapped-id", STANDARD_KEY))
    starlette = local.get("/v1/edge/config", headers=BEARER)
    assert starlette.headers["etag"] == header(lambda_, "etag")
    assert starlette.content == lambda_["body"].encode()
