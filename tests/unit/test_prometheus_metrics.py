"""`/metrics` in Prometheus' text format: a registry per app, parsed with prometheus_client's parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from hyrouter.cloud.prometheus import PrometheusMetrics
from hyrouter.router import HeuristicEstimator, RoutingEngine
from tests.fakes import FakeBackend
from tests.unit import test_app as app_tests
from tests.unit.test_decision_log import outcome

client = app_tests.client
ADMIN = {"authorization": "Bearer k-admin"}
FREE = {"authorization": "Bearer k-free"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and labels (parsed by prometheus_client)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def engine() -> RoutingEngine:
    return RoutingEngine(
        app_tests.CONFIG,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
    )


def test_prometheus_counts_decisions_fallbacks_cost_and_latency() -> None:
    metrics = PrometheusMetrics(engine())
    metrics.record(outcome())
    metrics.record(outcome("edge", fallback=True, error_code="cloud_error"))
    metrics.record(outcome("edge"))
    got = samples(metrics.exposition().decode())
    reason = ("reason", "score_above_threshold")
    assert got[("hybrid_router_requests_total", (reason, ("target", "cloud"), ("tier", "free")))] == 1
    assert got[("hybrid_router_requests_total", (reason, ("target", "edge"), ("tier", "free")))] == 2
    assert got[("hybrid_router_fallbacks_total", (("target", "edge"), ("tier", "free")))] == 1
    assert got[("hybrid_router_errors_total", (("code", "cloud_error"),))] == 1
    assert got[("hybrid_router_cloud_share", ())] == pytest.approx(1 / 3)
    assert got[("hybrid_router_cost_usd_total", (("tier", "free"),))] == pytest.approx(0.0003)
    assert got[("hybrid_router_tokens_total", (("kind", "prompt"), ("target", "edge")))] == 24
    assert got[("hybrid_router_upstream_latency_seconds_count", (("target", "cloud"),))] == 1
    assert got[("hybrid_router_upstream_latency_seconds_bucket", (("le", "0.5"), ("target", "cloud")))] == 1
    assert got[("hybrid_router_upstream_latency_seconds_bucket", (("le", "0.25"), ("target", "cloud")))] == 0
    assert got[("hybrid_router_edge_queue_depth", ())] == 0
    assert got[("hybrid_router_cloud_breaker_state", ())] == 0
    assert got[("hybrid_router_backend_available", (("target", "edge"),))] == 1


def test_each_app_has_a_registry_of_its_own() -> None:
    first, second = PrometheusMetrics(engine()), PrometheusMetrics(engine())  # the global one would refuse
    first.record(outcome())
    assert samples(second.exposition().decode()).get(("hybrid_router_cloud_share", ())) == 0


def test_metrics_are_prometheus_text_by_default_and_json_on_request(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", json=app_tests.BODY, headers=FREE).status_code == 200
    assert client.get("/metrics").status_code == 401  # still an operator's
    scraped = client.get("/metrics", headers={**ADMIN, "accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=")
    got = samples(scraped.text)
    key = (("reason", "score_below_threshold"), ("target", "edge"), ("tier", "free"))
    assert got[("hybrid_router_requests_total", key)] == 1
    as_json = client.get("/metrics", headers=ADMIN, params={"format": "json"}).json()
    assert as_json["decisions"] == [
        {"target": "edge", "tier": "free", "reason": "score_below_threshold", "count": 1}
    ]
    assert client.get("/metrics", headers={**ADMIN, "accept": "application/json"}).json() == as_json
