"""`GET /openapi.json`: a valid OpenAPI 3.1 document of every route the app serves."""

from __future__ import annotations

from jsonschema import Draft202012Validator
from schemathesis.specs.openapi.definitions import OPENAPI_31  # the OAS 3.1 meta-schema (dev dependency)
from starlette.routing import Route
from starlette.testclient import TestClient

from hyrouter.cloud._version import installed_version
from hyrouter.cloud.app import create_app
from hyrouter.cloud.openapi import openapi_document
from hyrouter.router import (
    ChatCompletionRequest,
    HeuristicEstimator,
    RouterConfig,
    RoutingEngine,
    parse_config,
)
from tests.fakes import FakeBackend

CONFIG = parse_config({"tiers": {"free": {}}})


def violations(document: object) -> list[str]:
    return [error.message for error in Draft202012Validator(OPENAPI_31).iter_errors(document)]


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0" and document["info"]["version"] == installed_version()
    assert violations(document) == []


def test_the_validation_can_fail() -> None:
    broken = {**openapi_document(), "paths": {"/v1/models": {"get": {"responses": {"200": {}}}}}}
    assert violations(broken)  # a response without a description


def test_every_route_the_app_serves_is_described() -> None:
    app = create_app(CONFIG)
    paths = openapi_document()["paths"]
    served = {
        (method.lower(), r.path) for r in app.routes if isinstance(r, Route) for method in r.methods or ()
    }
    served -= {("head", path) for _, path in served}  # Starlette adds HEAD to each GET
    assert served and all(method in paths.get(path, {}) for method, path in served)
    assert {"/v1/chat/completions", "/v1/models", "/health", "/healthz"} <= set(paths)


def test_auth_is_bearer_and_health_needs_none() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The caller's API key.",
    }
    assert document["paths"]["/v1/chat/completions"]["post"]["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/health"]["get"]["security"] == [{}]


def test_the_request_schema_is_the_one_the_server_validates_with() -> None:
    document = openapi_document()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert document["components"]["schemas"]["ChatCompletionRequest"] == schema["$defs"].get(
        "ChatCompletionRequest", {k: v for k, v in schema.items() if k != "$defs"}
    )


def test_the_app_serves_it_without_a_key() -> None:
    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge"))

    with TestClient(create_app(CONFIG, engine_factory=factory)) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200 and response.json() == openapi_document()


def test_feedback_is_described_with_the_schema_the_server_validates_with() -> None:
    document = openapi_document()
    operation = document["paths"]["/v1/feedback"]["post"]
    assert operation["operationId"] == "createFeedback" and operation["security"] == [{"bearerAuth": []}]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/FeedbackRequest"}
    assert set(document["components"]["schemas"]["FeedbackRequest"]["properties"]) == {
        "id",
        "rating",
        "comment",
    }
    assert {"200", "400", "401", "404"} <= set(operation["responses"])
