"""The OpenAPI 3.1 document of the served API (`GET /openapi.json`), as vLLM's and LiteLLM's servers offer.

Paths come from `hyrouter.cloud.routes.ROUTES`, so a route cannot be served and left out; what each operation
takes and answers is written in `_OPERATIONS`, with the bodies' schemas generated from the wire types
(`hyrouter.router._wire`), the ones the server validates with. A route `_OPERATIONS` does not describe yet is
listed with its handler's docstring and a JSON answer.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hyrouter.cloud._http import ROUTE_HEADERS
from hyrouter.cloud._version import installed_version
from hyrouter.router._feedback import FeedbackRequest, FeedbackResponse
from hyrouter.router._wire import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    ModelList,
)

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"
_BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_ANYONE: list[dict[str, list[str]]] = [{}]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref(ErrorResponse), description)


_HEALTH = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]}},
    "required": ["status"],
}
_READY = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["status"],
}
_UNAUTHORIZED = _error("No API key, or one the router does not know.")

_ROUTE_HEADER_DOCS = {
    "x-route-target": "Where it was answered: edge, cloud or cache.",
    "x-route-reason": "Why (the policy's reason: score_below_threshold, edge_unsure, ...).",
    "x-route-score": "The complexity estimator's score, 4 decimals.",
    "x-route-tier": "The caller's tier.",
    "x-route-model": "The model that answered.",
    "x-route-fallback": "true when the answer came from a fallback.",
    "x-route-confidence": "The edge model's confidence in its answer, 4 decimals; only where the tier "
    "verifies edge answers.",
}
#: The route headers of an answer (`hyrouter.cloud._http.route_headers`).
_ROUTE_HEADER_SPECS = {
    name: {"description": _ROUTE_HEADER_DOCS[name], "schema": {"type": "string"}} for name in ROUTE_HEADERS
}

#: What each route takes and answers, by method and path.
_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/chat/completions"): {
        "operationId": "createChatCompletion",
        "summary": "A chat completion, routed to the edge model or the cloud endpoint by the caller's tier",
        "security": _BEARER,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(ChatCompletionRequest)}},
        },
        "responses": {
            "200": {
                "description": "The answer; with `stream: true`, server-sent events of chunks, then "
                "`data: [DONE]`. The `x-route-*` headers say where and why it was answered.",
                "headers": _ROUTE_HEADER_SPECS,
                "content": {
                    "application/json": {"schema": _ref(ChatCompletionResponse)},
                    "text/event-stream": {"schema": {"type": "string"}, "x-chunk": _ref(ChatCompletionChunk)},
                },
            },
            "400": _error("The request is malformed, or asks what this router does not serve."),
            "401": _UNAUTHORIZED,
            "413": _error("The body or its text is over the server's limits."),
            "429": _error(
                "The tier's cloud budget is spent (insufficient_quota), its requests_per_minute are used "
                "(rate_limit_exceeded, with Retry-After), or the upstream is rate-limited."
            ),
            "503": _error("No backend can answer now."),
            "504": _error("The request's deadline passed."),
        },
    },
    ("POST", "/v1/feedback"): {
        "operationId": "createFeedback",
        "summary": "Rate one of the caller's answers by its id; the rating joins the answer's outcome record",
        "security": _BEARER,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(FeedbackRequest)}}},
        "responses": {
            "200": _json(_ref(FeedbackResponse), "The rating is recorded."),
            "400": _error("The body is malformed: a rating is 1, -1 or a number from 0 to 1."),
            "401": _UNAUTHORIZED,
            "404": _error(
                "No answer of this key's has that id (another key's answers read the same), or outcome "
                "records are off."
            ),
        },
    },
    ("GET", "/v1/models"): {
        "operationId": "listModels",
        "summary": "The one model id this router serves",
        "security": _BEARER,
        "responses": {"200": _json(_ref(ModelList), "The model list."), "401": _UNAUTHORIZED},
    },
    ("GET", "/health"): {
        "operationId": "health",
        "summary": "Liveness, for anyone",
        "security": _ANYONE,
        "responses": {
            "200": _json(_HEALTH, "Some backend can answer."),
            "503": _json(_HEALTH, "No backend can answer."),
        },
    },
    ("GET", "/healthz"): {
        "operationId": "healthDetail",
        "summary": "Liveness; with an admin key, each backend's state too",
        "security": [{}, {"bearerAuth": []}],
        "responses": {
            "200": _json({**_HEALTH, "additionalProperties": True}, "Some backend can answer."),
            "401": _error("A key that is not an admin key."),
            "503": _json({**_HEALTH, "additionalProperties": True}, "No backend can answer."),
        },
    },
    ("GET", "/livez"): {
        "operationId": "livez",
        "summary": "Liveness: 200 while the process answers",
        "security": _ANYONE,
        "responses": {"200": _json(_HEALTH, "The process answers.")},
    },
    ("GET", "/readyz"): {
        "operationId": "readyz",
        "summary": "Readiness: the config is loaded and the edge model, when enabled, has decoded",
        "security": _ANYONE,
        "responses": {
            "200": _json(_READY, "Ready for traffic."),
            "503": _json(_READY, "Not ready yet, with a short reason."),
        },
    },
    ("GET", "/metrics"): {
        "operationId": "metrics",
        "summary": "Decision counters, tokens and cost (an admin key): Prometheus text, or JSON on request",
        "security": _BEARER,
        "parameters": [
            {
                "name": "format",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["json"]},
            }
        ],
        "responses": {
            "200": {
                "description": "Prometheus text by default; the JSON counters with `?format=json`.",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            "401": _UNAUTHORIZED,
        },
    },
    ("GET", "/v1/edge/config"): {
        "operationId": "edgeConfig",
        "summary": "The caller's tier policy, for the edge SDK's config sync",
        "security": _BEARER,
        "parameters": [
            {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": _json({"type": "object"}, "The tier and its routing policy, with an ETag."),
            "304": {"description": "The policy has not changed since the ETag sent."},
            "401": _UNAUTHORIZED,
        },
    },
    ("GET", OPENAPI_PATH): {
        "operationId": "openapi",
        "summary": "This document",
        "security": _ANYONE,
        "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
    },
}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in `hyrouter.cloud.routes.ROUTES` (built once)."""
    from hyrouter.cloud.routes import ROUTES

    _, definitions = models_json_schema(
        [
            (model, "validation")
            for model in (
                ChatCompletionRequest,
                ChatCompletionResponse,
                ChatCompletionChunk,
                ModelList,
                ErrorResponse,
                FeedbackRequest,
                FeedbackResponse,
            )
        ],
        ref_template=_REF,
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation = _OPERATIONS.get((route.method, route.path)) or _undescribed(route.handler.__doc__)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hybrid-router",
            "version": installed_version(),
            "description": "An OpenAI-compatible edge/cloud inference router: the Chat Completions API, "
            "answered on a CPU model or a GPU endpoint by each request's complexity and the caller's tier.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The caller's API key."}
            },
        },
        "security": _BEARER,
    }


def _undescribed(doc: str | None) -> dict[str, Any]:
    summary = (doc or "").strip().splitlines()[0] if doc else "Undocumented route"
    return {"summary": summary, "responses": {"200": _json({"type": "object"}, "The answer.")}}
