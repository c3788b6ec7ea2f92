"""The streaming entry point: the local ASGI app (`hyrouter.cloud.app`) behind a Lambda Function URL.

Python Lambdas cannot stream a response themselves, so the container runs uvicorn and the Lambda
Web Adapter (an extension) relays each invocation to it with `AWS_LWA_INVOKE_MODE=response_stream`;
the Function URL (`InvokeMode: RESPONSE_STREAM`) passes the SSE bytes to the caller as they come::

    uvicorn --factory hyrouter.cloud.aws.stream:create_stream_app --host 127.0.0.1 --port 8080

Callers authenticate as they do locally (`Authorization: Bearer <key>`, looked up by sha256 in
`api_keys`). The tier config is refreshed as in the buffered handler; metrics are EMF. Each response's
outcome record is written before its last body message leaves (the invocation ends with it), and
its sampled edge answer, if any, is sent to the judge function then (`hyrouter.cloud.aws.shadow`).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from aws_lambda_powertools import Logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hyrouter.cloud.app import create_app
from hyrouter.cloud.aws.cache import shared_cache_store
from hyrouter.cloud.aws.config import ConfigSource
from hyrouter.cloud.aws.runtime import LambdaEnvironment, lambda_engine
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.aws.telemetry import emit_cold_start, route_core_logs, service_name
from hyrouter.cloud.engines import EngineFactory
from hyrouter.router import RouterConfig, RoutingEngine

logger = Logger(service=service_name())


def create_stream_app(
    source: ConfigSource | None = None,
    *,
    engine_factory: EngineFactory = lambda_engine,
    lambda_client: Any = None,
) -> ASGIApp:
    """The ASGI app for the Function URL: `hyrouter.cloud.app` on an engine kept current with the config;
    shadow jobs go to the judge function through `lambda_client` (a boto3 Lambda client; None: made
    on first use)."""
    route_core_logs(logger)
    settings = LambdaSettings.from_env()
    environment = LambdaEnvironment(
        source or ConfigSource.from_settings(settings),
        engine_factory=engine_factory,
        shared_cache=shared_cache_store(settings),
        settings=settings,
        lambda_client=lambda_client,
    )
    first = environment.current()  # at init: config, estimator and edge model, before the first request
    if settings.function_name:
        emit_cold_start(
            settings.function_name, namespace=settings.metrics_namespace, service=settings.service_name
        )

    async def built(config: RouterConfig) -> RoutingEngine:
        return first.engine

    inner = create_app(first.engine.config, engine_factory=built, cloud_probe=False)  # no timers in Lambda

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # A cached fetch costs microseconds; a refetch (every max_age seconds) does blocking I/O.
            snapshot = await anyio.to_thread.run_sync(environment.current)
            inner.state.engine = snapshot.engine
            inner.state.config = snapshot.engine.config
            await environment.close_retired()
            logger.set_correlation_id(_request_id(scope))
            send = _flushing_outcomes(send, environment)
        await inner(scope, receive, send)

    return app


def _flushing_outcomes(send: Send, environment: LambdaEnvironment) -> Send:
    """`send`, writing the outcome records queued so far before a response's last body message, then
    sending the sampled shadow jobs to the judge function.

    The invocation ends with the response: the Lambda is frozen then, and a record still queued would
    wait for the next invocation (or be lost). A stream's record is made when its chunks end, before
    that last message.
    """

    def flush() -> None:
        environment.flush_outcomes()
        environment.send_shadow_jobs()

    async def last_flushed(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await anyio.to_thread.run_sync(flush)
        await send(message)

    return last_flushed


def _request_id(scope: Scope) -> str | None:
    """The Lambda request id the Web Adapter forwards in `x-amzn-request-context`."""
    for name, value in scope.get("headers", []):
        if name == b"x-amzn-request-context":
            try:
                context = json.loads(value)
            except ValueError:
                return None
            request_id = context.get("requestId") if isinstance(context, dict) else None
            return str(request_id) if request_id else None
    return None
