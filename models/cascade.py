"""Calibrating the edge model's confidence in its own answers: features, fit, and the registry entry.

    hybrid-router models fit-confidence [--method platt|isotonic] [--tasks sub-1digit,...]

The confidence cascade (`TierConfig.verify`) escalates an edge answer whose confidence is low. The
confidence is read from the answer's token signals (`AnswerFeatures`); a calibration maps them to the
probability that the answer is right. It is fitted here on the graded answers of
`hybrid-router labels --benchmark answers` (models/data/edge-answers/), on every graded task
(`CALIBRATION_TASKS`); `hybrid-router eval --cascade` refits it leaving each task out in turn and
reports on the task left out, which its calibration never saw.

How, and why so (the graded answers showed each of these to matter for SmolLM2-135M):
- the slopes are learned *within* tasks (an intercept per task), never pooled across them: pooled,
  the multiple-choice tasks (options copied with sure tokens, answers at chance) teach the slopes
  backwards for arithmetic;
- each slope keeps the direction `SIGNS` gives it (a surer answer is never less likely right); a
  feature that goes the other way on the calibration tasks is dropped;
- the feature set is chosen among `CANDIDATE_FEATURES` by leaving each calibration task out in turn.

Two links, after that logistic regression (numpy, L2, standardised features):
- `platt`: the regression's probability (Platt scaling of the linear score);
- `isotonic`: the monotone step function of the linear score that fits the labels best (pool
  adjacent violators), interpolated linearly between its steps.

The result is the JSON document `hyrouter.router` loads (its format is checked there), written to
models/artefacts/calibrations/ and listed in models/artefacts/registry.json under "calibrations",
with its own sha256 and the sha256 of the GGUF file whose answers it was fitted on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.edge_answers import TASKS, read_answers
from hyrouter.models.fit import logistic_regression
from hyrouter.models.routing_data import SMOLLM2, EdgeModel
from hyrouter.router import AnswerFeatures
from hyrouter.router._confidence import CALIBRATION_FEATURES
from hyrouter.router._onnx_estimator import file_sha256

FloatArray = npt.NDArray[np.float64]

ARTEFACTS_DIR = Path(__file__).with_name("artefacts")
#: The shipped calibration is fitted on every graded task; `eval --cascade` leaves each out in turn.
CALIBRATION_TASKS = tuple(TASKS)
#: What a calibration is fitted on: every feature the router's calibrations may read, the token
#: count as its log (`log_tokens`) only.
FEATURES = tuple(name for name in CALIBRATION_FEATURES if name != "tokens")
#: The direction each feature may move the confidence: a surer answer (likelier tokens, wider margins,
#: less entropy, fewer tokens) is never made *less* likely right. A slope learned the other way on a
#: few tasks is noise that does not carry to others: the feature is dropped (`fit_monotone`).
SIGNS = {
    "mean_logprob": 1,
    "min_logprob": 1,
    "low_logprob": 1,
    "mean_entropy": -1,
    "mean_margin": 1,
    "first_logprob": 1,
    "log_tokens": -1,
}
assert set(SIGNS) == set(FEATURES), "every feature fitted needs its direction"
CALIBRATION_VERSION = "1.0.0"
L2 = 1.0


@dataclass(frozen=True)
class _Signal:
    logprob: float
    entropy: float
    margin: float


def answer_features(row: dict[str, Any]) -> AnswerFeatures | None:
    """The features of a graded answer's recorded token signals; None for an empty answer."""
    signals = [_Signal(*s) for s in zip(row["logprob"], row["entropy"], row["margin"], strict=True)]
    return AnswerFeatures.of(signals)


def feature_matrix(rows: Sequence[dict[str, Any]], names: Sequence[str] = FEATURES) -> FloatArray:
    """One row of `names` per answer; an empty answer gets the least confident value of each column."""
    table = []
    for row in rows:
        features = answer_features(row)
        table.append([math.nan] * len(names) if features is None else [getattr(features, n) for n in names])
    matrix = np.asarray(table, dtype=np.float64).reshape(len(rows), len(names))
    worst = np.nanmin(np.where(np.isnan(matrix), np.inf, matrix), axis=0)
    return np.where(np.isnan(matrix), worst, matrix)


def labels(rows: Sequence[dict[str, Any]]) -> FloatArray:
    """1.0 where the edge's answer was right."""
    return np.asarray([1.0 if row["correct"] else 0.0 for row in rows])


@dataclass(frozen=True)
class Logistic:
    """A logistic regression over standardised features: z = b + w . (x - center) / scale."""

    center: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float

    def linear(self, x: FloatArray) -> FloatArray:
        """The linear score z of each row of `x`."""
        return np.asarray(self.intercept + ((x - self.center) / self.scale) @ self.coef, dtype=np.float64)


def fit_logistic(
    x: FloatArray, y: FloatArray, groups: Sequence[str] | None = None, l2: float = L2, iterations: int = 50
) -> Logistic:
    """`models.fit.logistic_regression` (Newton, L2 on standardised features, intercepts free).

    With `groups` (each row's task), every group gets an intercept of its own and the slopes are
    shared: they are learned *within* tasks. Pooled, tasks with different base rates and different
    confidence levels teach the opposite slope (Simpson's paradox: SmolLM2 copies multiple-choice
    options with high confidence and is at chance there, and answers arithmetic less surely and is
    right more often). The intercept kept is the one that makes the mean predicted probability on
    these rows equal their share of right answers.
    """
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    # One intercept per group: the bias, and an unpenalised indicator for each group but the first.
    names = sorted(set(groups))[1:] if groups is not None else []
    dummies = np.asarray([[g == n for n in names] for g in groups or ()], dtype=np.float64).reshape(
        len(x), len(names)
    )
    head = logistic_regression(np.hstack([x, dummies]), y, l2, iterations, free=len(names))
    coef = head.weights[: x.shape[1]] * scale  # per standardised feature, as the document keeps them
    slope_part = ((x - center) / scale) @ coef
    return Logistic(center=center, scale=scale, coef=coef, intercept=_matching_intercept(slope_part, y))


def _matching_intercept(linear: FloatArray, y: FloatArray) -> float:
    """The b at which mean(sigmoid(linear + b)) equals mean(y) (bisection: the mean is monotone in b)."""
    target = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    low, high = -50.0, 50.0
    for _ in range(100):
        mid = (low + high) / 2
        if float(np.mean(1.0 / (1.0 + np.exp(-(linear + mid))))) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


#: The feature sets `select_features` chooses among: each feature alone, and all of them.
CANDIDATE_FEATURES: tuple[tuple[str, ...], ...] = (*((name,) for name in FEATURES), FEATURES)


def fit_monotone(
    rows: Sequence[dict[str, Any]], names: Sequence[str]
) -> tuple[tuple[str, ...], Logistic | None]:
    """`fit_logistic` within tasks on `names`, dropping every feature whose slope goes against its
    `SIGNS` and refitting, until none does; no features left: (), None (no signal: a constant)."""
    kept = tuple(names)
    while kept:
        fit = fit_logistic(feature_matrix(rows, kept), labels(rows), [r["task"] for r in rows])
        wrong = {n for n, c in zip(kept, fit.coef, strict=True) if c * SIGNS[n] < 0}
        if not wrong:
            return kept, fit
        kept = tuple(n for n in kept if n not in wrong)
    return (), None


def monotone_scores(rows: Sequence[dict[str, Any]], names: Sequence[str], fit: Logistic | None) -> FloatArray:
    """The linear score of `fit` on `rows` (0 for all when there is no fit)."""
    return np.zeros(len(rows)) if fit is None else fit.linear(feature_matrix(rows, names))


def select_features(
    rows: Sequence[dict[str, Any]], candidates: Sequence[Sequence[str]] = CANDIDATE_FEATURES
) -> tuple[tuple[str, ...], dict[str, float]]:
    """The candidate feature set with the best mean AUROC, leaving each task of `rows` out in turn
    (fitted on the others with `fit_monotone`, scored on it): a choice made on these tasks alone."""
    tasks = sorted({r["task"] for r in rows})
    scores: dict[str, float] = {}
    for names in candidates:
        found = []
        for held in tasks:
            train = [r for r in rows if r["task"] != held]
            test = [r for r in rows if r["task"] == held]
            kept, fit = fit_monotone(train, names)
            found.append(auroc(monotone_scores(test, kept, fit), labels(test)))
        scores[",".join(names)] = float(np.nanmean(found))
    best = max(candidates, key=lambda names: scores[",".join(names)])
    return tuple(best), {k: round(v, 4) for k, v in scores.items()}


def isotonic(z: FloatArray, y: FloatArray) -> tuple[list[float], list[float]]:
    """The pool-adjacent-violators fit of `y` on `z`: points (x, y), x increasing, y non-decreasing.

    Each pooled block is one point at its mean z; the router interpolates between them.
    """
    order = np.argsort(z, kind="stable")
    blocks: list[list[float]] = []  # [sum of y, sum of z, count]
    for zi, yi in zip(z[order], y[order], strict=True):
        blocks.append([float(yi), float(zi), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][2] >= blocks[-1][0] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last, strict=True)]
    xs = [b[1] / b[2] for b in blocks]
    ys = [b[0] / b[2] for b in blocks]
    kept_x, kept_y = [xs[0]], [ys[0]]
    for xv, yv in zip(xs[1:], ys[1:], strict=True):  # strictly increasing x for interpolation
        if xv > kept_x[-1]:
            kept_x.append(xv)
            kept_y.append(yv)
        else:
            kept_y[-1] = max(kept_y[-1], yv)
    return kept_x, kept_y


def auroc(scores: FloatArray, good: FloatArray) -> float:
    """The area under the ROC curve of `scores` for `good` (ties count half); NaN with one class."""
    scores, good = np.asarray(scores, dtype=np.float64), np.asarray(good, dtype=np.float64)
    positives, negatives = int(good.sum()), int(len(good) - good.sum())
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[good == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def fit_calibration(
    tasks: Sequence[str] = CALIBRATION_TASKS,
    *,
    method: str = "platt",
    model: EdgeModel = SMOLLM2,
    answers_dir: Path | None = None,
    gguf: Path | None = None,
    gguf_digest: str | None = None,
) -> dict[str, Any]:
    """The calibration document fitted on the graded answers of `tasks` (see the module docstring).

    The features are chosen among `CANDIDATE_FEATURES` by leaving each of `tasks` out in turn; the
    slopes are learned within tasks and kept to their `SIGNS` (`fit_monotone`).
    """
    from hyrouter.models.edge_labels import model_file

    rows = [row for task in tasks for row in _answers(task, model, answers_dir)]
    candidate, selection = select_features(rows)
    chosen, fit = fit_monotone(rows, candidate)
    if fit is None:
        raise ValueError(
            f"no feature of {candidate} keeps its direction on {', '.join(tasks)}: nothing to fit"
        )
    x, y = feature_matrix(rows, chosen), labels(rows)
    z = fit.linear(x)
    gguf = gguf or model_file(model)
    doc: dict[str, Any] = {
        "format": 1,
        "name": model.label_dir,
        "version": CALIBRATION_VERSION,
        "gguf": {"file": gguf.name, "sha256": gguf_digest or file_sha256(gguf)},
        "features": list(chosen),
        "center": _rounded(fit.center),
        "scale": _rounded(fit.scale),
        "coef": _rounded(fit.coef),
        "intercept": round(fit.intercept, 6),
        "link": "sigmoid" if method == "platt" else "isotonic",
    }
    if method == "isotonic":
        xs, ys = isotonic(z, y)
        doc["isotonic"] = {"x": [round(v, 6) for v in xs], "y": [round(v, 6) for v in ys]}
    confidence = apply(doc, x)
    doc["metrics"] = {
        "fitted_on": {
            task: {
                "items": int(sum(1 for r in rows if r["task"] == task)),
                "edge_right": round(float(y[_mask(rows, task)].mean()), 4),
                "auroc": round(auroc(confidence[_mask(rows, task)], y[_mask(rows, task)]), 4),
            }
            for task in tasks
        },
        "brier": round(float(np.mean((confidence - y) ** 2)), 4),
        "feature_selection_auroc": selection,
    }
    doc["training"] = {
        "command": f"hybrid-router models fit-confidence --method {method}",
        "tasks": list(tasks),
        "items": len(rows),
        "data": "models/data/edge-answers (hybrid-router labels --benchmark answers)",
        "l2": L2,
        "slopes": "within tasks (an intercept per task; the one kept matches the pooled share right)",
    }
    return doc


def apply(doc: dict[str, Any], x: FloatArray) -> FloatArray:
    """The confidence a calibration document gives each row of features `x` (its columns in
    `doc["features"]` order): numpy's twin of the router's `FittedCalibration`."""
    z = doc["intercept"] + ((x - np.asarray(doc["center"])) / np.asarray(doc["scale"])) @ np.asarray(
        doc["coef"]
    )
    if doc["link"] == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)
    points = doc["isotonic"]
    return np.asarray(np.interp(z, points["x"], points["y"]), dtype=np.float64)


def write_calibration(doc: dict[str, Any], *, root: Path = ARTEFACTS_DIR) -> Path:
    """Write `doc` under `root`/calibrations and list it in `root`/registry.json (replacing the entry
    of the same name and version)."""
    out = root / "calibrations" / f"{doc['name']}-{doc['version']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    registry_path = root / "registry.json"
    registry = json.loads(registry_path.read_text(encoding="utf-8"))
    entries = [
        e
        for e in registry.get("calibrations", [])
        if (e["name"], e["version"]) != (doc["name"], doc["version"])
    ]
    entries.append(
        {
            "name": doc["name"],
            "version": doc["version"],
            "path": str(out.relative_to(root)),
            "sha256": file_sha256(out),
            "gguf_sha256": doc["gguf"]["sha256"],
        }
    )
    registry["calibrations"] = entries
    registry_path.write_text(json.dumps(registry, indent=2) + "\n", encoding="utf-8")
    return out


def _answers(task: str, model: EdgeModel, answers_dir: Path | None) -> list[dict[str, Any]]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return read_answers(task, model) if answers_dir is None else read_answers(task, model, answers_dir)


def _mask(rows: Sequence[dict[str, Any]], task: str) -> npt.NDArray[np.bool_]:
    return np.asarray([r["task"] == task for r in rows])


def _rounded(values: FloatArray) -> list[float]:
    return [round(float(v), 6) for v in values]


def add_fit_confidence_command(sub: Any) -> None:
    """Register `hybrid-router models fit-confidence` under the `models` command's subparsers."""
    p = sub.add_parser(
        "fit-confidence", help="calibrate the edge model's confidence on graded answers (numpy, seconds)"
    )
    p.add_argument("--method", choices=("platt", "isotonic"), default="platt", help="the mapping fitted")
    p.add_argument(
        "--tasks", default=",".join(CALIBRATION_TASKS), help="comma-separated tasks of the graded answers"
    )
    p.set_defaults(func=_cmd_fit_confidence)


def _cmd_fit_confidence(args: Any) -> int:
    doc = fit_calibration(args.tasks.split(","), method=args.method)
    out = write_calibration(doc)
    print(json.dumps(doc["metrics"], indent=2))
    print(out)
    return 0
