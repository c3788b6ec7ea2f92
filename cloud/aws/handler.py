"""The buffered Lambda handler behind the API Gateway REST API (powertools event handler).

    POST /v1/chat/completions   a chat completion; `stream: true` is answered as one SSE body
                                (true streaming is the Function URL's: see `cloud.aws.stream`)
    GET  /v1/models             the one model id this router serves
    GET  /health                each backend's state

The caller's tier comes from the API Gateway key that made the call (`requestContext.identity`),
mapped through the config's `api_key_ids` (or `api_keys` by sha256), never from the request body.
Errors leave as OpenAI error objects with their status. Set `HYBRID_ROUTER_IDEMPOTENCY_TABLE` to a
DynamoDB table and a retried call that repeats its `Idempotency-Key` header gets the first answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloud._http import error_body, parse_chat_request, route_headers
from cloud.aws.config import ConfigSource
from cloud.aws.runtime import LambdaRouter, Snapshot, lambda_engine
from cloud.aws.settings import LambdaSettings
from cloud.aws.telemetry import metrics_namespace, route_core_logs, service_name
from cloud.runtime import EngineFactory
from router import (
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    PayloadTooLarge,
    RequestError,
    RouteInfo,
    RouterError,
    Tenant,
)
from router._wire import dump

ENV_IDEMPOTENCY_TABLE = LambdaSettings.env_name("idempotency_table")
IDEMPOTENCY_HEADER = "idempotency-key"
JSON = "application/json"

_settings = LambdaSettings.from_env()  # at import: what the Lambda runtime and powertools set
logger = Logger(service=service_name(_settings))
tracer = Tracer(service=service_name(_settings))
metrics = Metrics(namespace=metrics_namespace(_settings), service=service_name(_settings))
app = APIGatewayRestResolver()

#: How this environment builds its engine (tests put fake backends here).
engine_factory: EngineFactory = lambda_engine
_router: LambdaRouter | None = None
_complete_once: Any = None
_idempotency_config: Any = None


def get_router() -> LambdaRouter:
    """This environment's `LambdaRouter`, made on first use (at init when running in Lambda)."""
    global _router, _complete_once
    if _router is None:
        started = time.perf_counter()
        route_core_logs(logger)
        settings = LambdaSettings.from_env()
        router = LambdaRouter(ConfigSource.from_settings(settings), engine_factory=engine_factory)
        router.current()  # fetch the config, load the estimator and the edge model: fail at init
        router.init_ms["total_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        logger.info({"event": "router_ready", "source": str(router.source), **router.init_ms})
        _complete_once = _idempotent(_complete_payload, settings)
        _router = router
    return _router


def reset() -> None:
    """Forget this environment's router (tests; a fresh config source is read on next use)."""
    global _router, _complete_once
    if _router is not None:
        _router.close()
    _router, _complete_once = None, None


# -- routes --------------------------------------------------------------------------------------


@app.post("/v1/chat/completions")
@tracer.capture_method
def chat_completions() -> Response[str]:
    """Route and answer one chat completion for the caller's tier."""
    event = app.current_event
    router = get_router()
    snapshot = router.current()
    identity = event.request_context.identity
    tenant = snapshot.engine.authenticate_key_id(identity.api_key_id, identity.api_key)
    body = _body_text(event.body, bool(event.is_base64_encoded), snapshot.engine.config.server.max_body_bytes)
    call = {
        "tenant": tenant.name,
        "tier": tenant.tier,
        "key": event.headers.get(IDEMPOTENCY_HEADER),
        "body": body,
        "body_sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
    }
    # Only calls that carry an Idempotency-Key go through the idempotency store.
    if call["key"] and _idempotency_config is not None:
        _idempotency_config.register_lambda_context(app.lambda_context)
    answer: dict[str, Any] = (_complete_once if call["key"] else _complete_payload)(call=call)
    return Response(answer["status"], answer["content_type"], answer["body"], answer["headers"])


def _complete_payload(call: dict[str, Any]) -> dict[str, Any]:
    """Answer a validated call; the result is JSON-ready so that idempotency can store it."""
    router = get_router()
    snapshot = router.current()
    router.run(router.close_retired())
    tenant = Tenant(call["tenant"], call["tier"])
    chat = parse_chat_request(call["body"])
    tracer.put_annotation(key="tier", value=tenant.tier)
    if chat.stream:
        body, route = router.run(_collect_stream(snapshot, chat, tenant))
        headers = {**route_headers(route), "Cache-Control": "no-cache"}
        return {"status": 200, "content_type": "text/event-stream", "body": body, "headers": headers}
    response = router.run(snapshot.engine.complete(chat, tenant))
    assert response.route is not None
    tracer.put_annotation(key="target", value=response.route.target)
    return {
        "status": 200,
        "content_type": JSON,
        "body": json.dumps(dump(response), separators=(",", ":")),
        "headers": route_headers(response.route),
    }


async def _collect_stream(
    snapshot: Snapshot, chat: ChatCompletionRequest, tenant: Tenant
) -> tuple[str, RouteInfo]:
    routed = await snapshot.engine.stream(chat, tenant)
    events: list[str] = []
    try:
        async for chunk in routed.chunks:
            events.append(f"data: {json.dumps(dump(chunk), separators=(',', ':'))}\n\n")
    except RouterError as exc:  # after the first chunk: reported in-band, as the streaming app does
        events.append(f"data: {json.dumps(error_body(exc))}\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events), routed.route


@app.get("/v1/models")
def list_models() -> Response[str]:
    """The one model id this router serves."""
    config = get_router().current().engine.config
    body = ModelList(data=[ModelCard(id=config.served_model_name)])
    return Response(200, JSON, json.dumps(dump(body)))


@app.get("/health")
def health() -> Response[str]:
    """200 while some backend can answer, with each backend's state; 503 when none can."""
    engine = get_router().current().engine
    edge, cloud = engine.health("edge"), engine.health("cloud")
    available = edge.available or cloud.available
    status = "ok" if edge.available and cloud.available else "degraded"
    body = {
        "status": status if available else "unavailable",
        "estimator": f"{engine.estimator.name}@{engine.estimator.version}",
        "edge": {"available": edge.available, "busy": edge.busy, "detail": edge.detail},
        "cloud": {"available": cloud.available, "detail": cloud.detail},
    }
    return Response(200 if available else 503, JSON, json.dumps(body))


# -- errors --------------------------------------------------------------------------------------


def router_error(exc: RouterError) -> Response[str]:
    """Every `RouterError` as an OpenAI error object with its status."""
    if exc.status_code >= 500:
        logger.warning("request failed", extra={"code": exc.code, "detail": exc.message})
    return Response(exc.status_code, JSON, json.dumps(error_body(exc)))


@app.not_found
def not_found(exc: Exception) -> Response[str]:
    """Unknown paths and methods, as OpenAI error objects."""
    event = app.current_event
    return _error(404, f"{event.http_method} {event.path}: Not Found", "not_found_error", "404")


def unexpected_error(exc: Exception) -> Response[str]:
    """Anything else: logged with its trace, answered without one."""
    logger.exception("unexpected error")
    message = "The router hit an internal error; it has been logged."
    return _error(500, message, "server_error", "internal_error")


# powertools' `exception_handler` decorator is untyped: register without it.
app.exception_handler(RouterError)(router_error)
app.exception_handler(Exception)(unexpected_error)


def _error(status: int, message: str, error_type: str, code: str) -> Response[str]:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return Response(status, JSON, json.dumps(body))


# -- the handler ---------------------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: API Gateway REST proxy event in, proxy response out."""
    result = app.resolve(event, context)
    status = int(result.get("statusCode", 500))
    # One per invocation, so that every invocation (health checks included) has its metrics record.
    metrics.add_dimension(name="status_class", value=f"{status // 100}xx")
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    return result


# -- helpers -------------------------------------------------------------------------------------


def _body_text(body: str | None, is_base64: bool, limit: int) -> str:
    raw = (body or "").encode("utf-8")
    if is_base64:
        try:
            raw = base64.b64decode(raw, validate=True)
        except ValueError:
            raise RequestError("The request body is not valid base64.") from None
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request body of {len(raw)} bytes is over the limit of {limit} bytes.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("The request body is not valid UTF-8.") from None


def _idempotent(func: Any, settings: LambdaSettings) -> Any:
    """`func`, made idempotent on (tenant, Idempotency-Key) when a DynamoDB table is configured.

    A call without the header is not made idempotent; a repeated key with a different body is
    refused by powertools (the body's sha256 is validated).
    """
    global _idempotency_config
    table = settings.idempotency_table
    if not table:
        return func
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    def key_reused(exc: Exception) -> Response[str]:
        message = "This Idempotency-Key was used with a different request body."
        return _error(400, message, "invalid_request_error", "idempotency_key_reused")

    def in_progress(exc: Exception) -> Response[str]:
        message = "A request with this Idempotency-Key is still in progress; retry later."
        return _error(409, message, "invalid_request_error", "idempotency_in_progress")

    app.exception_handler(IdempotencyValidationError)(key_reused)
    app.exception_handler(IdempotencyAlreadyInProgressError)(in_progress)

    _idempotency_config = IdempotencyConfig(
        event_key_jmespath="[tenant, key]",
        payload_validation_jmespath="body_sha256",
        raise_on_no_idempotency_key=False,
        expires_after_seconds=settings.idempotency_ttl_s,
    )
    return idempotent_function(
        data_keyword_argument="call",
        persistence_store=DynamoDBPersistenceLayer(table_name=table),
        config=_idempotency_config,
    )(func)


if _settings.initialization_type:
    # In Lambda, pay for the config, the estimator and the model in the init phase (full CPU), once.
    try:
        get_router()
    except Exception:  # the first invocation retries and answers with the error object
        logger.exception("init failed; retrying on the first invocation")
