"""Shadow judging in Lambda: the router handler sends sampled edge answers to the judge function (a fake
boto3 Lambda client captures the Event invoke), and the judge function's handler, given that event,
asks a cloud and a judge (httpx MockTransport) and joins the verdict to the record in moto's DynamoDB."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from aws_lambda_powertools.utilities import parameters

from hyrouter.cloud.aws import handler as lambda_handler
from hyrouter.cloud.aws import judge as judge_function
from hyrouter.cloud.aws.shadow import ENV_JUDGE_FUNCTION, MAX_EVENT_BYTES, JudgeFunctionDispatcher
from hyrouter.cloud.engines import shadow_judge
from hyrouter.router import (
    ChatCompletionRequest,
    CostLedger,
    HeuristicEstimator,
    OutcomeWriter,
    RouterConfig,
    RoutingEngine,
)
from hyrouter.router._shadow import JUDGE_SYSTEM_PROMPT, ShadowJob
from tests.fakes import FakeBackend, outcome_record
from tests.unit.test_lambda_handler import (
    CONFIG,
    PARAMETER,
    LambdaContextStub,
    emf,
    load_event,
    stdout_records,
    value,
)

SHADOWED = {
    **CONFIG,
    "cloud": {"url": "http://gpu.test/v1", "model": "big-model"},
    "tiers": {
        **CONFIG["tiers"],
        "free": {"threshold": 0.7, "shadow": {"sample_rate": 1.0, "budget_usd": 1.0}},
    },
}
FUNCTION = "hybrid-router-JudgeFunction-9Z8Y"


class FakeLambdaClient:
    """Records each Invoke (what boto3's Lambda client is given), and whether the record was in the
    outcomes table at that moment."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        job = json.loads(kwargs["Payload"])
        item = boto3.client("dynamodb").get_item(
            TableName="outcomes", Key={"id": {"S": job["completion_id"]}}
        )
        self.calls.append({**kwargs, "record_written": "Item" in item})
        return {"StatusCode": 202}


def _table(name: str, *keys: str) -> None:
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": k, "KeyType": kind} for k, kind in zip(keys, ("HASH", "RANGE"), strict=False)
        ],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
        BillingMode="PAY_PER_REQUEST",
    )


async def shadowing_engine(config: RouterConfig) -> RoutingEngine:
    """The fake backends, outcome records in DynamoDB, and the shadow judge `cloud.engines` builds."""
    from hyrouter.cloud.aws.outcomes import DynamoDbOutcomeStore

    edge, cloud = FakeBackend("edge", reply="Paris"), FakeBackend("cloud", reply="Paris, of course.")
    writer = OutcomeWriter(DynamoDbOutcomeStore("outcomes"), salt="s")
    ledger = CostLedger()
    shadow = shadow_judge(config, cloud, ledger, writer)
    return RoutingEngine(
        config,
        estimator=HeuristicEstimator(),
        edge=edge,
        cloud=cloud,
        ledger=ledger,
        outcomes=writer,
        shadow=shadow,
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, fake_aws: None) -> Iterator[None]:
    """Moto: the shadowing config in SSM, the outcomes and budget tables; both handlers reset after."""
    from hyrouter.cloud.aws.config import ENV_CONFIG_PARAMETER

    monkeypatch.setenv(ENV_CONFIG_PARAMETER, PARAMETER)
    monkeypatch.setenv("HYBRID_ROUTER_OUTCOMES_TABLE", "outcomes")
    monkeypatch.setenv("HYBRID_ROUTER_BUDGET_TABLE", "budgets")
    parameters.clear_caches()
    boto3.client("ssm").put_parameter(Name=PARAMETER, Value=json.dumps(SHADOWED), Type="String")
    _table("outcomes", "id")
    _table("budgets", "tenant", "period")
    monkeypatch.setattr(lambda_handler, "engine_factory", shadowing_engine)
    core = logging.getLogger("hybrid_router")
    saved = (core.handlers[:], core.propagate, core.level)
    lambda_handler.metrics.clear_metrics()
    try:
        yield
    finally:
        lambda_handler.reset()
        judge_function.reset()
        lambda_handler.metrics.clear_metrics()
        parameters.clear_caches()
        core.handlers, core.propagate = saved[0], saved[1]
        core.setLevel(saved[2])


def upstream(verdict: str) -> httpx.MockTransport:
    """The cloud and the judge behind one URL: the judge's request carries the judge's system prompt."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        judging = body["messages"][0]["content"] == JUDGE_SYSTEM_PROMPT
        text = f"Both are right; A is shorter. {verdict}" if judging else "The capital of France is Paris."
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            },
        )

    return httpx.MockTransport(answer)


def test_a_sampled_edge_answer_goes_to_the_judge_function_and_its_verdict_joins_the_record(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_JUDGE_FUNCTION, FUNCTION)
    client = FakeLambdaClient()
    monkeypatch.setattr(lambda_handler, "lambda_client", client)
    result = lambda_handler.handler(load_event("chat_completions.json"), LambdaContextStub())
    assert result["statusCode"] == 200
    answer = json.loads(result["body"])
    assert answer["route"]["target"] == "edge"
    # One asynchronous invoke, made after the record was written, carrying the job.
    (call,) = client.calls
    assert (call["FunctionName"], call["InvocationType"], call["record_written"]) == (FUNCTION, "Event", True)
    event = json.loads(call["Payload"])
    job = ShadowJob.from_json(event)
    assert (job.completion_id, job.tenant, job.tier, job.answer) == (
        answer["id"],
        "acme-free",
        "free",
        "Paris",
    )
    assert job.request.messages[-1].content == "What is the capital of France?"
    engine = lambda_handler.get_environment().current().engine
    assert engine.shadow is not None and engine.shadow.pending == 0  # no task in the frozen environment
    capsys.readouterr()

    monkeypatch.setattr(judge_function, "transport", upstream("[[A]]"))
    verdict = judge_function.handler(event, LambdaContextStub(function_name="judge"))
    assert verdict == {"completion_id": answer["id"], "tier": "free", "edge_good": True}
    item = boto3.client("dynamodb").get_item(TableName="outcomes", Key={"id": {"S": answer["id"]}})["Item"]
    assert item["judged_good"] == {"BOOL": True} and item["judge"] == {"S": "pairwise:big-model"}
    # The cloud and the judge were paid from the tenant's shadow budget, in the shared table.
    items = boto3.client("dynamodb").scan(TableName="budgets")["Items"]
    shadow = [i for i in items if i["tenant"]["S"] == "acme-free#shadow"]
    assert shadow and all(int(i["spent_nusd"]["N"]) > 0 for i in shadow)
    (record,) = emf(stdout_records(capsys), "ShadowJudged")
    assert record["tier"] == "free"
    assert value(record, "ShadowJudged") == value(record, "ShadowEdgeGood") == 1
    assert value(record, "EdgeGoodRate") == 1.0 and value(record, "ShadowFailed") == 0


def test_the_judge_function_reports_a_cloud_answer_found_better(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyrouter.cloud.aws.outcomes import DynamoDbOutcomeStore

    record = outcome_record("chatcmpl-1", created_at=1.0, tenant="t", score=0.1, features=None)
    DynamoDbOutcomeStore("outcomes").write([record])
    request = ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": "Prove Fermat's last theorem."}]}
    )
    event = ShadowJob("chatcmpl-1", "t", "free", request, "It is true.").to_json()
    monkeypatch.setattr(judge_function, "transport", upstream("[[B]]"))
    assert judge_function.handler(event, LambdaContextStub())["edge_good"] is False
    item = boto3.client("dynamodb").get_item(TableName="outcomes", Key={"id": {"S": "chatcmpl-1"}})["Item"]
    assert item["judged_good"] == {"BOOL": False}
    (record,) = emf(stdout_records(capsys), "ShadowJudged")
    assert value(record, "ShadowEdgeGood") == 0 and value(record, "EdgeGoodRate") == 0.0


def test_without_a_judge_function_shadow_judging_is_off_with_one_warning_and_no_tasks(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_JUDGE_FUNCTION, raising=False)
    handler = lambda_handler.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    lines = io.StringIO()
    old = handler.setStream(lines)
    try:
        for _ in range(3):
            result = lambda_handler.handler(load_event("chat_completions.json"), LambdaContextStub())
            assert result["statusCode"] == 200
    finally:
        handler.setStream(old)
    engine = lambda_handler.get_environment().current().engine
    assert engine.shadow is not None
    assert engine.shadow.pending == 0 and engine.shadow.stats.snapshot() == {}
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert [w["message"] for w in warnings] == [
        f"shadow judging is configured but {ENV_JUDGE_FUNCTION} is not set: it is off"
    ]


def job(text: str = "hi") -> ShadowJob:
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": text}]}
    )
    return ShadowJob("chatcmpl-9", "t", "free", request, "hello")


def test_the_dispatcher_refuses_what_it_cannot_send_and_never_raises() -> None:
    client = FakeLambdaClient(fail=RuntimeError("throttled"))
    dispatcher = JudgeFunctionDispatcher(FUNCTION, client=client, max_jobs=2)
    assert not dispatcher.put(job("x" * MAX_EVENT_BYTES))  # over the asynchronous event limit
    assert dispatcher.put(job()) and dispatcher.put(job())
    assert not dispatcher.put(job())  # more than it holds
    assert dispatcher.flush() == 0  # the API failed: logged and counted, not raised
    assert (dispatcher.failed, dispatcher.sent, dispatcher.held) == (2, 0, 0)


def test_a_tiers_own_judge_is_called_over_plain_https_with_its_key_even_when_the_cloud_is_sagemaker(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SigV4 signing is for the SageMaker endpoint: a judge endpoint is another host, and the role's
    signed credentials must never reach it (nor its URL and key be rewritten)."""
    from hyrouter.cloud.aws.sagemaker import SageMakerTransport

    config = {
        **SHADOWED,
        "tiers": {
            **SHADOWED["tiers"],
            "free": {
                "threshold": 0.7,
                "shadow": {
                    "sample_rate": 1.0,
                    "budget_usd": 1.0,
                    "judge": {
                        "url": "https://judge.test/v1",
                        "model": "judge-model",
                        "api_key_env": "JUDGE_KEY",
                    },
                },
            },
        },
    }
    boto3.client("ssm").put_parameter(Name=PARAMETER, Value=json.dumps(config), Type="String", Overwrite=True)
    parameters.clear_caches()
    monkeypatch.setenv("HYBRID_ROUTER_CLOUD_AUTH", "sagemaker")
    monkeypatch.setenv("JUDGE_KEY", "judge-secret")
    monkeypatch.setattr(judge_function, "transport", None)
    answers = upstream("[[A]]")
    signed: list[httpx.Request] = []
    plain: list[httpx.Request] = []

    async def sagemaker(self: SageMakerTransport, request: httpx.Request) -> httpx.Response:
        signed.append(request)
        return await answers.handle_async_request(request)

    async def https(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        plain.append(request)
        return await answers.handle_async_request(request)

    monkeypatch.setattr(SageMakerTransport, "handle_async_request", sagemaker)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", https)
    request = ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    )
    event = ShadowJob("chatcmpl-9", "t", "free", request, "4").to_json()
    assert judge_function.handler(event, LambdaContextStub())["edge_good"] is True
    assert [r.url.host for r in signed] == ["gpu.test"]  # the cloud's answer, signed
    (judged,) = plain
    assert str(judged.url) == "https://judge.test/v1/chat/completions"
    assert judged.headers["authorization"] == "Bearer judge-secret"
    assert "x-amz-date" not in judged.headers


class _Body:
    """The raw body of a canned botocore response."""

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield b'{"Type": "Service", "message": "Lambda is busy"}'


def test_the_invoke_is_made_once_with_short_timeouts_and_a_failure_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The response waits for the Invoke: a slow Lambda API costs it one connect and one read timeout
    at most, never a retry's backoff and second (third) attempt."""
    from botocore.awsrequest import AWSResponse

    for name, setting in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, setting)
    dispatcher = JudgeFunctionDispatcher(FUNCTION)
    client = dispatcher.client()
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (0.5, 1.0)
    sent: list[Any] = []

    def unavailable(request: Any, **kwargs: Any) -> AWSResponse:
        sent.append(request)  # never on the network: a canned 503, which standard mode would retry
        return AWSResponse(request.url, 503, {"x-amzn-ErrorType": "ServiceException"}, _Body())

    client.meta.events.register("before-send.lambda.Invoke", unavailable)
    assert dispatcher.put(job())
    assert dispatcher.flush() == 0
    assert len(sent) == 1 and (dispatcher.failed, dispatcher.sent) == (1, 0)
