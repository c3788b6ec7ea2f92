"""The Function URL app (what the Lambda Web Adapter serves): the local ASGI app on a refreshed config."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from hyrouter.cloud.aws.config import ConfigSource
from hyrouter.cloud.aws.stream import create_stream_app
from hyrouter.router import HeuristicEstimator, RouterConfig, RoutingEngine, hash_api_key
from tests.fakes import FakeBackend

CONFIG: dict[str, Any] = {
    "edge": {"enabled": False},
    "tiers": {"free": {"threshold": 0.7}, "premium": {"cloud": "forced"}},
    "api_keys": [
        {"sha256": hash_api_key("mobile-free"), "tenant": "app", "tier": "free"},
        {"sha256": hash_api_key("mobile-premium"), "tenant": "app-pro", "tier": "premium"},
    ],
}
BODY = {"model": "hybrid-router", "stream": True, "messages": [{"role": "user", "content": "Say hi"}]}


async def fake_engine(config: RouterConfig) -> RoutingEngine:
    return RoutingEngine(
        config,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge", reply="hi from the edge"),
        cloud=FakeBackend("cloud", reply="hi from the cloud"),
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture
def core_logs() -> Iterator[None]:
    """The core logger as it was before the app routed it to powertools."""
    core = logging.getLogger("hybrid_router")
    saved = (core.handlers[:], core.propagate, core.level)
    try:
        yield
    finally:
        core.handlers, core.propagate = saved[0], saved[1]
        core.setLevel(saved[2])


@pytest.fixture
def client(config_file: Path, monkeypatch: pytest.MonkeyPatch, core_logs: None) -> Iterator[TestClient]:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "hybrid-router-StreamFunction-XYZ")
    app = create_stream_app(ConfigSource("file", str(config_file)), engine_factory=fake_engine)
    with TestClient(app) as test_client:
        yield test_client


def events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


def test_streams_sse_with_route_headers(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer mobile-free"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-route-tier"] == "free" and r.headers["x-route-target"] == "edge"
    chunks = events(r.text)
    assert chunks[-1] == "[DONE]"
    assert json.loads(chunks[0])["route"]["target"] == "edge"
    assert (
        "".join(c["delta"].get("content") or "" for e in chunks[:-1] for c in json.loads(e)["choices"])
        == "hifromtheedge"
    )


def test_bearer_key_sets_the_tier_and_bad_key_is_401(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer mobile-premium"})
    assert r.headers["x-route-tier"] == "premium" and r.headers["x-route-target"] == "cloud"
    bad = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"


def test_emf_record_per_streamed_request_and_cold_start(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "hybrid-router-StreamFunction-XYZ")
    core = logging.getLogger("hybrid_router")
    saved = (core.handlers[:], core.propagate, core.level)
    try:
        app = create_stream_app(ConfigSource("file", str(config_file)), engine_factory=fake_engine)
        with TestClient(app) as c:
            c.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer mobile-free"})
    finally:
        core.handlers, core.propagate = saved[0], saved[1]
        core.setLevel(saved[2])
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    names = [m["Name"] for r in records for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names.count("ColdStart") == 1 and names.count("Decisions") == 1
    decision = next(r for r in records if "Decisions" in r)
    assert decision["tier"] == "free" and decision["stream"] is True


def test_config_change_reaches_the_running_app(client: TestClient, config_file: Path) -> None:
    headers = {"authorization": "Bearer mobile-free"}
    assert client.post("/v1/chat/completions", json=BODY, headers=headers).headers["x-route-target"] == "edge"
    changed = json.loads(json.dumps(CONFIG))
    changed["tiers"]["free"] = {"cloud": "forced"}
    config_file.write_text(yaml.safe_dump(changed))  # a file source has no cache: the next call sees it
    r = client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert r.headers["x-route-target"] == "cloud" and r.headers["x-route-reason"] == "tier_forces_cloud"


def test_models_for_the_adapter_readiness_check(client: TestClient) -> None:
    # The adapter counts any status under 500 as ready: without a key the started app answers 401.
    assert client.get("/v1/models").status_code == 401
    r = client.get("/v1/models", headers={"authorization": "Bearer mobile-free"})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "hybrid-router"


def test_a_streamed_answers_outcome_record_is_written_before_its_response_ends(
    config_file: Path, tmp_path: Path, core_logs: None
) -> None:
    from hyrouter.router import OutcomeWriter
    from hyrouter.router._outcome_sqlite import SqliteOutcomeStore

    path = tmp_path / "outcomes.sqlite3"

    async def recording_engine(config: RouterConfig) -> RoutingEngine:
        engine = await fake_engine(config)
        # A writer that would wait half a minute for more records: Lambda freezes long before.
        writer = OutcomeWriter(SqliteOutcomeStore(path), salt="s", linger_s=30.0)
        return RoutingEngine(
            config, estimator=engine.estimator, edge=engine.edge, cloud=engine.cloud, outcomes=writer
        )

    app = create_stream_app(ConfigSource("file", str(config_file)), engine_factory=recording_engine)
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer mobile-free"})
        answer_id = json.loads(events(r.text)[0])["id"]
        reader = SqliteOutcomeStore(path)
        record = reader.get(answer_id)
        reader.close()
        assert record is not None and record["tenant"] == "app" and record["stream"]


def test_a_streamed_edge_answer_sampled_for_shadow_judging_goes_to_the_judge_function_as_it_ends(
    tmp_path: Path, core_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyrouter.cloud.aws.shadow import ENV_JUDGE_FUNCTION
    from hyrouter.cloud.engines import shadow_judge
    from hyrouter.router import CostLedger, OutcomeWriter
    from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
    from hyrouter.router._shadow import ShadowJob

    path = tmp_path / "outcomes.sqlite3"
    shadowed = {
        **CONFIG,
        "tiers": {**CONFIG["tiers"], "free": {"threshold": 0.7, "shadow": {"sample_rate": 1.0}}},
    }
    config_file = tmp_path / "shadowed.yaml"
    config_file.write_text(yaml.safe_dump(shadowed))
    monkeypatch.setenv(ENV_JUDGE_FUNCTION, "judge-fn")

    class Lambda:
        def __init__(self) -> None:
            self.jobs: list[tuple[ShadowJob, bool]] = []

        def invoke(self, **kwargs: Any) -> dict[str, Any]:
            assert (kwargs["FunctionName"], kwargs["InvocationType"]) == ("judge-fn", "Event")
            job = ShadowJob.from_json(json.loads(kwargs["Payload"]))
            reader = SqliteOutcomeStore(path)
            self.jobs.append((job, reader.get(job.completion_id) is not None))
            reader.close()
            return {"StatusCode": 202}

    async def shadowing_engine(config: RouterConfig) -> RoutingEngine:
        edge, cloud = FakeBackend("edge", reply="hi from the edge"), FakeBackend("cloud")
        writer = OutcomeWriter(SqliteOutcomeStore(path), salt="s", linger_s=30.0)
        ledger = CostLedger()
        return RoutingEngine(
            config,
            estimator=HeuristicEstimator(),
            edge=edge,
            cloud=cloud,
            ledger=ledger,
            outcomes=writer,
            shadow=shadow_judge(config, cloud, ledger, writer),
        )

    client = Lambda()
    app = create_stream_app(
        ConfigSource("file", str(config_file)), engine_factory=shadowing_engine, lambda_client=client
    )
    with TestClient(app) as test_client:
        r = test_client.post(
            "/v1/chat/completions", json=BODY, headers={"authorization": "Bearer mobile-free"}
        )
        chunks = [json.loads(e) for e in events(r.text) if e != "[DONE]"]
        sent = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        # Sent before the response ended, after its record was written; no task left running here.
        ((job, record_written),) = client.jobs
        assert (job.completion_id, job.tenant, job.answer, record_written) == (
            chunks[0]["id"],
            "app",
            sent,
            True,
        )
        assert sent
