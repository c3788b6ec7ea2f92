"""Fitting the edge confidence's calibration (models/cascade.py) and the graded tasks it is fitted on."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hyrouter.models.cascade import (
    FEATURES,
    FloatArray,
    apply,
    auroc,
    feature_matrix,
    fit_logistic,
    isotonic,
    write_calibration,
)
from hyrouter.models.cascade_eval import cascade_cost, two_stage_scores
from hyrouter.models.edge_answers import TASKS


def row(logprobs: list[float], correct: bool, **extra: Any) -> dict[str, Any]:
    n = len(logprobs)
    return {"logprob": logprobs, "entropy": [1.0] * n, "margin": [0.5] * n, "correct": correct, **extra}


def test_auroc_counts_pairs_and_ties_half() -> None:
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    rng = np.random.default_rng(1)
    scores, good = rng.random(60), rng.integers(0, 2, 60)
    pairs = [(p > q) + 0.5 * (p == q) for p in scores[good == 1] for q in scores[good == 0]]
    assert auroc(scores, good) == pytest.approx(np.mean(pairs))


def test_the_logistic_fit_separates_what_is_separable_and_the_isotonic_map_is_monotone() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.3, size=400) > 0).astype(float)
    fit = fit_logistic(x, y)
    z = fit.linear(x)
    assert auroc(z, y) > 0.95
    assert fit.coef[0] > 0 > fit.coef[1]
    xs, ys = isotonic(z, y)
    assert all(b > a for a, b in itertools.pairwise(xs))
    assert all(b >= a for a, b in itertools.pairwise(ys))
    assert 0.0 <= ys[0] <= ys[-1] <= 1.0


def test_features_come_from_the_recorded_signals_and_an_empty_answer_is_least_confident() -> None:
    rows = [row([-0.1, -0.3], True), row([-2.0], False), row([], False)]
    x = feature_matrix(rows, ["mean_logprob", "min_logprob", "first_logprob", "log_tokens"])
    assert x[0].tolist() == pytest.approx([-0.2, -0.3, -0.1, math.log(2)])
    assert x[2].tolist() == pytest.approx([-2.0, -2.0, -2.0, 0.0])  # each column's worst


def test_a_written_calibration_is_listed_with_its_sha256_and_read_alike_by_the_router(
    tmp_path: Path,
) -> None:
    from hyrouter.router import AnswerFeatures
    from hyrouter.router._confidence import CalibrationDocument, FittedCalibration

    (tmp_path / "registry.json").write_text(json.dumps({"format": 1, "estimators": []}))
    doc = {
        "format": 1,
        "name": "tiny",
        "version": "1.0.0",
        "gguf": {"file": "tiny.gguf", "sha256": "ab" * 32},
        "features": list(FEATURES),
        "center": [0.0] * len(FEATURES),
        "scale": [1.0] * len(FEATURES),
        "coef": [1.5, 0.2, 0.1, -0.3, 0.05, 0.4, -0.2],
        "intercept": 0.3,
        "link": "isotonic",
        "isotonic": {"x": [-3.0, -1.0, 0.5], "y": [0.1, 0.4, 0.9]},
        "metrics": {},
        "training": {"tasks": ["sub-1digit"]},
    }
    path = write_calibration(doc, root=tmp_path)
    (entry,) = json.loads((tmp_path / "registry.json").read_text())["calibrations"]
    assert entry["path"] == "calibrations/tiny-1.0.0.json" and entry["gguf_sha256"] == "ab" * 32
    assert path.exists() and len(entry["sha256"]) == 64
    answers = [row([-0.1, -0.2, -0.05], True), row([-1.5, -3.0], False), row([-0.6], True)]
    ours = apply(doc, feature_matrix(answers))
    router = FittedCalibration(CalibrationDocument.model_validate(doc), source=str(path))
    assert FittedCalibration.load(path).name == "tiny@1.0.0"
    theirs = [router.confidence(AnswerFeatures.of(_signals(a))) for a in answers]  # type: ignore[arg-type]
    assert ours.tolist() == pytest.approx(theirs, abs=1e-9)


def _signals(answer: dict[str, Any]) -> list[Any]:
    from hyrouter.models.cascade import _Signal

    return [_Signal(*s) for s in zip(answer["logprob"], answer["entropy"], answer["margin"], strict=True)]


def test_graded_tasks_are_reproducible_and_grade_what_the_model_says(tmp_path: Path) -> None:
    add = TASKS["add-1digit"]
    first, again = add.items(tmp_path, 20), add.items(tmp_path, 20)
    assert first == again and len(first) == 20  # seeded: the same items on every machine
    item = {"reference": "10"}
    assert add.grade("8 + 2 = 10", item) and add.grade("10.", item)
    assert not add.grade("To find the sum of 8 and 2", item) and not add.grade("8 + 2 = 11", item)
    letter = TASKS["mmlu"]
    choice = {"reference": "C", "options": 4}
    assert letter.grade("C. forty", choice) and letter.grade("The answer is C", choice)
    assert not letter.grade("A. four", choice) and not letter.grade("E", choice)


def test_the_two_stage_order_sends_the_hardest_prompts_first_then_the_least_confident() -> None:
    pre = np.array([0.9, 0.1, 0.2, 0.3, 0.15, 0.05, 0.25, 0.35, 0.12, 0.22])
    confidence = np.array([0.99, 0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1])
    order = np.argsort(-two_stage_scores(pre, confidence, share=0.1))
    assert order[0] == 0 and order[1] == 9 and order[2] == 1  # straight, then by confidence
    rows = [{"completion_tokens": 4, "elapsed_ms": float(10 * i)} for i in range(10)]
    scores = two_stage_scores(pre, confidence, share=0.1)
    cost = cascade_cost(scores, scores >= 2.0, rows, 0.3)
    assert cost["escalated_after_edge"] == 2  # item 0 went straight: no edge work wasted on it
    assert cost["edge_tokens_wasted_per_request"] == pytest.approx(0.8)
    assert cost["edge_tokens_wasted_share"] == pytest.approx(0.2)


def _task_rows(task: str, signal: FloatArray, right: FloatArray) -> list[dict[str, Any]]:
    return [
        {
            "task": task,
            "logprob": [float(s)],
            "entropy": [1.0],
            "margin": [float(s) + 3.0],
            "correct": bool(r),
        }
        for s, r in zip(signal, right, strict=True)
    ]


def test_slopes_are_learned_within_tasks_not_across_them() -> None:
    from hyrouter.models.cascade import fit_monotone, select_features

    rng = np.random.default_rng(7)
    # Within each task a surer answer is likelier right; across them the surer task is the weaker one
    # (multiple choice copied with sure tokens, at chance): pooled, the slope comes out backwards.
    sure = rng.normal(-0.2, 0.1, 300)
    unsure = rng.normal(-1.5, 0.3, 300)
    choice = rng.random(300) < (0.15 + 1.0 * (sure + 0.2)).clip(0.01, 0.99)
    sums = rng.random(300) < (0.75 + 0.5 * (unsure + 1.5)).clip(0.01, 0.99)
    rows = _task_rows("choice", sure, choice) + _task_rows("sums", unsure, sums)
    x = feature_matrix(rows, ["mean_logprob"])
    y = np.asarray([1.0 if r["correct"] else 0.0 for r in rows])
    assert fit_logistic(x, y).coef[0] < 0  # pooled: backwards
    within = fit_logistic(x, y, [r["task"] for r in rows])
    assert within.coef[0] > 0
    # The intercept kept makes the mean confidence the share right.
    assert float(np.mean(1 / (1 + np.exp(-within.linear(x))))) == pytest.approx(float(y.mean()), abs=1e-6)
    kept, fit = fit_monotone(rows, ["mean_logprob"])
    assert kept == ("mean_logprob",) and fit is not None and fit.coef[0] > 0
    chosen, scores = select_features(rows, [("mean_logprob",), ("first_logprob",), ("log_tokens",)])
    assert chosen in {("mean_logprob",), ("first_logprob",)} and scores["log_tokens"] == 0.5


def test_a_feature_whose_slope_goes_against_its_direction_is_dropped() -> None:
    from hyrouter.models.cascade import fit_monotone

    rng = np.random.default_rng(2)
    signal = rng.normal(-1.0, 0.5, 400)
    rows = _task_rows("t", signal, rng.random(400) < 0.8 - 0.5 * (signal + 2.0).clip(0, 1.5) / 1.5)
    kept, fit = fit_monotone(rows, ["mean_logprob"])  # surer is *less* often right here: not kept
    assert kept == () and fit is None
