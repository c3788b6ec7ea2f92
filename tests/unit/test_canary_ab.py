"""Canary and A/B: the statistics, the arm assignment, and the real engine recording both into SQLite."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from hyrouter.models.abstats import student_two_sided_p, two_proportions, welch
from hyrouter.models.canary import ab_report, canary_report
from hyrouter.router import (
    ChatCompletionRequest,
    OutcomeWriter,
    RoutingEngine,
    Tenant,
    load_estimator,
    parse_config,
)
from hyrouter.router._ab import in_treatment
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.fakes import FakeBackend


def test_two_proportion_z_of_known_proportions() -> None:
    result = two_proportions(50, 100, 65, 100)
    pooled = 115 / 200
    assert result.statistic == pytest.approx(0.15 / math.sqrt(pooled * (1 - pooled) * 0.02))
    assert result.statistic == pytest.approx(2.1456, abs=1e-4)
    assert result.p_value == pytest.approx(0.0319, abs=1e-4)
    assert result.significant
    assert result.needed_per_arm == 170  # Fleiss, 80% power at 5%, for 0.50 vs 0.65
    assert two_proportions(30, 60, 30, 60).needed_per_arm is None


def test_welch_and_students_t() -> None:
    assert student_two_sided_p(2.228138852, 10) == pytest.approx(0.05, abs=1e-9)
    assert student_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-9)
    result = welch(1.0, 4.0, 50, 2.0, 4.0, 50)
    assert result.statistic == pytest.approx(1.0 / math.sqrt(0.16))
    assert result.needed_per_arm == math.ceil((1.959964 + 0.841621) ** 2 * 8.0)


def test_variant_assignment_is_deterministic_and_near_its_share() -> None:
    keys = [f"req-{i}" for i in range(4000)]
    first = [in_treatment("free", k, 0.2) for k in keys]
    assert first == [in_treatment("free", k, 0.2) for k in keys]
    assert 0.17 < sum(first) / len(keys) < 0.23
    other_tier = [in_treatment("pro", k, 0.2) for k in keys]
    assert other_tier != first  # tests of different tiers are independent


def test_engine_records_candidate_scores_and_arms_into_sqlite(tmp_path: Path) -> None:
    live = load_estimator("static-minilm", "1.1.0")
    candidate = load_estimator("heuristic", "1.0.0")
    config = parse_config(
        {
            "tiers": {
                "free": {"threshold": 0.5, "ab": {"share": 0.5, "threshold": 0.9, "by": "tenant"}},
                "pro": {"threshold": 0.3},
            }
        }
    )
    store = SqliteOutcomeStore(tmp_path / "outcomes.sqlite3")
    writer = OutcomeWriter(store, salt="s", candidate=candidate)
    engine = RoutingEngine(
        config, estimator=live, edge=FakeBackend("edge"), cloud=FakeBackend("cloud"), outcomes=writer
    )
    prompts = ["hi", "Prove step by step that the square root of 2 is irrational and derive it."]
    tenants = [Tenant(f"t{i}", "free") for i in range(12)] + [Tenant("p", "pro")]

    async def run() -> None:
        for tenant in tenants:
            for prompt in prompts:
                request = ChatCompletionRequest.model_validate(
                    {"model": "hybrid-router", "messages": [{"role": "user", "content": prompt}]}
                )
                await engine.complete(request, tenant)
        await engine.aclose()

    asyncio.run(run())
    rows = list(SqliteOutcomeStore(tmp_path / "outcomes.sqlite3").records())
    assert len(rows) == 2 * len(tenants)
    for row in rows:
        assert row["candidate_estimator"] == "heuristic@1.0.0"
        assert row["estimator"] == "static-minilm@1.1.0"
        assert 0.0 <= row["candidate_score"] <= 1.0
        assert row["features"] is not None and len(row["features"]) == 256
    free = [r for r in rows if r["tier"] == "free"]
    assert {r["variant"] for r in free} == {"a", "b"}
    assert all(r["variant"] is None for r in rows if r["tier"] == "pro")
    for r in free:  # by tenant: one arm per tenant, and arm b routes at its own threshold
        assert r["variant"] == ("b" if in_treatment("free", r["tenant"], 0.5) else "a")
        assert r["threshold"] == (0.9 if r["variant"] == "b" else 0.5)
    report = canary_report(rows)
    assert report["records"] == len(rows)
    assert set(report["tiers"]) == {"free", "pro"}
    assert 0.0 <= report["agreement"] <= 1.0
    arms = ab_report(rows)["free"]
    assert arms["requests"]["a"] + arms["requests"]["b"] == len(free)
    assert "cloud_share" in arms and "cost_per_request_usd" in arms
