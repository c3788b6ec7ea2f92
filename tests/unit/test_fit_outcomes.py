"""`models fit`: a head fitted to a deployment's labels, written as a registry version the run-time
estimator loads (real SQLite store, real committed encoder)."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.models.fit import (
    MIN_PER_LABEL,
    PENALTIES,
    FitRefused,
    acceptance,
    apgr_difference,
    escalation_label,
    fit,
    fit_outcomes,
    logistic_regression,
)
from hyrouter.models.stores import open_store
from hyrouter.router import ChatMessage, ConfigError, EstimatorError
from hyrouter.router._estimator import conversation_text
from hyrouter.router._onnx_estimator import OnnxEstimator, read_manifest
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._outcomes import OutcomeRecord
from tests.fakes import outcome_record

DIMS = 256
CURRENT = "static-minilm@1.1.0"


def record(
    i: int, features: list[float], score: float, target: str = "edge", prompt_chars: int | None = None
) -> OutcomeRecord:
    return outcome_record(
        f"chatcmpl-{i}",
        created_at=1_000.0 + i,
        target=target,
        score=score,
        threshold=0.5,
        estimator=CURRENT,
        prompt_tokens=10 + i % 7,
        features=features,
        prompt_chars=40 + 13 * (i % 11) if prompt_chars is None else prompt_chars,
    )


def synthetic_store(
    path: Path, n: int, *, current_knows: bool, by_length: bool = False, positives: float = 0.5
) -> SqliteOutcomeStore:
    """Labels a linear function of the features can tell (`by_length`: only the prompt's length can);
    `positives` of them say escalation was needed. The current estimator's scores either know the
    labels exactly (`current_knows`) or are noise. Half the labels come from a judge, half from
    ratings of edge answers."""
    rng = np.random.default_rng(7)
    direction = rng.normal(size=DIMS)
    store = SqliteOutcomeStore(path)
    labels = []
    for i in range(n):
        x = rng.normal(size=DIMS)
        x /= np.linalg.norm(x)
        chars = int(np.exp(rng.uniform(3.0, 8.0)))
        # log1p(chars) - 5.5 runs evenly over about [-2.5, 2.5]; x @ direction is about N(0, 1)
        signal = float(np.log1p(chars)) - 5.5 if by_length else float(x @ direction)
        cut = 2.5 - 5.0 * positives if by_length else NormalDist().inv_cdf(1.0 - positives)
        needed = signal + 0.2 * float(rng.normal()) > cut
        labels.append(needed)
        score = (0.9 if needed else 0.1) if current_knows else float(rng.random())
        store.write([record(i, x.tolist(), score, prompt_chars=chars)])
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


def test_a_strong_penalty_leaves_the_free_columns_alone() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + x[:, 3] > 0).astype(np.float64)
    penalised = logistic_regression(x, y, penalty=1e6)
    free = logistic_regression(x, y, penalty=1e6, free=1)
    assert np.abs(penalised.weights).max() < 0.01  # everything shrunk to nothing
    assert np.abs(free.weights[:3]).max() < 0.01 and free.weights[3] > 1.0  # the free column kept
    assert (
        PENALTIES[0] == pytest.approx(1e-3) and PENALTIES[-1] == pytest.approx(1e3) and len(PENALTIES) == 13
    )


def test_fitted_head_beats_a_blind_current_and_is_written_as_a_loadable_version(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 600, current_knows=False)
    registry = tmp_path / "estimators"
    result = fit_outcomes(store, registry)
    store.close()
    evaluation = result.report["evaluation"]
    assert result.report["current"] == CURRENT
    assert result.report["extras"] == ["log_prompt_chars"]
    assert evaluation["items"] == 120  # the newest fifth
    assert evaluation["fitted"]["apgr"] > 0.65
    assert evaluation["fitted"]["apgr"] > evaluation["current"]["apgr"] + 0.1
    low, high = evaluation["fitted_minus_current"]["ci95"]
    assert 0.0 < low <= evaluation["fitted_minus_current"]["apgr"] <= high
    assert result.report["refusal"] is None and result.report["better_than_current"] is True
    assert 0.35 < evaluation["random"]["apgr"] < 0.65
    assert "prompt_length" in evaluation
    assert result.entry is not None and result.entry["version"] == "1.1.0.1"

    # The run-time estimator loads the version (every file's sha256 checked) and scores with the head:
    # the encoder's features and the conversation's length, exactly as the numpy head scores them.
    entry = read_manifest(registry)["estimators"][0]
    head_doc = (registry / "static-minilm-1.1.0.1" / "head.json").read_text(encoding="utf-8")
    assert '"extras": ["log_prompt_chars"]' in head_doc
    fitted = OnnxEstimator(registry, entry)
    assert fitted.head_extras == ("log_prompt_chars",)
    base = OnnxEstimator(ARTEFACTS_DIR, read_manifest(ARTEFACTS_DIR)["estimators"][0])
    for text in ("Prove that there are infinitely many primes.", "hi", "Summarise this: " + "word " * 900):
        messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content=text)]
        score, features = fitted.score_with_features(messages)
        _, base_features = base.score_with_features(messages)
        assert features is not None and base_features is not None
        x = np.append(np.asarray(base_features, dtype=np.float64), np.log1p(len(conversation_text(messages))))
        assert score == pytest.approx(float(result.head.scores(x[None, :])[0]), abs=1e-6)
        assert fitted.score(messages) == pytest.approx(score, abs=1e-9)
        assert score != pytest.approx(base.score(messages), abs=1e-6)
    with pytest.raises(EstimatorError, match="log_prompt_chars"):
        fitted.score_ids(fitted.token_ids(messages))  # the length is not in the token ids

    # A second fit is the next version; a tampered head is refused at load.
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    second = fit_outcomes(store, registry)
    store.close()
    assert second.entry is not None and second.entry["version"] == "1.1.0.2"
    head_file = registry / "static-minilm-1.1.0.1" / "head.json"
    head_file.write_text(head_file.read_text().replace('"bias": ', '"bias": 1'), encoding="utf-8")
    with pytest.raises(EstimatorError, match="sha256"):
        OnnxEstimator(registry, entry)


def test_the_prompts_length_is_what_a_head_on_the_embedding_alone_misses(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 600, current_knows=False, by_length=True)
    records = list(store.records())
    store.close()
    _, with_length = fit(records)
    _, embedding_only = fit(records, features="embedding")
    assert with_length["evaluation"]["fitted"]["apgr"] > 0.72  # 0.75 is a perfect router at half positives
    assert embedding_only["evaluation"]["fitted"]["apgr"] < 0.6
    assert with_length["refusal"] is None
    assert embedding_only["extras"] == []
    # Records written before prompt_chars existed: left out of a length head, used by the embedding's.
    for r in records[:300]:
        r["prompt_chars"] = None
    _, newer_only = fit(records)
    assert newer_only["labelled_records"] == 300 and newer_only["left_out_lacking_prompt_chars"] == 300
    for r in records:
        r["prompt_chars"] = None
    with pytest.raises(FitRefused, match="--features embedding"):
        fit(records)
    assert fit(records, features="embedding")[1]["labelled_records"] == 600


def test_only_records_of_the_current_estimators_name_train_and_each_tenants_labels_are_counted(
    tmp_path: Path,
) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 400, current_knows=False)
    records = list(store.records())
    store.close()
    for r in records[:50]:  # another encoder's features, of the same width: they mean something else
        r["estimator"] = "other-encoder@2.0.0"
    for r in records[50:60]:  # another width
        r["features"] = r["features"][:64]
    for r in records[60:100]:
        r["tenant"] = "globex"
    for r in records[100:110]:  # a fitted version of the same name: the same encoder, used
        r["estimator"] = "static-minilm@1.1.0.1"
    _, report = fit(records, current=CURRENT)
    assert report["labelled_records"] == 340
    assert report["left_out_other_estimator"] == 60
    tenants = report["labels_per_tenant"]
    assert list(tenants) == ["acme", "globex"]
    assert sum(tenants["globex"].values()) == 40 and sum(tenants["acme"].values()) == 300
    # Without --current, the name that scored most labelled records is the one trained on.
    assert fit(records)[1]["current"] == CURRENT


def test_a_fit_worse_than_the_current_estimator_is_refused_unless_forced(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 300, current_knows=True)
    registry = tmp_path / "estimators"
    refused = fit_outcomes(store, registry)
    assert refused.entry is None and refused.report["better_than_current"] is False
    assert "not shown better" in refused.report["refusal"]
    assert refused.report["evaluation"]["fitted_minus_current"]["ci95"][1] < 0
    assert not (registry / "registry.json").exists()
    forced = fit_outcomes(store, registry, force=True)
    store.close()
    assert forced.entry is not None
    assert [e["version"] for e in read_manifest(registry)["estimators"]] == ["1.1.0.1"]


def test_an_evaluation_with_too_few_of_a_label_cannot_accept(tmp_path: Path) -> None:
    # 10% positives: the newest fifth of 400 holds about 8 records where escalation was needed. The
    # head is much better than the blind current estimator, but 8 cannot show it.
    store = synthetic_store(tmp_path / "o.sqlite3", 400, current_knows=False, positives=0.1)
    result = fit_outcomes(store, tmp_path / "estimators")
    store.close()
    evaluation = result.report["evaluation"]
    assert evaluation["escalation_needed"] < MIN_PER_LABEL
    assert result.entry is None and f"at least {MIN_PER_LABEL} of each" in result.report["refusal"]


def test_the_interval_of_the_apgr_difference_covers_no_difference_between_equals() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.3).astype(np.float64)
    a, b = rng.random(300), rng.random(300)  # two blind routers
    difference = apgr_difference(a, b, labels, resamples=300)
    low, high = difference["ci95"]
    assert low < 0.0 < high and high - low < 0.5
    good = labels + 0.1 * rng.random(300)  # one that knows the labels
    better = apgr_difference(good, b, labels, resamples=300)
    assert better["ci95"][0] > 0.2
    evaluation = {"items": 300, "escalation_needed": int(labels.sum())}
    assert acceptance({**evaluation, "fitted_minus_current": better}) is None
    assert "not shown better" in str(acceptance({**evaluation, "fitted_minus_current": difference}))


def test_too_few_labels_are_refused(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "o.sqlite3", 10, current_knows=False)
    with pytest.raises(FitRefused, match="at least 20"):
        fit_outcomes(store, tmp_path / "estimators")
    store.close()


def test_store_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no outcome store of kind 'postgres'"):
        open_store("postgres:x")
    with pytest.raises(ConfigError, match="no such file"):
        open_store(f"sqlite:{tmp_path / 'missing.sqlite3'}")
    with pytest.raises(ConfigError, match="expected sqlite:PATH"):
        open_store("outcomes.sqlite3")


def test_fit_and_canary_read_a_dynamodb_table_through_the_entry_point_seam(
    fake_aws: None, tmp_path: Path
) -> None:
    """`dynamodb:TABLE` opens the store `hyrouter.cloud.aws` registers (models/ never imports cloud/):
    the same records in a table and in a SQLite file give the same fit and the same canary report."""
    import boto3

    from hyrouter.cloud.aws.outcomes import DynamoDbOutcomeStore
    from hyrouter.models.canary import canary_report

    boto3.client("dynamodb").create_table(
        TableName="outcomes",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sqlite = synthetic_store(tmp_path / "o.sqlite3", 200, current_knows=False)
    table = open_store("dynamodb:outcomes")
    assert isinstance(table, DynamoDbOutcomeStore) and table.table == "outcomes"
    for r in sqlite.records():
        fields = {k: r[k] for k in OutcomeRecord.__dataclass_fields__}
        table.write(
            [OutcomeRecord(**{**fields, "candidate_estimator": "x@1", "candidate_score": r["score"]})]
        )
        if r["judged_good"] is not None:
            table.judge(r["id"], bool(r["judged_good"]), "test-judge")
        elif r["rating"] is not None:
            table.rate(r["id"], "acme", r["rating"], None)
    from_table = fit_outcomes(table, tmp_path / "a", force=True)
    from_file = fit_outcomes(sqlite, tmp_path / "b", force=True)
    sqlite.close()
    assert from_table.report["labelled_records"] == 200
    assert from_table.report == from_file.report
    np.testing.assert_array_equal(from_table.head.weights, from_file.head.weights)
    canary = canary_report(list(table.records()))
    assert canary["records"] == 200 and canary["agreement"] == 1.0 and canary["judged"]["records"] == 200
