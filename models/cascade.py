"""Calibrating the edge model's confidence in its own answers: features, fit, and the registry entry.

    hybrid-router models fit-confidence [--method platt|isotonic] [--tasks sub-1digit,...]

The confidence cascade (`TierConfig.verify`) escalates an edge answer whose confidence is low. The
confidence is read from the answer's token signals (`AnswerFeatures`); a calibration maps them to the
probability that the answer is right. It is fitted here on the graded answers of
`hybrid-router labels --benchmark answers` (models/data/edge-answers/), on the calibration tasks
only (`CALIBRATION_TASKS`); `hybrid-router eval --cascade` reports on the others
(`REPORT_TASKS`), which it was not fitted on.

Two methods, both a logistic regression (numpy, L2, standardised features) first:
- `platt`: the regression's probability (Platt scaling of the linear score);
- `isotonic`: the monotone step function of the linear score that fits the labels best (pool
  adjacent violators), interpolated linearly between its steps.

The result is the JSON document `hyrouter.router` loads (its format is checked there), written to
models/artefacts/calibrations/ and listed in models/artefacts/registry.json under "calibrations",
with its own sha256 and the sha256 of the GGUF file whose answers it was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.edge_answers import TASKS, read_answers
from hyrouter.models.routing_data import SMOLLM2, EdgeModel
from hyrouter.router import AnswerFeatures

FloatArray = npt.NDArray[np.float64]

ARTEFACTS_DIR = Path(__file__).with_name("artefacts")
CALIBRATIONS_DIR = ARTEFACTS_DIR / "calibrations"
REGISTRY = ARTEFACTS_DIR / "registry.json"
#: Fitted on these; `eval --cascade` reports on `REPORT_TASKS`. Both hold arithmetic and multiple choice.
CALIBRATION_TASKS = ("sub-1digit", "addsub-20", "commonsense_qa", "truthfulqa-2way")
REPORT_TASKS = ("add-1digit", "mul-1digit", "mmlu", "arc_challenge")
FEATURES = (
    "mean_logprob",
    "min_logprob",
    "low_logprob",
    "mean_entropy",
    "mean_margin",
    "first_logprob",
    "log_tokens",
)
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


def fit_logistic(x: FloatArray, y: FloatArray, l2: float = L2, iterations: int = 50) -> Logistic:
    """Newton's method on the L2-penalised log-likelihood (the intercept not penalised)."""
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.column_stack([np.ones(len(x)), (x - center) / scale])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return Logistic(center=center, scale=scale, coef=w[1:], intercept=float(w[0]))


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


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_calibration(
    tasks: Sequence[str] = CALIBRATION_TASKS,
    *,
    method: str = "platt",
    model: EdgeModel = SMOLLM2,
    answers_dir: Path | None = None,
    gguf: Path | None = None,
) -> dict[str, Any]:
    """The calibration document fitted on the graded answers of `tasks` (see the module docstring)."""
    from hyrouter.models.edge_labels import model_file

    rows = [row for task in tasks for row in _answers(task, model, answers_dir)]
    x, y = feature_matrix(rows), labels(rows)
    fit = fit_logistic(x, y)
    z = fit.linear(x)
    doc: dict[str, Any] = {
        "format": 1,
        "name": model.label_dir,
        "version": CALIBRATION_VERSION,
        "gguf": {"file": (gguf or model_file(model)).name, "sha256": file_sha256(gguf or model_file(model))},
        "features": list(FEATURES),
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
    }
    doc["training"] = {
        "command": f"hybrid-router models fit-confidence --method {method}",
        "tasks": list(tasks),
        "items": len(rows),
        "data": "models/data/edge-answers (hybrid-router labels --benchmark answers)",
        "l2": L2,
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


def load_calibration(model: EdgeModel = SMOLLM2, *, root: Path = ARTEFACTS_DIR) -> dict[str, Any]:
    """The committed calibration document of `model` (the last listed for it)."""
    registry = json.loads((root / "registry.json").read_text(encoding="utf-8"))
    found = [e for e in registry.get("calibrations", []) if e["name"] == model.label_dir]
    if not found:
        raise FileNotFoundError(f"no calibration of {model.label_dir} in {root / 'registry.json'}")
    doc: dict[str, Any] = json.loads((root / found[-1]["path"]).read_text(encoding="utf-8"))
    return doc


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
