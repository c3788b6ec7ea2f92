"""The Lambda handler with real API Gateway REST events, a LambdaContext stub, moto SSM and fake backends."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.metrics.provider import cold_start
from aws_lambda_powertools.utilities import parameters

from hyrouter.cloud.aws import handler as lambda_handler
from hyrouter.cloud.aws.config import ENV_CONFIG_MAX_AGE, ENV_CONFIG_PARAMETER
from hyrouter.router import HeuristicEstimator, RouterConfig, RoutingEngine, hash_api_key
from tests.fakes import FakeBackend

EVENTS = Path(__file__).parents[1] / "fixtures" / "apigw"
PARAMETER = "/hybrid-router/test/config"
CONFIG: dict[str, Any] = {
    "edge": {"enabled": False},
    "cloud": {"url": None},
    "tiers": {
        "free": {"threshold": 0.7},
        "standard": {"threshold": 0.4},
        "premium": {"cloud": "forced", "fallback_to_edge": False},
    },
    # the standard key has no id entry: it is found by its sha256, as the local server finds keys
    "api_keys": [
        {"sha256": hash_api_key("hr-standard-0123456789abcdef"), "tenant": "std-by-hash", "tier": "standard"}
    ],
    "api_key_ids": {
        "k1free0001": {"tenant": "acme-free", "tier": "free"},
        "k3prem0003": {"tenant": "acme-premium", "tier": "premium"},
    },
    "admin_keys": [{"sha256": hash_api_key("hr-admin-0123456789abcdef"), "note": "operators"}],
}


@dataclass
class LambdaContextStub:
    """What powertools reads from the Lambda context."""

    function_name: str = "hybrid-router-RouterFunction-1A2B3C"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = (
        "arn:aws:lambda:eu-west-1:123456789012:function:hybrid-router-RouterFunction-1A2B3C"
    )
    aws_request_id: str = "6f1c2a3b-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
    log_group_name: str = "/aws/lambda/hybrid-router-RouterFunction-1A2B3C"
    log_stream_name: str = "2025/03/14/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


async def fake_engine(config: RouterConfig) -> RoutingEngine:
    return RoutingEngine(
        config,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge", reply="Paris"),
        cloud=FakeBackend("cloud", reply="one two three"),
    )


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch, fake_aws: None) -> Iterator[Any]:
    """Moto's SSM holding the test config, and the handler reading it from there."""
    monkeypatch.setenv(ENV_CONFIG_PARAMETER, PARAMETER)
    monkeypatch.setenv(ENV_CONFIG_MAX_AGE, "60")
    parameters.clear_caches()
    client = boto3.client("ssm")
    client.put_parameter(Name=PARAMETER, Value=json.dumps(CONFIG), Type="String")
    yield client
    parameters.clear_caches()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the handler's powertools Logger writes (to stdout in Lambda)."""
    handler = lambda_handler.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    yield buffer
    handler.setStream(old)


@pytest.fixture
def invoke(ssm: Any, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Call the handler with a fixture event and a LambdaContext stub; EMF records go to stdout."""
    monkeypatch.setattr(lambda_handler, "engine_factory", fake_engine)
    core = logging.getLogger("hybrid_router")
    saved = (core.handlers[:], core.propagate, core.level)
    cold_start.is_cold_start = True
    lambda_handler.metrics.clear_metrics()

    def call(event: dict[str, Any] | str) -> dict[str, Any]:
        payload = load_event(event) if isinstance(event, str) else event
        result: dict[str, Any] = lambda_handler.handler(payload, LambdaContextStub())
        return result

    try:
        yield call
    finally:
        lambda_handler.reset()
        lambda_handler.metrics.clear_metrics()
        core.handlers, core.propagate = saved[0], saved[1]
        core.setLevel(saved[2])


def header(result: dict[str, Any], name: str) -> str:
    """A response header (the REST API proxy integration answers with `multiValueHeaders`)."""
    values: list[str] = result["multiValueHeaders"][name]
    return values[0]


def stdout_records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def value(record: dict[str, Any], metric: str) -> float:
    """A metric's value in an EMF record (powertools writes a list of values)."""
    found = record[metric]
    return float(found[0] if isinstance(found, list) else found)


def emf(records: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if "_aws" in r and any(m["Name"] == metric for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"])
    ]


def test_chat_completion_tier_from_key_id(invoke: Any) -> None:
    result = invoke("chat_completions.json")
    assert result["statusCode"] == 200
    assert header(result, "x-route-tier") == "free" and header(result, "x-route-target") == "edge"
    assert header(result, "x-route-reason") == "score_below_threshold"
    body = json.loads(result["body"])
    assert body["choices"][0]["message"]["content"] == "Paris"
    assert body["route"]["tier"] == "free" and body["model"] == "edge-model"


def test_key_without_id_entry_is_found_by_hash(invoke: Any) -> None:
    event = load_event("chat_completions.json")
    identity = event["requestContext"]["identity"]
    identity["apiKeyId"], identity["apiKey"] = "unmapped-id", "hr-standard-0123456789abcdef"
    result = invoke(event)
    assert result["statusCode"] == 200 and header(result, "x-route-tier") == "standard"


def test_tier_never_comes_from_the_body(invoke: Any) -> None:
    result = invoke("chat_completions_tier_in_body.json")
    assert result["statusCode"] == 200
    assert header(result, "x-route-tier") == "free"
    assert json.loads(result["body"])["route"]["tier"] == "free"


@pytest.mark.parametrize(
    ("key_id", "key", "message"),
    [("unknown-id", "unknown-key", "not mapped to a tier"), (None, None, "Missing API key")],
)
def test_unknown_or_missing_key_is_401(
    invoke: Any, key_id: str | None, key: str | None, message: str
) -> None:
    event = load_event("chat_completions.json")
    event["requestContext"]["identity"].update(apiKeyId=key_id, apiKey=key)
    result = invoke(event)
    assert result["statusCode"] == 401
    error = json.loads(result["body"])["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert message in error["message"]


GATEWAY_REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"  # the fixtures' requestContext.requestId


def test_bad_json_is_400_error_object(invoke: Any) -> None:
    result = invoke("chat_completions_bad_json.json")
    assert result["statusCode"] == 400
    assert result["multiValueHeaders"]["Content-Type"] == ["application/json"]
    error = json.loads(result["body"])["error"]
    # `param: null` included, as OpenAI sends it; the request id is API Gateway's, in the header too
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["request_id"] == result["multiValueHeaders"]["x-request-id"][0] == GATEWAY_REQUEST_ID
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "hybrid-router", "messages": []}, 400, "invalid_request", "messages"),
        (
            {"model": "hybrid-router", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "invalid_request",
            None,
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model_not_found",
            "model",
        ),
        ([1, 2], 400, "invalid_request", None),
    ],
)
def test_bad_requests_are_error_objects(
    invoke: Any, body: Any, status: int, code: str, param: str | None
) -> None:
    event = load_event("chat_completions.json")
    event["body"] = json.dumps(body)
    result = invoke(event)
    assert result["statusCode"] == status
    error = json.loads(result["body"])["error"]
    assert error["code"] == code
    if param:
        assert error["param"] == param


def test_body_over_the_limit_is_413(invoke: Any) -> None:
    event = load_event("chat_completions.json")
    event["body"] = json.dumps(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    )
    result = invoke(event)
    assert result["statusCode"] == 413
    assert json.loads(result["body"])["error"]["code"] == "request_too_large"


def test_unknown_route_is_404_error_object(invoke: Any) -> None:
    event = load_event("models.json")
    event["path"] = event["resource"] = "/v1/embeddings"
    result = invoke(event)
    assert result["statusCode"] == 404
    assert json.loads(result["body"])["error"]["type"] == "not_found_error"


def test_models_and_health(invoke: Any) -> None:
    models = invoke("models.json")
    assert models["statusCode"] == 200
    assert json.loads(models["body"])["data"][0]["id"] == "hybrid-router"
    health = invoke("health.json")
    assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "ok"


def test_stream_request_is_answered_as_one_sse_body(invoke: Any) -> None:
    result = invoke("chat_completions_stream.json")
    assert result["statusCode"] == 200
    assert header(result, "x-route-target") == "cloud" and header(result, "x-route-tier") == "premium"
    assert result["multiValueHeaders"]["Content-Type"] == ["text/event-stream"]
    events = [line for line in result["body"].splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["route"]["target"] == "cloud"
    assert json.loads(events[-2].removeprefix("data: "))["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsure_edge_answer_escalates_with_its_confidence_in_a_header(
    invoke: Any, ssm: Any, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    verified = {
        **CONFIG,
        "tiers": {**CONFIG["tiers"], "free": {"threshold": 0.7, "verify": {"enabled": True}}},
    }
    ssm.put_parameter(Name=PARAMETER, Value=json.dumps(verified), Type="String", Overwrite=True)
    edge = FakeBackend("edge", reply="Lyon is it", logprob=-2.0)  # confidence exp(-2) ~ 0.1353

    async def unsure_edge(config: RouterConfig) -> RoutingEngine:
        cloud = FakeBackend("cloud", reply="Paris")
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=edge, cloud=cloud)

    monkeypatch.setattr(lambda_handler, "engine_factory", unsure_edge)
    event = load_event("chat_completions.json")
    event["body"] = json.dumps({**json.loads(event["body"]), "stream": stream})
    result = invoke(event)
    assert result["statusCode"] == 200
    assert header(result, "x-route-target") == "cloud" and header(result, "x-route-reason") == "edge_unsure"
    assert header(result, "x-route-confidence") == "0.1353"
    assert edge.streamed == 3  # judged on its first max_edge_tokens (64): the whole short answer
    if stream:
        events = [line for line in result["body"].splitlines() if line.startswith("data: ")]
        assert json.loads(events[0].removeprefix("data: "))["route"]["reason"] == "edge_unsure"
    else:
        assert json.loads(result["body"])["choices"][0]["message"]["content"] == "Paris"
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines() if "route_decision" in line]
    (decision,) = [line["message"] for line in lines]
    assert decision["confidence"] == 0.1353 and decision["calibration"] == "uncalibrated-exp-mean-logprob"


def test_emf_metrics_and_cold_start(invoke: Any, capsys: pytest.CaptureFixture[str]) -> None:
    invoke("chat_completions.json")
    invoke("chat_completions.json")
    records = stdout_records(capsys)

    cold = emf(records, "ColdStart")
    assert len(cold) == 1  # the first invocation only
    assert cold[0]["function_name"] == LambdaContextStub.function_name
    assert cold[0]["service"] == "hybrid-router"
    assert cold[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "HybridRouter"

    decisions = emf(records, "Decisions")
    assert len(decisions) == 2
    record = decisions[0]
    spec = record["_aws"]["CloudWatchMetrics"][0]
    assert spec["Namespace"] == "HybridRouter"
    assert ["service", "tier", "target", "reason"] in spec["Dimensions"]
    assert ["service", "tier"] in spec["Dimensions"]
    assert record["tier"] == "free" and record["target"] == "edge"
    assert record["reason"] == "score_below_threshold"
    assert value(record, "Decisions") == 1 and value(record, "CloudDecisions") == 0
    assert value(record, "EdgeDecisions") == 1 and value(record, "Fallbacks") == 0
    assert value(record, "PromptTokens") == 10 and value(record, "CompletionTokens") == 2
    assert value(record, "CostUSD") == 0 and value(record, "CostSavedUSD") > 0  # against always-cloud
    assert value(record, "EstimatorLatency") >= 0 and value(record, "UpstreamLatency") >= 0
    names = {m["Name"]: m["Unit"] for m in spec["Metrics"]}
    assert names["EstimatorLatency"] == "Milliseconds" and names["Decisions"] == "Count"

    invocations = emf(records, "ApiRequests")
    assert len(invocations) == 2 and invocations[0]["status_class"] == "2xx"


def test_one_structured_decision_line_without_prompt_text(invoke: Any, log_lines: io.StringIO) -> None:
    invoke("chat_completions.json")
    out = log_lines.getvalue()
    lines = [json.loads(line) for line in out.splitlines()]
    decisions = [
        r
        for r in lines
        if isinstance(r.get("message"), dict) and r["message"].get("event") == "route_decision"
    ]
    assert len(decisions) == 1
    line = decisions[0]
    assert line["message"]["tier"] == "free" and line["message"]["tenant"] == "acme-free"
    assert line["correlation_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"  # the API Gateway request id
    assert line["function_request_id"] == LambdaContextStub.aws_request_id
    assert "capital of France" not in out


def test_config_change_in_ssm_needs_no_deploy(invoke: Any, ssm: Any) -> None:
    assert header(invoke("chat_completions.json"), "x-route-target") == "edge"
    changed = json.loads(json.dumps(CONFIG))
    changed["tiers"]["free"] = {"cloud": "forced"}
    ssm.put_parameter(Name=PARAMETER, Value=json.dumps(changed), Type="String", Overwrite=True)
    # within max_age the cached copy still serves
    assert header(invoke("chat_completions.json"), "x-route-target") == "edge"
    parameters.clear_caches()  # as when max_age has passed
    result = invoke("chat_completions.json")
    assert header(result, "x-route-target") == "cloud"
    assert header(result, "x-route-reason") == "tier_forces_cloud"


def test_invalid_config_change_keeps_the_last_good_one(invoke: Any, ssm: Any) -> None:
    assert invoke("chat_completions.json")["statusCode"] == 200
    ssm.put_parameter(
        Name=PARAMETER, Value=json.dumps({"tiers": {"free": {"threshold": 7}}}), Type="String", Overwrite=True
    )
    parameters.clear_caches()
    result = invoke("chat_completions.json")
    assert result["statusCode"] == 200 and header(result, "x-route-tier") == "free"


def test_missing_parameter_at_init_is_a_500_error_object(invoke: Any, ssm: Any) -> None:
    ssm.delete_parameter(Name=PARAMETER)
    result = invoke("chat_completions.json")
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["error"]["code"] == "config_error"


def test_real_engine_without_backends(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyrouter.cloud.aws.runtime import lambda_engine

    monkeypatch.setattr(lambda_handler, "engine_factory", lambda_engine)  # edge disabled, no cloud URL
    health = invoke("health.json")
    assert health["statusCode"] == 503 and json.loads(health["body"])["status"] == "unavailable"
    # With no backend at all, the engine says so (not that the request is too long for a window of 0).
    result = invoke("chat_completions.json")
    error = json.loads(result["body"])["error"]
    assert result["statusCode"] == 503 and error["code"] == "no_backend_available"


def test_no_config_source_fails_init_with_a_clear_message_never_the_demo_config(
    invoke: Any, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_CONFIG_PARAMETER)
    result = invoke("health.json")
    assert result["statusCode"] == 500 and json.loads(result["body"])["error"]["code"] == "config_error"
    assert "no tier config: set HYBRID_ROUTER_CONFIG_PARAMETER" in log_lines.getvalue()


def test_idempotency_key_replays_the_first_answer(invoke: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("dynamodb").create_table(
        TableName="idem",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv(lambda_handler.ENV_IDEMPOTENCY_TABLE, "idem")
    calls: list[FakeBackend] = []

    async def counting_engine(config: RouterConfig) -> RoutingEngine:
        engine = await fake_engine(config)
        assert isinstance(engine.edge, FakeBackend)
        calls.append(engine.edge)
        return engine

    monkeypatch.setattr(lambda_handler, "engine_factory", counting_engine)
    event = load_event("chat_completions.json")
    event["headers"]["Idempotency-Key"] = "retry-1"
    first, second = invoke(event), invoke(event)
    assert first["statusCode"] == second["statusCode"] == 200
    assert first["body"] == second["body"]
    assert len(calls[0].calls) == 1  # the retry was answered from DynamoDB, not by the model
    event["body"] = event["body"].replace("France", "Spain")
    reused = invoke(event)  # same key, different body: refused
    assert reused["statusCode"] == 400
    assert json.loads(reused["body"])["error"]["code"] == "idempotency_key_reused"


def test_cold_start_imports_no_web_framework() -> None:
    code = (
        "import sys, hyrouter.cloud.aws.handler; "
        "print(sorted(m for m in sys.modules if m.startswith('starlette')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_a_repeat_is_answered_from_the_fleets_shared_cache_in_a_fresh_environment(
    invoke: Any, ssm: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyrouter.cloud.aws.cache import ENV_CACHE_TABLE

    boto3.client("dynamodb").create_table(
        TableName="cache",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv(ENV_CACHE_TABLE, "cache")
    tiers = {**CONFIG["tiers"], "free": {"threshold": 0.7, "cache": {"exact": True}}}
    ssm.put_parameter(
        Name=PARAMETER, Value=json.dumps({**CONFIG, "tiers": tiers}), Type="String", Overwrite=True
    )
    parameters.clear_caches()
    event = load_event("chat_completions.json")
    event["body"] = json.dumps({**json.loads(event["body"]), "temperature": 0})
    first = invoke(event)
    assert first["statusCode"] == 200 and header(first, "x-route-target") == "edge"
    lambda_handler.reset()  # another execution environment: its own memory, the same table
    second = invoke(event)
    assert second["statusCode"] == 200
    assert (header(second, "x-route-target"), header(second, "x-route-reason")) == ("cache", "cache_hit")
    answer = json.loads(second["body"])
    assert answer["choices"][0]["message"]["content"] == "Paris"
    assert answer["route"]["cost_saved_usd"] > 0
    first_record, hit_record = emf(stdout_records(capsys), "Decisions")
    assert value(first_record, "CacheHits") == 0
    assert value(hit_record, "CacheHits") == 1 and value(hit_record, "CloudDecisions") == 0
    assert hit_record["target"] == "cache" and value(hit_record, "CostSavedUSD") > 0


def test_an_invocations_outcome_record_is_written_before_the_handler_returns(
    invoke: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyrouter.cloud.aws.outcomes import DynamoDbOutcomeStore
    from hyrouter.router import OutcomeWriter

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="outcomes",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    async def recording_engine(config: RouterConfig) -> RoutingEngine:
        engine = await fake_engine(config)
        # A writer that would wait half a minute for more records: Lambda freezes long before.
        writer = OutcomeWriter(DynamoDbOutcomeStore("outcomes"), salt="s", linger_s=30.0)
        return RoutingEngine(
            config, estimator=engine.estimator, edge=engine.edge, cloud=engine.cloud, outcomes=writer
        )

    monkeypatch.setattr(lambda_handler, "engine_factory", recording_engine)
    result = invoke("chat_completions.json")
    assert result["statusCode"] == 200
    answer_id = json.loads(result["body"])["id"]
    # No later invocation, no close: the record is in the table as the invocation ends.
    stored = dynamodb.get_item(TableName="outcomes", Key={"id": {"S": answer_id}}).get("Item")
    assert stored is not None and stored["tenant"] == {"S": "acme-free"}
