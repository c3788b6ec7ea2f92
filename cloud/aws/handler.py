"""The buffered Lambda handler behind the API Gateway REST API (powertools event handler).

It mounts `hyrouter.cloud.routes`, the routes the local server and the Function URL serve, with the same
bodies, headers and errors; a `stream: true` chat completion is answered as one SSE body (true
streaming is the Function URL's: see `hyrouter.cloud.aws.stream`). The REST API in `template.yaml` exposes
`POST /v1/chat/completions`, `POST /v1/feedback`, `GET /v1/models`, `GET /health` and
`GET /v1/edge/config`. With `HYBRID_ROUTER_OUTCOMES_TABLE` set, outcome records go to that DynamoDB
table (`hyrouter.cloud.aws.outcomes`).

The caller's tier comes from the API Gateway key that made the call (`requestContext.identity`),
mapped through the config's `api_key_ids` (or `api_keys` by sha256), never from the request body;
an event without a key (a direct invoke) is read as the local server reads it: `Authorization: Bearer`.
Set `HYBRID_ROUTER_IDEMPOTENCY_TABLE` to a DynamoDB table and a retried chat completion that repeats
its `Idempotency-Key` header gets the first answer.

The invocation's outcome record is written before the handler returns (`LambdaEnvironment.flush_outcomes`),
and then, where tiers sample edge answers for shadow judging, the sampled ones are sent to the judge
function (`LambdaEnvironment.send_shadow_jobs`: one asynchronous invoke each, see
`hyrouter.cloud.aws.shadow`).

Each invocation is served as one request id: the caller's `X-Request-Id` when sane, else API
Gateway's request id (`requestContext.requestId`), else a new one. It is in the `x-request-id`
response header, in every error object (`error.request_id`) and, appended to the powertools Logger,
in every log line of the invocation (the core's too).
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyrouter.cloud import routes
from hyrouter.cloud.aws.cache import shared_cache_store
from hyrouter.cloud.aws.config import ConfigSource
from hyrouter.cloud.aws.runtime import LambdaEnvironment, lambda_engine
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.aws.telemetry import metrics_namespace, route_core_logs, service_name
from hyrouter.cloud.engines import EngineFactory
from hyrouter.router import (
    REQUEST_ID_HEADER,
    RequestError,
    RouterError,
    RoutingEngine,
    Tenant,
    request_id_scope,
    sane_request_id,
)

ENV_IDEMPOTENCY_TABLE = LambdaSettings.env_name("idempotency_table")
IDEMPOTENCY_HEADER = "idempotency-key"

_settings = LambdaSettings.from_env()  # at import: what the Lambda runtime and powertools set
logger = Logger(service=service_name(_settings))
tracer = Tracer(service=service_name(_settings))
metrics = Metrics(namespace=metrics_namespace(_settings), service=service_name(_settings))
app = APIGatewayRestResolver()

#: How this environment builds its engine (tests put fake backends here).
engine_factory: EngineFactory = lambda_engine
#: The boto3 Lambda client that invokes the judge function (tests put a fake here); None: made on first use.
lambda_client: Any = None
_environment: LambdaEnvironment | None = None
_complete_once: Any = None
_idempotency_config: Any = None


def get_environment() -> LambdaEnvironment:
    """This environment's `LambdaEnvironment`, made on first use (at init when running in Lambda)."""
    global _environment, _complete_once
    if _environment is None:
        started = time.perf_counter()
        route_core_logs(logger)
        settings = LambdaSettings.from_env()
        environment = LambdaEnvironment(
            ConfigSource.from_settings(settings),
            engine_factory=engine_factory,
            shared_cache=shared_cache_store(settings),
            settings=settings,
            lambda_client=lambda_client,
        )
        environment.current()  # fetch the config, load the estimator and the edge model: fail at init
        environment.init_ms["total_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        logger.info({"event": "router_ready", "source": str(environment.source), **environment.init_ms})
        _complete_once = _idempotent(_complete_payload, settings)
        _environment = environment
    return _environment


def reset() -> None:
    """Forget this environment's `LambdaEnvironment` (tests; a fresh config source is read on next use)."""
    global _environment, _complete_once
    if _environment is not None:
        _environment.close()
    _environment, _complete_once = None, None


# -- routes --------------------------------------------------------------------------------------


def _mount(route: routes.Route) -> None:
    def endpoint() -> Response[str]:
        environment = get_environment()
        engine = environment.current().engine
        return _lambda_response(environment.run(_answer(route, _request(), engine)))

    endpoint.__name__ = endpoint.__qualname__ = route.handler.__name__
    endpoint.__doc__ = route.handler.__doc__
    app.route(route.path, route.method)(endpoint)


async def _answer(
    route: routes.Route, request: routes.HttpRequest, engine: RoutingEngine
) -> routes.HttpResponse:
    return await routes.buffered(await routes.respond(route, request, engine))


@app.post(routes.CHAT_COMPLETIONS)
@tracer.capture_method
def chat_completions() -> Response[str]:
    """`hyrouter.cloud.routes.chat_completions`, through the idempotency store when the call has a key."""
    environment = get_environment()
    engine = environment.current().engine
    request = _request()
    tenant = routes.authenticate(request, engine)
    body = environment.run(routes.read_body(request, engine.config.server.max_body_bytes))
    call = {
        "tenant": tenant.name,
        "tier": tenant.tier,
        "key": request.headers.get(IDEMPOTENCY_HEADER),
        "body": base64.b64encode(body).decode("ascii"),  # JSON-ready, whatever the bytes
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    # Only calls that carry an Idempotency-Key go through the idempotency store.
    if call["key"] and _idempotency_config is not None:
        _idempotency_config.register_lambda_context(app.lambda_context)
    answer: dict[str, Any] = (_complete_once if call["key"] else _complete_payload)(call=call)
    return Response(answer["status"], answer["content_type"], answer["body"], answer["headers"])


def _complete_payload(call: dict[str, Any]) -> dict[str, Any]:
    """Answer a validated call; the result is JSON-ready so that idempotency can store it.

    A `RouterError` propagates (it is not stored: a retry runs again) and becomes its error object.
    """
    environment = get_environment()
    engine = environment.current().engine
    environment.run(environment.close_retired())
    tenant = Tenant(call["tenant"], call["tier"])
    tracer.put_annotation(key="tier", value=tenant.tier)
    answer = environment.run(_answer_chat(engine, tenant, base64.b64decode(call["body"])))
    if "x-route-target" in answer.headers:
        tracer.put_annotation(key="target", value=answer.headers["x-route-target"])
    headers = dict(answer.headers)
    content_type = headers.pop("content-type")
    return {
        "status": answer.status,
        "content_type": content_type,
        "body": answer.body.decode(),
        "headers": headers,
    }


async def _answer_chat(engine: RoutingEngine, tenant: Tenant, body: bytes) -> routes.HttpResponse:
    return await routes.buffered(await routes.answer_chat(engine, tenant, body))


for _route in routes.ROUTES:
    if _route.path != routes.CHAT_COMPLETIONS:  # mounted above, with idempotency
        _mount(_route)


def _request() -> routes.HttpRequest:
    """This invocation's request, as `hyrouter.cloud.routes` takes it."""
    event = app.current_event
    identity = event.request_context.identity
    return routes.HttpRequest(
        method=event.http_method,
        path=event.path,
        headers={name.lower(): value for name, value in (event.headers or {}).items()},
        body=_body_bytes(event.body, bool(event.is_base64_encoded)),
        api_key_id=identity.api_key_id,
        api_key=identity.api_key,
    )


def _body_bytes(body: str | None, is_base64: bool) -> bytes:
    raw = (body or "").encode("utf-8")
    if not is_base64:
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise RequestError("The request body is not valid base64.") from None


def _lambda_response(answer: routes.HttpResponse) -> Response[str]:
    headers = dict(answer.headers)
    content_type = headers.pop("content-type", None)  # powertools sends it as `Content-Type`
    return Response(answer.status, content_type, answer.body.decode(), headers)


# -- errors --------------------------------------------------------------------------------------


def router_error(exc: RouterError) -> Response[str]:
    """Every `RouterError` as an OpenAI error object with its status."""
    return _lambda_response(routes.error_response(exc))


@app.not_found
def not_found(exc: Exception) -> Response[str]:
    """Unknown paths (404) and methods (405), as OpenAI error objects."""
    event = app.current_event
    return _lambda_response(routes.unrouted(event.http_method, event.path))


def unexpected_error(exc: Exception) -> Response[str]:
    """Anything else: logged with its trace, answered without one."""
    logger.exception("unexpected error")
    return _lambda_response(routes.internal_error())


# powertools' `exception_handler` decorator is untyped: register without it.
app.exception_handler(RouterError)(router_error)
app.exception_handler(Exception)(unexpected_error)


# -- the handler ---------------------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: API Gateway REST proxy event in, proxy response out."""
    request_id = event_request_id(event)
    logger.append_keys(request_id=request_id)
    with request_id_scope(request_id):
        result = app.resolve(event, context)
    if _environment is not None:  # before the response leaves: Lambda freezes the environment then
        _environment.flush_outcomes()
        _environment.send_shadow_jobs()  # after the records: a verdict joins a written record
    _add_header(result, REQUEST_ID_HEADER, request_id)
    status = int(result.get("statusCode", 500))
    # One per invocation, so that every invocation (health checks included) has its metrics record.
    metrics.add_dimension(name="status_class", value=f"{status // 100}xx")
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    return result


def event_request_id(event: dict[str, Any]) -> str:
    """The invocation's request id: a sane `X-Request-Id`, else API Gateway's request id, else a new one."""
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    gateway_id = (event.get("requestContext") or {}).get("requestId")
    return sane_request_id(
        headers.get(REQUEST_ID_HEADER), gateway_id if isinstance(gateway_id, str) else None
    )


def _add_header(result: dict[str, Any], name: str, value: str) -> None:
    """Set `name` in a proxy response, replacing any other spelling of it (powertools fills both maps)."""
    for key in ("headers", "multiValueHeaders"):
        headers = result.get(key)
        if isinstance(headers, dict):
            for other in [k for k in headers if k.lower() == name]:
                del headers[other]
            headers[name] = [value] if key == "multiValueHeaders" else value
    if "multiValueHeaders" not in result and "headers" not in result:
        result["headers"] = {name: value}


# -- idempotency ---------------------------------------------------------------------------------


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
        return _lambda_response(
            routes.error_object(400, message, "invalid_request_error", "idempotency_key_reused")
        )

    def in_progress(exc: Exception) -> Response[str]:
        message = "A request with this Idempotency-Key is still in progress; retry later."
        return _lambda_response(
            routes.error_object(409, message, "invalid_request_error", "idempotency_in_progress")
        )

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
        get_environment()
    except Exception:  # the first invocation retries and answers with the error object
        logger.exception("init failed; retrying on the first invocation")
