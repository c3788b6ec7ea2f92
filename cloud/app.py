"""The router's HTTP app (ASGI, Starlette): the OpenAI Chat Completions API plus health and metrics.

Served by uvicorn locally, and by the Lambda Web Adapter behind a Function URL for streaming. The
routes are `hyrouter.cloud.routes`'s, which the Lambda handler mounts too; this module only adapts Starlette's
request and response to them. Every error leaves as an OpenAI-style error object with its status;
none leaves as a stack trace. Every answer carries the request's `x-request-id` (`cloud/request_ids.py`);
the engine's decisions are also counted for Prometheus (`hyrouter.cloud.prometheus`), and the cloud endpoint's
active probe runs while the app does (`hyrouter.cloud.probe`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hyrouter.cloud import routes
from hyrouter.cloud._http import ROUTE_HEADERS
from hyrouter.cloud.engines import EngineFactory
from hyrouter.cloud.prometheus import PrometheusMetrics
from hyrouter.cloud.request_ids import STATE_KEY, RequestIdMiddleware
from hyrouter.router import (
    REQUEST_ID_HEADER,
    ConfigError,
    RouterConfig,
    RouterError,
    RoutingEngine,
    current_request_id,
    engine_sections_changed,
    new_request_id,
    request_id_scope,
)

logger = logging.getLogger("hybrid_router")

SHUTTING_DOWN = "The server is shutting down; retry the request."
_SHUTDOWN_ERROR = {
    "message": SHUTTING_DOWN,
    "type": "server_error",
    "param": None,
    "code": "server_shutting_down",
}


def shutdown_events() -> bytes:
    """How a stream still open when the shutdown's grace period ends is ended: an error event (with the
    request's id, when there is one), then `[DONE]`."""
    error = dict(_SHUTDOWN_ERROR)
    if (request_id := current_request_id()) is not None:
        error["request_id"] = request_id
    return f"data: {json.dumps({'error': error}, separators=(',', ':'))}\n\ndata: [DONE]\n\n".encode()


#: `shutdown_events()` outside any request.
SHUTDOWN_EVENTS = shutdown_events()


def error_response(exc: RouterError) -> Response:
    """An OpenAI-style error body with the error's status."""
    return _starlette(routes.error_response(exc))


async def _default_engine(config: RouterConfig) -> RoutingEngine:
    from hyrouter.cloud.engines import build_engine

    return await anyio.to_thread.run_sync(build_engine, config)


def create_app(
    config: RouterConfig, *, engine_factory: EngineFactory = _default_engine, cloud_probe: bool = True
) -> Starlette:
    """The ASGI app serving `config`; the engine (and the edge model) is built at start-up.

    With `cloud_probe` (and a cloud URL and a `cloud.probe_interval_s`), the cloud endpoint is probed in
    the background while the app runs; a Lambda, frozen between invocations, leaves it off.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from hyrouter.cloud.engines import close_engine

        engine = await engine_factory(config)
        engine.observers.append(PrometheusMetrics(engine))  # a registry per app
        probe = getattr(engine.cloud, "endpoint_probe", None)
        if cloud_probe and probe is not None:
            probe.start()  # stopped by `close_engine`
        app.state.engine = engine
        app.state.in_flight_cut = asyncio.Event()
        logger.info(
            "hybrid-router ready: tiers %s, estimator %s",
            sorted(config.tiers),
            f"{engine.estimator.name}@{engine.estimator.version}",
        )
        try:
            yield
        finally:
            await close_engine(engine)

    app = Starlette(
        routes=[Route(route.path, _endpoint(route), methods=[route.method]) for route in routes.ROUTES],
        lifespan=lifespan,
        # The request id outermost: a CORS refusal has one too.
        middleware=[Middleware(RequestIdMiddleware), *_cors(config)],
        exception_handlers={
            RouterError: _router_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.config = config
    return app


def _cors(config: RouterConfig) -> list[Middleware]:
    cors = config.server.cors
    if not cors.enabled:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_methods=cors.allow_methods,
            allow_headers=cors.allow_headers,
            allow_credentials=cors.allow_credentials,
            expose_headers=[*ROUTE_HEADERS, REQUEST_ID_HEADER],
            max_age=cors.max_age_s,
        )
    ]


def reload_config(app: Starlette, config: RouterConfig) -> None:
    """Serve `config` from the next request on: tiers, keys, limits, the served model name.

    Requests in flight finish on the engine they started with (`RoutingEngine.reconfigured` shares the
    backends, so nothing is closed). A change of the backends' sections is refused with a `ConfigError`
    (the caller keeps the last good config); a change of `server`'s listener settings is logged and
    waits for a restart.
    """
    old: RouterConfig = app.state.config
    # What a reload cannot change here: what the engine is built from (rebuilt only at start).
    changed = engine_sections_changed(old, config)
    if changed:
        raise ConfigError(f"{', '.join(changed)} changed: restart the server to apply that")
    listener = ("host", "port", "cors", "forwarded_allow_ips", "shutdown_grace_s")
    if any(getattr(old.server, name) != getattr(config.server, name) for name in listener):
        logger.warning("config reload: server host, port, cors, proxies and grace apply at the next restart")
    engine: RoutingEngine | None = getattr(app.state, "engine", None)
    if engine is not None:
        app.state.engine = engine.reconfigured(config)
    app.state.config = config
    logger.info("config reloaded: tiers %s, %d api keys", sorted(config.tiers), len(config.api_keys))


def cut_in_flight(app: Starlette) -> None:
    """End what `app` still serves, for a shutdown whose grace is over: each open stream with an error
    event and `data: [DONE]`, each request not yet answered with a 503 `server_shutting_down`."""
    cut: asyncio.Event | None = getattr(app.state, "in_flight_cut", None)
    if cut is not None:
        cut.set()


def _endpoint(route: routes.Route) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        engine: RoutingEngine = request.app.state.engine
        shared = routes.HttpRequest(
            method=request.method,
            path=request.url.path,
            headers={name: request.headers[name] for name in request.headers},
            body=request.stream(),
            query=dict(request.query_params),
        )
        cut: asyncio.Event | None = getattr(request.app.state, "in_flight_cut", None)
        if cut is None:
            return _starlette(await routes.respond(route, shared, engine))
        response = await _unless_cut(routes.respond(route, shared, engine), cut)
        if response.stream is not None:
            response = replace(response, stream=_until_cut(response.stream, cut))
        return _starlette(response)

    endpoint.__name__ = endpoint.__qualname__ = route.handler.__name__
    endpoint.__doc__ = route.handler.__doc__
    return endpoint


async def _unless_cut(answer: Awaitable[routes.HttpResponse], cut: asyncio.Event) -> routes.HttpResponse:
    """`answer`, unless `cut` is set first: then a 503 `server_shutting_down` (and `answer` is cancelled)."""
    task = asyncio.ensure_future(answer)
    cut_wait = asyncio.ensure_future(cut.wait())
    try:
        await asyncio.wait({task, cut_wait}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        logger.warning("shutting down: a request not yet answered gets a 503")
        return routes.error_object(503, SHUTTING_DOWN, "server_error", "server_shutting_down")
    finally:
        task.cancel()
        cut_wait.cancel()
        await asyncio.gather(task, cut_wait, return_exceptions=True)


async def _until_cut(parts: AsyncIterator[bytes], cut: asyncio.Event) -> AsyncIterator[bytes]:
    """`parts`, until `cut` is set: then `SHUTDOWN_EVENTS` instead of the rest.

    `parts` is read in a task of its own, so that a cut does not wait for a slow upstream's next
    chunk; cancelling that task closes `parts`, which releases its backend.
    """
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for part in parts:
                await queue.put(part)
        except Exception as exc:  # raised again below, in the response's own task
            await queue.put(exc)
        else:
            await queue.put(None)

    producer = asyncio.create_task(pump())
    cut_wait = asyncio.create_task(cut.wait())
    try:
        while True:
            getter = asyncio.create_task(queue.get())
            await asyncio.wait({getter, cut_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                logger.warning("shutting down: an open stream ends with an error event")
                yield shutdown_events()
                return
            item = getter.result()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        producer.cancel()
        cut_wait.cancel()
        await asyncio.gather(producer, cut_wait, return_exceptions=True)


def _starlette(response: routes.HttpResponse) -> Response:
    # The content type is among the headers, so Starlette adds no charset of its own: both front doors
    # send the same bytes.
    if response.stream is not None:
        return StreamingResponse(response.stream, status_code=response.status, headers=response.headers)
    return Response(response.body, status_code=response.status, headers=response.headers)


async def _router_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RouterError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        return _starlette(routes.unrouted(request.method, request.url.path))
    message = f"{request.method} {request.url.path}: {exc.detail}"
    status, headers = exc.status_code, exc.headers or {}
    return _starlette(routes.error_object(status, message, "invalid_request_error", str(status), **headers))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette runs this outside the middleware (and so outside the request's id scope): restore it.
    request_id = getattr(request.state, STATE_KEY, None) or new_request_id()
    with request_id_scope(request_id):
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        response = routes.internal_error()
    return _starlette(replace(response, headers={**response.headers, REQUEST_ID_HEADER: request_id}))
