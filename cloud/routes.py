"""The router's HTTP routes, written once for every front door (`cloud/app.py`, `cloud/aws/handler.py`).

A front door turns what its transport hands it into an `HttpRequest`, calls `respond` with the engine
that serves the request, and turns the `HttpResponse` back into its transport's answer: Starlette
streams `HttpResponse.stream`; the buffered Lambda handler joins it into one body (`buffered`). So
the local server, the Function URL and API Gateway serve the same routes, bodies, headers and errors::

    POST /v1/chat/completions   a chat completion; `stream: true` as server-sent events
    POST /v1/feedback           the caller's rating of one of its answers, joined to its outcome record
                                (404 for an id of another tenant's, as for one never seen)
    GET  /v1/models             the one model id this router serves (any API key)
    GET  /health, /healthz      for anyone: `{"status": "ok"}`, 503 when no backend can answer; `/healthz`
                                with an admin key: the mode (hybrid, edge-only, cloud-only), each
                                backend's state, the breaker, the queue, the cloud probe's last result
    GET  /livez                 liveness: 200 while the process answers (no key, no detail)
    GET  /readyz                readiness: 200 once the config is loaded and the edge model (when some
                                tier can use it) has decoded its first token; else 503 with a short
                                reason (no key)
    GET  /metrics               Prometheus text (an admin key); the JSON counters with `?format=json` or
                                `Accept: application/json` (JSON only where metrics go elsewhere: Lambda)
    GET  /v1/edge/config        the caller's tier policy for the edge SDK's config sync (ETag)
    GET  /openapi.json          the OpenAPI 3.1 document of these routes, for anyone

The caller's tier comes from its key, never from the request body: an API Gateway key
(`HttpRequest.api_key_id` / `api_key`, from `requestContext.identity`) or `Authorization: Bearer`.
Each front door serves a request inside `router.request_id_scope` and returns its id in the
`x-request-id` header; every error object built here carries it as `error.request_id`.
No web framework is imported here (the Lambda handler imports this module at cold start).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyrouter.cloud._http import (
    error_body,
    parse_chat_request,
    parse_feedback,
    route_headers,
    with_request_id,
)
from hyrouter.cloud.prometheus import PrometheusMetrics
from hyrouter.router import (
    BackendError,
    CloudBackendError,
    EdgeBackendError,
    EdgeBusy,
    InMemoryMetrics,
    ModelCard,
    ModelList,
    OutcomeNotFound,
    PayloadTooLarge,
    RequestError,
    RoutedStream,
    RouterError,
    RoutingEngine,
    Tenant,
    current_request_id,
    new_request_id,
)
from hyrouter.router._feedback import FeedbackResponse
from hyrouter.router._wire import dump

logger = logging.getLogger("hybrid_router")

JSON = "application/json"
SSE = "text/event-stream"
CHAT_COMPLETIONS = "/v1/chat/completions"
FEEDBACK = "/v1/feedback"
INTERNAL_ERROR_MESSAGE = "The router hit an internal error; it has been logged."


@dataclass(frozen=True)
class HttpRequest:
    """One request as every front door sees it.

    `headers` have lower-case names. `body` is the whole body, or its parts as they arrive (a chunked
    upload is then counted against the body limit as it comes). `api_key_id` and `api_key` are the
    key API Gateway authenticated (`requestContext.identity`); a local request has neither. `query`
    is the query string's parameters (the last value of a repeated one).
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] = b""
    api_key_id: str | None = None
    api_key: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpResponse:
    """One answer as every front door sends it: `content-type` is among `headers` when there is a body.

    A streamed answer has `stream` (SSE byte chunks) and an empty `body`.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


Handler = Callable[[HttpRequest, RoutingEngine], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class Route:
    """A method and path, and the handler that answers them."""

    method: str
    path: str
    handler: Handler


# -- responses -----------------------------------------------------------------------------------


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    """`payload` as compact UTF-8 JSON."""
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return HttpResponse(status, {"content-type": JSON, **(headers or {})}, body)


def error_response(exc: RouterError) -> HttpResponse:
    """A `RouterError` as an OpenAI error object with its status (see `public_error_body`)."""
    return json_response(public_error_body(exc), exc.status_code, exc.headers)


def public_error_body(exc: RouterError) -> dict[str, Any]:
    """`exc`'s OpenAI error object as a caller may read it, in a response or a stream's error event.

    An error about the caller's own request (4xx) keeps its message: it says what to fix (an
    upstream's 400 or 429 passed on says it without the endpoint's URL: its `public_message`). A
    server-side one (5xx) may carry the internal endpoint's URL and an exception's text: the caller
    gets what failed, the code and a request id; the log gets the whole message under that id.
    """
    body = error_body(exc)
    if exc.status_code < 500:
        if exc.public_message is not None:
            body["error"]["message"] = exc.public_message
        return body
    request_id = current_request_id() or new_request_id()
    logger.warning("request %s failed: %s (%s): %s", request_id, exc.code, type(exc).__name__, exc.message)
    body["error"]["message"] = f"{_what_failed(exc)} ({exc.code}). Request id: {request_id}."
    return body


def _what_failed(exc: RouterError) -> str:
    if isinstance(exc, CloudBackendError):
        return "The cloud endpoint failed"
    if isinstance(exc, EdgeBusy):
        return "The edge model is busy"
    if isinstance(exc, EdgeBackendError):
        return "The edge model failed"
    if isinstance(exc, BackendError):
        return "No backend could answer"
    return "The router failed"


def error_object(status: int, message: str, error_type: str, code: str, **headers: str) -> HttpResponse:
    """An OpenAI error object built here (not from a `RouterError`), every member present."""
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return json_response(with_request_id(body), status, headers)


def unrouted(method: str, path: str) -> HttpResponse:
    """404 for a path no route serves; 405 (with `allow`) for a known path and another method."""
    allowed = sorted({route.method for route in ROUTES if route.path == path})
    if not allowed:
        return error_object(404, f"{method} {path}: Not Found", "not_found_error", "404")
    message = f"{method} {path}: Method Not Allowed"
    return error_object(405, message, "invalid_request_error", "405", allow=", ".join(allowed))


def internal_error() -> HttpResponse:
    """What an unexpected exception answers: a 500 error object, never a trace (log it first)."""
    return error_object(500, INTERNAL_ERROR_MESSAGE, "server_error", "internal_error")


async def respond(route: Route, request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`route`'s answer to `request`: a `RouterError` becomes its error object, anything else unexpected
    a logged 500 error object.

    Handled here, not left to the web framework: a server that sees an exception escape its app
    closes the connection, and the caller's next requests on it would fail.
    """
    try:
        return await route.handler(request, engine)
    except RouterError as exc:
        return error_response(exc)
    except Exception:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return internal_error()


async def buffered(response: HttpResponse) -> HttpResponse:
    """`response` with its stream read into one body (API Gateway REST cannot stream)."""
    if response.stream is None:
        return response
    body = b"".join([part async for part in response.stream])  # `sse_events` closes the engine's stream
    return HttpResponse(response.status, response.headers, body)


# -- the caller and the body ---------------------------------------------------------------------


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The key of `Authorization: Bearer <key>`, if that is what the header holds."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(request: HttpRequest, engine: RoutingEngine) -> Tenant:
    """The caller's tenant: by its API Gateway key id when there is one, else by its key's sha256."""
    key = request.api_key or bearer_token(request.headers)
    if request.api_key_id:
        return engine.authenticate_key_id(request.api_key_id, key)
    return engine.authenticate(key)


def require_admin(request: HttpRequest, engine: RoutingEngine) -> None:
    """Refuse (401) a caller whose key is not one of the config's `admin_keys`."""
    engine.keys.require_admin(request.api_key or bearer_token(request.headers))


async def read_body(request: HttpRequest, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (a declared length is checked before reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError("Invalid Content-Length header.")
        if int(declared) > limit:
            raise PayloadTooLarge(f"Request body of {declared} bytes is over the limit of {limit} bytes.")
    if isinstance(request.body, bytes):
        if len(request.body) > limit:
            raise PayloadTooLarge(
                f"Request body of {len(request.body)} bytes is over the limit of {limit} bytes."
            )
        return request.body
    body = bytearray()
    async for part in request.body:
        body += part
        if len(body) > limit:  # a chunked body declares no length: count as it arrives
            raise PayloadTooLarge(f"Request body is over the limit of {limit} bytes.")
    return bytes(body)


# -- the routes ----------------------------------------------------------------------------------


async def chat_completions(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`POST /v1/chat/completions`, streamed or not, for the caller's tier."""
    tenant = authenticate(request, engine)
    return await answer_chat(engine, tenant, await read_body(request, engine.config.server.max_body_bytes))


async def answer_chat(engine: RoutingEngine, tenant: Tenant, body: bytes) -> HttpResponse:
    """A chat completion request body, answered for `tenant` (raises `RouterError` before any byte).

    The body is parsed and checked against the server's limits in a worker thread, as the plan is
    computed: a megabyte of JSON must not hold up the event loop, `/healthz` included.
    """
    chat = await asyncio.to_thread(parse_chat_request, body, engine.config.server)
    if not chat.stream:
        response = await engine.complete(chat, tenant)
        assert response.route is not None
        return json_response(dump(response), headers=route_headers(response.route))
    routed = await engine.stream(chat, tenant)
    headers = {"content-type": SSE, **route_headers(routed.route), "cache-control": "no-cache"}
    return HttpResponse(200, headers, stream=sse_events(routed))


async def sse_events(routed: RoutedStream) -> AsyncIterator[bytes]:
    """Server-sent events: one `data:` line per chunk, an error event on failure, then `[DONE]`.

    However the stream ends (a client that disconnects included), `routed` is closed: the edge
    model is free at once, and a budget reservation the relay never settled is released.
    """
    try:
        try:
            async for chunk in routed.chunks:
                yield f"data: {json.dumps(dump(chunk), separators=(',', ':'))}\n\n".encode()
        finally:
            await routed.aclose()
    except RouterError as exc:  # the status line is gone: report in-band, as vLLM and OpenAI do
        yield f"data: {json.dumps(public_error_body(exc))}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def feedback(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`POST /v1/feedback`: the caller's rating of one of its answers, joined to the answer's outcome record.

    Only the tenant whose request it was may rate it: any other gets the same 404 as for an id that
    was never seen, so that no tenant learns another's ids. Off (404) when outcome records are off.
    """
    tenant = authenticate(request, engine)
    body = parse_feedback(await read_body(request, engine.config.server.max_body_bytes))
    outcomes = engine.outcomes
    if outcomes is None:
        raise OutcomeNotFound("Outcome records are off on this router: there is no answer to rate.")
    # Blocking (a store call, and a flush when the record is still queued): off the event loop.
    if not await asyncio.to_thread(outcomes.rate, body.id, tenant.name, body.rating, body.comment):
        raise OutcomeNotFound(f"No answer with id '{body.id}' was found for this API key.", param="id")
    return json_response(dump(FeedbackResponse(id=body.id, rating=body.rating)))


async def list_models(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /v1/models`: the one model id this router serves, for any caller with an API key."""
    authenticate(request, engine)
    return json_response(dump(ModelList(data=[ModelCard(id=engine.config.served_model_name)])))


async def health(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /health`: liveness for anyone, and nothing more: 200 while some backend can answer, else 503."""
    available = engine.health("edge").available or engine.health("cloud").available
    return json_response({"status": "ok" if available else "unavailable"}, 200 if available else 503)


async def health_detail(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /healthz`: `/health`'s answer without a key; with an admin key, each backend's state too.

    The detail (estimator version, breaker state, queue depth) tells an attacker when the router is
    weakest, so only operators read it; a probe without a key still gets liveness.
    """
    if not (request.api_key or bearer_token(request.headers)):
        return await health(request, engine)
    require_admin(request, engine)
    edge, cloud = engine.health("edge"), engine.health("cloud")
    available = edge.available or cloud.available
    # Edge-only and cloud-only are modes, not faults: only a configured backend that is down degrades.
    whole = all(h.available for h in (edge, cloud) if h.configured)
    body = {
        "status": ("ok" if whole else "degraded") if available else "unavailable",
        "mode": engine.mode,
        "estimator": f"{engine.estimator.name}@{engine.estimator.version}",
        # what turns the edge model's token signals into the confidence of verified answers
        "calibration": engine.calibration.name,
        "edge": {
            "configured": edge.configured,
            "available": edge.available,
            "busy": edge.busy,
            "detail": edge.detail,
            "queue_depth": getattr(engine.edge, "queue_depth", 0),
        },
        "cloud": {
            "configured": cloud.configured,
            "available": cloud.available,
            "detail": cloud.detail,
            "probe": _probe_status(engine),
        },
        # whether a tier's semantic_threshold can apply: the estimator must give an embedding
        "cache": {"semantic_available": engine.cache.semantic_available},
    }
    return json_response(body, 200 if available else 503)


def _probe_status(engine: RoutingEngine) -> dict[str, Any] | None:
    probe = getattr(engine.cloud, "endpoint_probe", None)
    return probe.status() if probe is not None else None


async def livez(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /livez`: the process is up and answers; 200 always, for anyone (restart it if not)."""
    return json_response({"status": "ok"})


async def readyz(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /readyz`: 200 once the config is loaded and the edge model, when enabled and some tier can
    use it, has decoded its first token (it does at load, before it reports available); else 503 with
    a short reason.

    For anyone, and nothing more: which backend lags is `/healthz`'s detail.
    """
    if engine.config.edge_needed and not engine.health("edge").available:
        return json_response({"status": "not_ready", "reason": "edge model not warm"}, 503)
    return json_response({"status": "ready"})


async def metrics(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /metrics`: Prometheus text by default (what scrapers expect); the JSON counters with
    `?format=json` or `Accept: application/json`, and where there is no Prometheus registry (Lambda,
    whose metrics are EMF records: `{}` there).

    Per-tier counts and cost are the operators' business: an admin key only.
    """
    require_admin(request, engine)
    exporter = next((o for o in engine.observers if isinstance(o, PrometheusMetrics)), None)
    if exporter is not None and not _wants_json(request):
        return HttpResponse(200, {"content-type": exporter.content_type}, exporter.exposition())
    snapshot = engine.metrics.snapshot() if isinstance(engine.metrics, InMemoryMetrics) else {}
    if engine.outcomes is not None:
        snapshot["outcomes"] = engine.outcomes.stats()
    return json_response(snapshot)


def _wants_json(request: HttpRequest) -> bool:
    if "format" in request.query:
        return request.query["format"] == "json"
    return JSON in request.headers.get("accept", "")


async def edge_config(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /v1/edge/config`: the caller's tier policy for the edge SDK's config sync.

    The ETag is the document's digest: a device that sends it back in `If-None-Match` gets a 304.
    Only the tier's `routing` is sent; the device keeps its own signals for the tier.
    """
    tenant = authenticate(request, engine)
    routing = engine.config.tiers[tenant.tier].model_dump(mode="json")
    body = json.dumps(
        {"tier": tenant.tier, "policy": {"routing": routing}}, sort_keys=True, separators=(",", ":")
    ).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if etag in request.headers.get("if-none-match", ""):
        return HttpResponse(304, {"etag": etag})
    return HttpResponse(200, {"content-type": JSON, "etag": etag, "cache-control": "private, no-cache"}, body)


async def openapi(request: HttpRequest, engine: RoutingEngine) -> HttpResponse:
    """`GET /openapi.json`: the OpenAPI document of these routes, for anyone (no key, as vLLM's)."""
    from hyrouter.cloud.openapi import (
        openapi_document,
    )  # lazy: pydantic's schema generation, once, on first ask

    return json_response(await asyncio.to_thread(openapi_document))


#: Every route, for every front door.
ROUTES: tuple[Route, ...] = (
    Route("POST", CHAT_COMPLETIONS, chat_completions),
    Route("POST", FEEDBACK, feedback),
    Route("GET", "/v1/models", list_models),
    Route("GET", "/health", health),
    Route("GET", "/healthz", health_detail),
    Route("GET", "/livez", livez),
    Route("GET", "/readyz", readyz),
    Route("GET", "/metrics", metrics),
    Route("GET", "/v1/edge/config", edge_config),
    Route("GET", "/openapi.json", openapi),
)
