"""The router's HTTP app (ASGI, Starlette): the OpenAI Chat Completions API plus health and metrics.

Served by uvicorn locally, and by the Lambda Web Adapter behind a Function URL for streaming.
Every error leaves as an OpenAI-style error object with its status; none leaves as a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cloud._http import error_body, parse_chat_request, route_headers
from cloud.runtime import EngineFactory
from router import (
    InMemoryMetrics,
    ModelCard,
    ModelList,
    PayloadTooLarge,
    RequestError,
    RouterConfig,
    RouterError,
    RoutingEngine,
)
from router._wire import dump

logger = logging.getLogger("hybrid_router")


def error_response(exc: RouterError) -> JSONResponse:
    """An OpenAI-style error body with the error's status."""
    return JSONResponse(error_body(exc), status_code=exc.status_code)


async def _default_engine(config: RouterConfig) -> RoutingEngine:
    from cloud.runtime import build_engine

    return await anyio.to_thread.run_sync(build_engine, config)


def create_app(config: RouterConfig, *, engine_factory: EngineFactory = _default_engine) -> Starlette:
    """The ASGI app serving `config`; the engine (and the edge model) is built at start-up."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from cloud.runtime import close_engine

        engine = await engine_factory(config)
        app.state.engine = engine
        logger.info(
            "hybrid-router ready: tiers %s, estimator %s",
            sorted(config.tiers),
            f"{engine.estimator.name}@{engine.estimator.version}",
        )
        try:
            yield
        finally:
            await close_engine(engine)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/health", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/edge/config", edge_config, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RouterError: _router_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.config = config
    return app


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions`, streamed or not."""
    engine: RoutingEngine = request.app.state.engine
    tenant = engine.authenticate(_bearer_token(request))
    chat = parse_chat_request(await _read_body(request, engine.config.server.max_body_bytes))
    if not chat.stream:
        response = await engine.complete(chat, tenant)
        assert response.route is not None
        return JSONResponse(dump(response), headers=route_headers(response.route))
    routed = await engine.stream(chat, tenant)
    return StreamingResponse(
        _sse(routed.chunks),
        media_type="text/event-stream",
        headers={**route_headers(routed.route), "cache-control": "no-cache"},
    )


async def _sse(chunks: AsyncGenerator[Any, None]) -> AsyncIterator[str]:
    """Server-sent events: one `data:` line per chunk, an error event on failure, then `[DONE]`."""
    try:
        async with aclosing(chunks):  # a client that disconnects must release the edge model at once
            async for chunk in chunks:
                yield f"data: {json.dumps(dump(chunk), separators=(',', ':'))}\n\n"
    except RouterError as exc:  # the status line is gone: report in-band, as vLLM and OpenAI do
        yield f"data: {json.dumps(error_body(exc))}\n\n"
    yield "data: [DONE]\n\n"


async def list_models(request: Request) -> Response:
    """`GET /v1/models`: the one model id this router serves."""
    config: RouterConfig = request.app.state.config
    return JSONResponse(dump(ModelList(data=[ModelCard(id=config.served_model_name)])))


async def healthz(request: Request) -> Response:
    """`GET /healthz`: 200 while some backend can answer, with each backend's state."""
    engine: RoutingEngine = request.app.state.engine
    edge, cloud = engine.health("edge"), engine.health("cloud")
    body: dict[str, Any] = {
        "status": "ok" if edge.available and cloud.available else "degraded",
        "estimator": f"{engine.estimator.name}@{engine.estimator.version}",
        "edge": {
            "available": edge.available,
            "busy": edge.busy,
            "detail": edge.detail,
            "queue_depth": getattr(engine.edge, "queue_depth", 0),
        },
        "cloud": {"available": cloud.available, "detail": cloud.detail},
    }
    if not (edge.available or cloud.available):
        body["status"] = "unavailable"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """`GET /metrics`: decision counters, tokens and cost, as JSON."""
    engine: RoutingEngine = request.app.state.engine
    snapshot = engine.metrics.snapshot() if isinstance(engine.metrics, InMemoryMetrics) else {}
    return JSONResponse(snapshot)


async def edge_config(request: Request) -> Response:
    """`GET /v1/edge/config`: the calling device's tier policy, for the edge SDK's config sync (ETag)."""
    engine: RoutingEngine = request.app.state.engine
    tenant = engine.authenticate(_bearer_token(request))
    routing = engine.config.tiers[tenant.tier].model_dump(mode="json")
    body = json.dumps(
        {"tier": tenant.tier, "policy": {"routing": routing}}, sort_keys=True, separators=(",", ":")
    ).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"etag": etag})
    return Response(
        body, media_type="application/json", headers={"etag": etag, "cache-control": "private, no-cache"}
    )


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError("Invalid Content-Length header.")
        if int(declared) > limit:
            raise PayloadTooLarge(f"Request body of {declared} bytes is over the limit of {limit} bytes.")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:  # a chunked body declares no length: count as it arrives
            raise PayloadTooLarge(f"Request body is over the limit of {limit} bytes.")
    return bytes(body)


async def _router_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RouterError)
    if exc.status_code >= 500:
        logger.warning("request failed: %s: %s", exc.code, exc.message)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    body = {
        "error": {
            "message": f"{request.method} {request.url.path}: {exc.detail}",
            "type": error_type,
            "param": None,
            "code": str(exc.status_code),
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {
        "error": {
            "message": "The router hit an internal error; it has been logged.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    return JSONResponse(body, status_code=500)
