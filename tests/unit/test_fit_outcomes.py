"""`models fit`: a head fitted to a deployment's labels, written as a registry version the run-time
estimator loads (real SQLite store, real committed encoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.models.fit import (
    FitRefused,
    escalation_label,
    fit_outcomes,
    logistic_regression,
    open_store,
)
from hyrouter.router import ChatMessage
from hyrouter.router._onnx_estimator import OnnxEstimator, read_manifest
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._outcomes import OutcomeRecord

DIMS = 256
CURRENT = "static-minilm@1.1.0"


def record(i: int, features: list[float], score: float, target: str = "edge") -> OutcomeRecord:
    return OutcomeRecord(
        id=f"chatcmpl-{i}",
        created_at=1_000.0 + i,
        tenant="acme",
        tier="free",
        target=target,
        reason="score_below_threshold",
        fallback=False,
        score=score,
        threshold=0.5,
        estimator=CURRENT,
        model="m",
        status=200,
        stream=False,
        latency_ms=1.0,
        estimator_ms=1.0,
        prompt_tokens=10 + i % 7,
        completion_tokens=5,
        cost_usd=0.0,
        cost_saved_usd=0.0,
        error_code=None,
        request_id=None,
        prompt_sha256="x",
        features=features,
    )


def synthetic_store(path: Path, n: int, *, current_knows: bool) -> SqliteOutcomeStore:
    """Labels a linear function of the features can tell; the current estimator's scores either
    know the labels exactly (`current_knows`) or are noise. Half the labels come from a judge,
    half from ratings of edge answers."""
    rng = np.random.default_rng(7)
    direction = rng.normal(size=DIMS)
    store = SqliteOutcomeStore(path)
    labels = []
    for i in range(n):
        x = rng.normal(size=DIMS)
        x /= np.linalg.norm(x)
        needed = float(x @ direction + 0.2 * rng.normal()) > 0
        labels.append(needed)
        score = (0.9 if needed else 0.1) if current_knows else float(rng.random())
        store.write([record(i, x.tolist(), score)])
    for i, needed in enumerate(labels):
        if i % 2:
            store.judge(f"chatcmpl-{i}", not needed, "test-judge")
        else:
            store.rate(f"chatcmpl-{i}", "acme", -1.0 if needed else 1.0, None)
    return store


def test_labels_come_from_verdicts_and_from_ratings_of_edge_answers_only() -> None:
    assert escalation_label({"judged_good": 1, "rating": -1.0, "target": "edge"}) == 0
    assert escalation_label({"judged_good": 0, "rating": None, "target": "cloud"}) == 1
    assert escalation_label({"judged_good": None, "rating": -0.5, "target": "edge"}) == 1
    assert escalation_label({"judged_good": None, "rating": 1.0, "target": "edge"}) == 0
    assert escalation_label({"judged_good": None, "rating": -1.0, "target": "cloud"}) is None
    assert escalation_label({"judged_good": None, "rating": 0.2, "target": "edge"}) == 1
    assert escalation_label({"judged_good": None, "rating": 0.8, "target": "edge"}) == 0
    assert escalation_label({"judged_good": None, "rating": None, "target": "edge"}) is None


def test_logistic_regression_separates_separable_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x[:, 0] - x[:, 2] > 0).astype(np.float64)
    head = logistic_regression(x, y, penalty=0.1)
    assert float(((head.scores(x) >= 0.5) == y).mean()) > 0.97


def test_fitted_head_beats_a_blind_current_and_is_written_as_a_loadable_version(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 600, current_knows=False)
    registry = tmp_path / "estimators"
    result = fit_outcomes(store, registry)
    store.close()
    evaluation = result.report["evaluation"]
    assert result.report["current"] == CURRENT
    assert evaluation["items"] == 120  # the newest fifth
    assert evaluation["fitted"]["apgr"] > 0.65
    assert evaluation["fitted"]["apgr"] > evaluation["current"]["apgr"] + 0.1
    assert 0.35 < evaluation["random"]["apgr"] < 0.65
    assert "prompt_length" in evaluation
    assert result.entry is not None and result.entry["version"] == "1.1.0.1"

    # The run-time estimator loads the version (every file's sha256 checked) and scores with the head.
    entry = read_manifest(registry)["estimators"][0]
    fitted = OnnxEstimator(registry, entry)
    base = OnnxEstimator(ARTEFACTS_DIR, read_manifest(ARTEFACTS_DIR)["estimators"][0])
    messages = [ChatMessage(role="user", content="Prove that there are infinitely many primes.")]
    score, features = fitted.score_with_features(messages)
    _, base_features = base.score_with_features(messages)
    assert features is not None and base_features is not None
    x = np.asarray(base_features, dtype=np.float64)
    assert score == pytest.approx(float(result.head.scores(x[None, :])[0]), abs=1e-6)
    assert fitted.score(messages) == pytest.approx(score, abs=1e-9)
    assert score != pytest.approx(base.score(messages), abs=1e-6)

    # A second fit is the next version; a tampered head is refused at load.
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    second = fit_outcomes(store, registry)
    store.close()
    assert second.entry is not None and second.entry["version"] == "1.1.0.2"
    head_file = registry / "static-minilm-1.1.0.1" / "head.json"
    head_file.write_text(head_file.read_text().replace('"bias": ', '"bias": 1'), encoding="utf-8")
    from hyrouter.router import EstimatorError

    with pytest.raises(EstimatorError, match="sha256"):
        OnnxEstimator(registry, entry)


def test_a_fit_worse_than_the_current_estimator_is_refused_unless_forced(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 300, current_knows=True)
    registry = tmp_path / "estimators"
    refused = fit_outcomes(store, registry)
    assert refused.entry is None and refused.report["better_than_current"] is False
    assert not (registry / "registry.json").exists()
    forced = fit_outcomes(store, registry, force=True)
    store.close()
    assert forced.entry is not None
    assert [e["version"] for e in read_manifest(registry)["estimators"]] == ["1.1.0.1"]


def test_too_few_labels_are_refused(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 10, current_knows=False)
    with pytest.raises(FitRefused, match="at least 20"):
        fit_outcomes(store, tmp_path / "estimators")
    store.close()


def test_store_specs() -> None:
    with pytest.raises(ValueError, match="sqlite:PATH"):
        open_store("postgres:x")
