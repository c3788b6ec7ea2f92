"""The learning loop's metrics: Prometheus' shadow and drift gauges after real verdicts and drift
evaluations, and their EMF records in Lambda (`emit_drift`, `emit_shadow`), as stdout carries them."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hyrouter.cloud.aws.telemetry import emit_drift, emit_shadow
from hyrouter.cloud.prometheus import PrometheusMetrics
from hyrouter.router import ChatCompletionRequest, CostLedger, HeuristicEstimator, RoutingEngine, parse_config
from hyrouter.router._drift import DriftObserver, TierDrift
from hyrouter.router._metrics import RequestOutcome
from hyrouter.router._shadow import ShadowJob, ShadowJudge, ShadowRunner
from tests.fakes import FakeBackend
from tests.unit.test_decision_log import outcome

CONFIG = parse_config(
    {
        "tiers": {
            "free": {
                "threshold": 0.5,
                "shadow": {"sample_rate": 1.0, "budget_usd": 1.0},
                "drift": {"target_cloud_share": 0.2},
            }
        }
    }
)


def decided(target: str, score: float) -> RequestOutcome:
    o = outcome(target)
    return replace(o, decision=replace(o.decision, target=target, score=score))  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.anyio
async def test_prometheus_shows_shadow_verdicts_and_the_drift_of_recent_scores() -> None:
    drift = DriftObserver(CONFIG, reference_size=20, window_size=10, every=10)
    cloud = FakeBackend("cloud", reply="Paris is the capital of France.")
    judges = {"free": FakeBackend("cloud", model_id="judge", reply="B is more complete. [[B]]")}
    runner = ShadowRunner(CONFIG, cloud, ledger=CostLedger(), judges=judges, on_verdict=drift.judged)
    shadow = ShadowJudge(CONFIG, runner)
    engine = RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge"),
        cloud=cloud,
        shadow=shadow,
        observers=[drift],
    )
    metrics = PrometheusMetrics(engine)
    before = samples(metrics.exposition().decode())
    assert not [k for k in before if k[0].startswith(("hybrid_router_shadow", "hybrid_router_drift"))]

    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    )
    for i, reply in enumerate(("[[B]]", "[[A]]", "[[C]]", "no verdict")):
        judges["free"].reply = reply
        await runner.run(ShadowJob(f"chatcmpl-{i}", "acme", "free", request, "Hello."))
    # A reference of easy edge requests, then recent ones that are hard and go to the cloud.
    for i in range(20):
        drift.record(decided("edge" if i % 5 else "cloud", 0.1 + 0.01 * i))
    for _ in range(10):
        drift.record(decided("cloud", 0.9))

    got = samples(metrics.exposition().decode())
    free = (("tier", "free"),)
    events = {
        e: got[("hybrid_router_shadow_total", (("event", e), ("tier", "free")))]
        for e in ("judged", "edge_good")
    }
    assert events == {"judged": 3, "edge_good": 2}
    assert got[("hybrid_router_shadow_total", (("event", "unparseable"), ("tier", "free")))] == 1
    assert got[("hybrid_router_shadow_edge_good_rate", free)] == pytest.approx(2 / 3)
    assert got[("hybrid_router_drift_score_psi", free)] > 0.2  # recent scores far from the reference
    assert got[("hybrid_router_drift_score_ks", free)] == 1.0
    assert got[("hybrid_router_drift_cloud_share", free)] == 1.0
    assert got[("hybrid_router_drift_cloud_share_target", free)] == 0.2
    assert got[("hybrid_router_drift_edge_good_rate", free)] == pytest.approx(2 / 3)  # the verdicts
    assert got[("hybrid_router_drift_detected", free)] == 1.0


def emf_records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]


def metric_names(record: dict[str, Any]) -> list[str]:
    return [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]


def test_emit_drift_writes_the_signals_the_alarms_read(capsys: pytest.CaptureFixture[str]) -> None:
    drift = TierDrift(
        tier="standard",
        reference_n=1000,
        recent_n=200,
        score_psi=0.31,
        score_ks=0.25,
        cloud_share=0.2,
        target_cloud_share=0.4,
        confidence_psi=None,
        edge_good_rate=None,
        judged=0,
        reasons=["score PSI 0.310 > 0.2"],
    )
    emit_drift(drift, namespace="HybridRouter", service="hybrid-router-prod")
    (record,) = emf_records(capsys)
    cloudwatch = record["_aws"]["CloudWatchMetrics"][0]
    assert cloudwatch["Namespace"] == "HybridRouter"
    assert ["service", "tier"] in cloudwatch["Dimensions"]  # what the template's alarms name
    assert (record["service"], record["tier"]) == ("hybrid-router-prod", "standard")
    assert metric_names(record) == ["ScorePSI", "ScoreKS", "CloudShare", "CloudShareGap", "DriftDetected"]
    assert record["ScorePSI"] == [0.31] and record["DriftDetected"] == [1.0]
    assert record["CloudShareGap"] == [pytest.approx(0.2)]  # the gap's size, whichever way
    # No verdicts: no EdgeGoodRate (not a 0 the alarm would read as bad answers); NaN is no value.
    emit_drift(replace(drift, score_ks=float("nan"), edge_good_rate=0.75, reasons=[]), service="s")
    (record,) = emf_records(capsys)
    assert "ScoreKS" not in metric_names(record)
    assert record["EdgeGoodRate"] == [0.75] and record["DriftDetected"] == [0.0]


def test_emit_shadow_counts_an_invocations_outcome_and_its_edge_good_rate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "hybrid-router-prod")
    emit_shadow("standard", {"judged": 1, "edge_good": 0})
    emit_shadow("standard", {"skipped_budget": 1})
    judged, skipped = emf_records(capsys)
    assert (judged["service"], judged["tier"]) == ("hybrid-router-prod", "standard")
    assert judged["ShadowJudged"] == [1.0] and judged["ShadowEdgeGood"] == [0.0]
    assert judged["EdgeGoodRate"] == [0.0]
    assert skipped["ShadowSkippedBudget"] == [1.0] and skipped["ShadowJudged"] == [0.0]
    assert "EdgeGoodRate" not in metric_names(skipped)  # no verdict: no rate
