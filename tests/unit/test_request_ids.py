"""The request id: taken or made at each door, on every answer, in every error object and log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud.aws import handler as lambda_handler
from hyrouter.router import RequestIdFilter, current_request_id, request_id_scope, sane_request_id
from tests.unit import test_app as app_tests
from tests.unit import test_lambda_handler as lambda_tests
from tests.unit.test_lambda_handler import load_event

# The app with fake backends (tests.unit.test_app); the Lambda handler's fixtures (moto SSM, its log).
client = app_tests.client
ssm, log_lines, invoke = lambda_tests.ssm, lambda_tests.log_lines, lambda_tests.invoke

FREE = {"authorization": "Bearer k-free"}
HEX32 = r"[0-9a-f]{32}"


@pytest.mark.parametrize(
    "sent", ["abc", "req-2026/11:29_x.y", "A" * 128, "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"]
)
def test_a_sane_id_is_taken_as_sent(sent: str) -> None:
    assert sane_request_id(sent) == sent


@pytest.mark.parametrize("sent", [None, "", "A" * 129, "two words", "line\nbreak", "tab\t", "é", "\x7f"])
def test_anything_else_is_replaced_by_a_new_uuid_hex(sent: str | None) -> None:
    made = sane_request_id(sent)
    assert made != sent and len(made) == 32 and int(made, 16) >= 0
    assert sane_request_id(sent, "gateway-id") == "gateway-id"  # the next candidate comes first


def test_the_log_filter_gives_every_record_the_current_id() -> None:
    record = logging.LogRecord("hybrid_router", logging.INFO, __file__, 1, "x", None, None)
    RequestIdFilter().filter(record)
    assert record.request_id == "-"
    with request_id_scope("req-1"):
        assert current_request_id() == "req-1"
        inside = logging.LogRecord("hybrid_router", logging.INFO, __file__, 1, "x", None, None)
        RequestIdFilter().filter(inside)
    assert inside.request_id == "req-1" and current_request_id() is None


# -- the local app -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        pytest.param("POST", "/v1/chat/completions", FREE, app_tests.BODY, 200, id="chat"),
        pytest.param("POST", "/v1/chat/completions", {}, app_tests.BODY, 401, id="no-key"),
        pytest.param("POST", "/v1/chat/completions", FREE, {"model": "x"}, 400, id="bad-request"),
        pytest.param(
            "POST",
            "/v1/chat/completions",
            {**FREE, "content-length": "99999999"},
            app_tests.BODY,
            413,
            id="too-large",
        ),
        pytest.param("GET", "/v1/nothing", {}, None, 404, id="unknown-path"),
        pytest.param("DELETE", "/v1/models", {}, None, 405, id="wrong-method"),
        pytest.param("GET", "/metrics", {}, None, 401, id="metrics-no-key"),
        pytest.param("GET", "/health", {}, None, 200, id="health"),
    ],
)
def test_every_answer_of_the_app_carries_the_callers_id(
    client: TestClient, method: str, path: str, headers: dict[str, str], body: Any, status: int
) -> None:
    sent = {**headers, "x-request-id": "caller-id-42"}
    r = client.request(method, path, headers=sent, json=body)
    assert r.status_code == status
    assert r.headers["x-request-id"] == "caller-id-42"
    if status >= 400:
        assert r.json()["error"]["request_id"] == "caller-id-42"


def test_the_app_makes_an_id_when_none_or_a_bad_one_is_sent(client: TestClient) -> None:
    made = client.get("/v1/models", headers=FREE).headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    forged = client.get("/v1/nope", headers={"x-request-id": "x" * 129})
    assert forged.headers["x-request-id"] != "x" * 129 and len(forged.headers["x-request-id"]) == 32
    assert forged.json()["error"]["request_id"] == forged.headers["x-request-id"]
    assert client.get("/health").headers["x-request-id"] != made  # one per request


def test_a_streamed_answer_and_its_in_band_error_carry_the_id(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={**app_tests.BODY, "stream": True},
        headers={"authorization": "Bearer k-prem", "x-request-id": "stream-7"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "stream-7"
    error = json.loads([line for line in r.text.splitlines() if line.startswith("data: {")][-1][6:])["error"]
    assert error["request_id"] == "stream-7" and "Request id: stream-7" in error["message"]


def test_a_500_carries_the_id(client: TestClient) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]

    def explode(*args: object) -> float:
        raise ZeroDivisionError("boom")

    engine.authenticate = explode
    r = client.post("/v1/chat/completions", json=app_tests.BODY, headers={**FREE, "x-request-id": "r500"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "r500"
    assert r.json()["error"]["request_id"] == "r500"


@pytest.fixture
def core_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the `hybrid_router` loggers, through a handler with the request id filter."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.emit = records.append  # type: ignore[method-assign]
    core = logging.getLogger("hybrid_router")
    old_level = core.level
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    yield records
    core.removeHandler(handler)
    core.setLevel(old_level)


def test_every_log_line_of_a_request_carries_its_id(client: TestClient, core_records: list[Any]) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={**app_tests.BODY, "stream": True},
        headers={"authorization": "Bearer k-prem", "x-request-id": "logged-1"},
    )
    assert r.status_code == 200
    served = [record for record in core_records if record.request_id == "logged-1"]
    decisions = [rec for rec in served if isinstance(rec.msg, dict) and rec.msg["event"] == "route_decision"]
    assert len(decisions) == 1 and decisions[0].msg["request_id"] == "logged-1"
    assert any("failed" in record.getMessage() for record in served)  # the 5xx's full message, logged
    assert all(record.request_id in ("logged-1", "-") for record in core_records)


# -- the Lambda handler --------------------------------------------------------------------------


def header(result: dict[str, Any], name: str) -> str:
    values: list[str] = {k.lower(): v for k, v in result["multiValueHeaders"].items()}[name]
    assert len(values) == 1
    return values[0]


def test_lambda_takes_the_callers_id_and_logs_it(invoke: Any, log_lines: io.StringIO) -> None:
    event = load_event("chat_completions.json")
    event["headers"]["X-Request-Id"] = "lambda-caller-1"
    result = invoke(event)
    assert result["statusCode"] == 200 and header(result, "x-request-id") == "lambda-caller-1"
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    decision = next(r for r in lines if isinstance(r.get("message"), dict) and "target" in r["message"])
    assert decision["request_id"] == decision["message"]["request_id"] == "lambda-caller-1"


def test_lambda_falls_back_on_the_gateway_request_id(invoke: Any) -> None:
    event = load_event("models.json")
    event["requestContext"]["identity"].update(apiKeyId=None, apiKey=None)  # no key: a 401 error object
    event["headers"]["x-request-id"] = "bad id with spaces"
    result = invoke(event)
    gateway = event["requestContext"]["requestId"]
    assert result["statusCode"] == 401 and header(result, "x-request-id") == gateway
    assert json.loads(result["body"])["error"]["request_id"] == gateway
    assert lambda_handler.event_request_id({"headers": None}) != lambda_handler.event_request_id({})
