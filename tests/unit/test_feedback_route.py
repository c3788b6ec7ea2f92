"""`POST /v1/feedback` through the local app: the caller rates its own answers, and only its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud.app import create_app
from hyrouter.router import (
    HeuristicEstimator,
    OutcomeWriter,
    RouterConfig,
    RoutingEngine,
    hash_api_key,
    parse_config,
)
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.fakes import FakeBackend

ACME = {"authorization": "Bearer k-acme"}
GLOBEX = {"authorization": "Bearer k-globex"}
CHAT = {"model": "hybrid-router", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def config(path: Path) -> dict[str, Any]:
    return {
        "tiers": {"free": {}},
        "api_keys": [
            {"sha256": hash_api_key("k-acme"), "tenant": "acme", "tier": "free"},
            {"sha256": hash_api_key("k-globex"), "tenant": "globex", "tier": "free"},
        ],
        "admin_keys": [{"sha256": hash_api_key("k-admin")}],
        "outcomes": {"store": "sqlite", "path": str(path)},
    }


def app_client(data: dict[str, Any], *, outcomes: bool) -> TestClient:
    async def factory(config: RouterConfig) -> RoutingEngine:
        writer = OutcomeWriter(SqliteOutcomeStore(config.outcomes.path)) if outcomes else None
        return RoutingEngine(
            config,
            estimator=HeuristicEstimator(),
            edge=FakeBackend("edge", reply="Paris"),
            cloud=FakeBackend("cloud"),
            outcomes=writer,
        )

    return TestClient(create_app(parse_config(data), engine_factory=factory), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(config(tmp_path / "o.sqlite3"), outcomes=True) as c:
        yield c


def answer_id(client: TestClient) -> str:
    r = client.post("/v1/chat/completions", headers=ACME, json=CHAT)
    assert r.status_code == 200
    completion_id: str = r.json()["id"]
    return completion_id


def test_the_caller_rates_its_own_answer_and_the_rating_is_in_its_record(
    client: TestClient, tmp_path: Path
) -> None:
    completion_id = answer_id(client)
    r = client.post(
        "/v1/feedback", headers=ACME, json={"id": completion_id, "rating": -1, "comment": "wrong"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"id": completion_id, "object": "feedback", "rating": -1.0}
    record = SqliteOutcomeStore(tmp_path / "o.sqlite3").get(completion_id)
    assert record is not None and (record["rating"], record["comment"]) == (-1.0, "wrong")


def test_another_tenants_id_reads_as_an_unknown_one(client: TestClient) -> None:
    completion_id = answer_id(client)
    theirs = client.post("/v1/feedback", headers=GLOBEX, json={"id": completion_id, "rating": 1})
    unknown = client.post("/v1/feedback", headers=GLOBEX, json={"id": "chatcmpl-nope", "rating": 1})
    assert theirs.status_code == unknown.status_code == 404
    error = theirs.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "outcome_not_found",
        "id",
    )
    assert error["message"] == unknown.json()["error"]["message"].replace("chatcmpl-nope", completion_id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"id": "chatcmpl-x", "rating": 2}, "rating"),
        ({"id": "chatcmpl-x", "rating": -0.5}, "rating"),
        ({"id": "chatcmpl-x", "rating": True}, "rating"),
        ({"id": "chatcmpl-x", "rating": "1"}, "rating"),
        ({"rating": 1}, "id"),
        ({"id": "", "rating": 1}, "id"),
        ({"id": "chatcmpl-x", "rating": 1, "extra": 1}, "extra"),
        ({"id": "chatcmpl-x", "rating": 1, "comment": 5}, "comment"),
    ],
)
def test_a_malformed_rating_is_an_openai_400(client: TestClient, body: dict[str, Any], param: str) -> None:
    r = client.post("/v1/feedback", headers=ACME, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_feedback_needs_a_key(client: TestClient) -> None:
    assert client.post("/v1/feedback", json={"id": "chatcmpl-x", "rating": 1}).status_code == 401


def test_feedback_when_outcome_records_are_off_is_a_404(tmp_path: Path) -> None:
    with app_client(config(tmp_path / "o.sqlite3"), outcomes=False) as c:
        r = c.post("/v1/feedback", headers=ACME, json={"id": answer_id(c), "rating": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "outcome_not_found"


def test_metrics_count_the_records_written_and_dropped(client: TestClient) -> None:
    answer_id(client)
    admin = {"authorization": "Bearer k-admin"}
    counts = client.get("/metrics?format=json", headers=admin).json()["outcomes"]
    assert set(counts) == {"queued", "written", "dropped", "failed"} and counts["dropped"] == 0
    text = client.get("/metrics", headers=admin).text
    assert "hybrid_router_outcomes_dropped_total 0.0" in text
    assert "hybrid_router_outcomes_written_total" in text and "hybrid_router_outcomes_queued" in text


def test_a_reload_that_changes_outcomes_is_refused(tmp_path: Path) -> None:
    from hyrouter.cloud.app import reload_config
    from hyrouter.router import ConfigError

    data = config(tmp_path / "o.sqlite3")
    app = create_app(parse_config(data))
    moved = {**data, "outcomes": {"store": "sqlite", "path": str(tmp_path / "elsewhere.sqlite3")}}
    with pytest.raises(ConfigError, match="outcomes"):
        reload_config(app, parse_config(moved))
