"""The two-stage router against the pre-route-only one, on graded edge answers it was not calibrated on.

    hybrid-router eval --cascade [--json out.json]

Per graded task (models/data/edge-answers/), with a calibration fitted the way the shipped one is
(`fit_calibration`) on every *other* task (leave one task out: the task reported on is never one it
was calibrated on), on the edge model's own graded answers:

- the AUROC, for "the edge's answer is right", of the calibrated confidence, the uncalibrated
  default (exp(mean log-probability)), the pre-route estimator (lower score: more likely right),
  prompt length (shorter: more likely right) and a random score;
- router quality (APGR, CPT(50%), CPT(80%)) of: random, prompt length, the pre-route estimator
  alone, the cascade alone (every request starts on the edge; the confidence escalates), and the
  two-stage router (the estimator sends its hardest `PRE_ROUTE_SHARE` straight to the cloud, the
  confidence decides the rest);
- what the cascade costs at its CPT(50%) point: the edge tokens spent on requests escalated anyway,
  and the time they took (p50/p99, measured when the answers were generated).

The strong model's correctness: GPT-4's (RouteLLM's MMLU grades) on `mmlu`; Llama-3.1-Nemotron-51B's
(LLMRouter's scores) on `commonsense_qa` and `arc_challenge`; on the generated arithmetic and on
TruthfulQA, where no strong model's grades exist, it is taken as right (an assumption, reported).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.cascade import FloatArray, apply, auroc, feature_matrix, fit_calibration
from hyrouter.models.edge_answers import TASKS, read_answers
from hyrouter.models.quality import quality_curve, summarize
from hyrouter.models.routing_data import SMOLLM2, EdgeModel, default_data_dir
from hyrouter.router import ChatMessage, load_estimator
from hyrouter.router._onnx_estimator import file_sha256

#: The share of requests the two-stage router's estimator sends straight to the cloud.
PRE_ROUTE_SHARE = 0.1
STRONG_LLMROUTER = "llama-3.1-nemotron-51b-instruct"
#: The pre-route estimator: the one the demo config routes with.
DEFAULT_ESTIMATOR = "static-minilm"
#: Tasks the shipped estimator's training data includes (LLMRouter's train split): in distribution.
ESTIMATOR_SEEN = ("commonsense_qa", "arc_challenge")


def strong_correct(task: str, rows: Sequence[dict[str, Any]], data_dir: Path) -> tuple[FloatArray, str]:
    """The strong model's correctness on each row, and where it comes from."""
    if task == "mmlu":
        graded: dict[tuple[str, int], float] = {}
        path = data_dir / "routellm-mixtral-gpt4" / "mmlu_correctness.csv"
        with path.open(encoding="utf-8", newline="") as fh:
            for rec in csv.DictReader(fh):
                graded[(rec["subject"], int(rec["mmlu_idx"]))] = float(rec["gpt4_1106_correct"] == "True")
        return np.asarray([graded[(r["subject"], r["mmlu_idx"])] for r in rows]), "gpt-4-1106 (RouteLLM)"
    if task in ("commonsense_qa", "arc_challenge"):
        items = {item["idx"]: item for item in TASKS[task].items(data_dir, max(r["idx"] for r in rows) + 1)}
        scores = [float(items[r["idx"]]["scores"][STRONG_LLMROUTER]) for r in rows]
        return np.asarray(scores), f"{STRONG_LLMROUTER} (LLMRouter)"
    return np.ones(len(rows)), "assumed right (no strong model's grades)"


def two_stage_scores(pre: FloatArray, confidence: FloatArray, share: float = PRE_ROUTE_SHARE) -> FloatArray:
    """Escalation order of the two-stage router: the estimator's top `share` first (straight to the
    cloud), then the rest by confidence, least confident first."""
    cut = np.quantile(pre, 1.0 - share, method="higher") if share > 0 else np.inf
    return np.where(pre >= cut, 2.0 + pre, 1.0 - confidence)


def cascade_cost(
    order_scores: FloatArray,
    straight: npt.NDArray[np.bool_],
    rows: Sequence[dict[str, Any]],
    cloud_fraction: float,
) -> dict[str, float]:
    """The edge's work on requests escalated by the confidence when `cloud_fraction` goes to the cloud."""
    n = len(rows)
    k = round(cloud_fraction * n)
    escalated = np.argsort(-order_scores, kind="stable")[:k]
    wasted = [i for i in escalated if not straight[i]]
    tokens = np.asarray([rows[i]["completion_tokens"] for i in wasted], dtype=np.float64)
    ms = np.asarray([rows[i]["elapsed_ms"] for i in wasted], dtype=np.float64)
    all_tokens = float(sum(r["completion_tokens"] for r in rows))
    return {
        "cloud_fraction": round(k / n, 4),
        "escalated_after_edge": len(wasted),
        "edge_tokens_wasted_per_request": round(float(tokens.sum()) / n, 3),
        "edge_tokens_wasted_share": round(float(tokens.sum()) / all_tokens, 4) if all_tokens else 0.0,
        "added_latency_ms_p50": round(float(np.percentile(ms, 50)), 1) if len(ms) else 0.0,
        "added_latency_ms_p99": round(float(np.percentile(ms, 99)), 1) if len(ms) else 0.0,
    }


def task_report(
    task: str,
    rows: Sequence[dict[str, Any]],
    calibration: dict[str, Any],
    estimator: Any,
    data_dir: Path,
) -> dict[str, Any]:
    """The report of one task (see the module docstring)."""
    good = np.asarray([1.0 if r["correct"] else 0.0 for r in rows])
    strong, strong_source = strong_correct(task, rows, data_dir)
    confidence = apply(calibration, feature_matrix(rows, calibration["features"]))
    uncalibrated = np.exp(feature_matrix(rows, ["mean_logprob"])[:, 0])
    pre = np.asarray([estimator.score([ChatMessage(role="user", content=r["prompt"])]) for r in rows])
    length = np.asarray([float(len(r["prompt"])) for r in rows])
    rng = np.random.default_rng(0)
    routers = {
        "random": np.full(len(rows), 0.5),
        "prompt-length": length,
        "pre-route": pre,
        "cascade": 1.0 - confidence,
        "two-stage": two_stage_scores(pre, confidence),
    }
    curves = {name: quality_curve(scores, good, strong) for name, scores in routers.items()}
    straight = routers["two-stage"] >= 2.0
    cascade_at = curves["two-stage"].cpt(0.5)
    return {
        "family": TASKS[task].family,
        "items": len(rows),
        "edge_right": round(float(good.mean()), 4),
        "strong_right": round(float(strong.mean()), 4),
        "strong_source": strong_source,
        "estimator_saw_task": task in ESTIMATOR_SEEN,
        "auroc": {
            "calibrated": _round(auroc(confidence, good)),
            "uncalibrated": _round(auroc(uncalibrated, good)),
            "pre-route": _round(auroc(-pre, good)),
            "prompt-length": _round(auroc(-length, good)),
            "random": _round(auroc(rng.random(len(rows)), good)),
        },
        "routers": {name: summarize(curve) for name, curve in curves.items()},
        "cost_at_two_stage_cpt50": cascade_cost(routers["two-stage"], straight, rows, cascade_at),
    }


def run_cascade_eval(
    tasks: Sequence[str] | None = None,
    *,
    model: EdgeModel = SMOLLM2,
    estimator: str | None = None,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """The two-stage report on `tasks` (default: every graded task), each with a calibration fitted
    on all the other graded tasks."""
    from hyrouter.models.edge_labels import model_file

    data_dir = data_dir or default_data_dir()
    name, _, version = (estimator or DEFAULT_ESTIMATOR).partition("@")
    scorer = load_estimator(name, version or None)
    gguf = model_file(model)
    digest = file_sha256(gguf)
    report: dict[str, Any] = {
        "model": model.label_dir,
        "protocol": "leave one task out: each task's calibration is fitted on all the other graded tasks",
        "estimator": f"{scorer.name}@{scorer.version}",
        "pre_route_share": PRE_ROUTE_SHARE,
        "tasks": {},
    }
    for task in tasks or list(TASKS):
        others = [t for t in TASKS if t != task]
        calibration = fit_calibration(others, model=model, gguf=gguf, gguf_digest=digest)
        entry = task_report(task, read_answers(task, model), calibration, scorer, data_dir)
        entry["calibration_features"] = calibration["features"]
        report["tasks"][task] = entry
    return report


def format_cascade_table(report: dict[str, Any]) -> str:
    """The report as two fixed-width tables: AUROC per task, then routers per task."""
    lines = [
        f"{report['protocol']}; pre-route {report['estimator']} sends its top "
        f"{report['pre_route_share']:.0%} straight to the cloud",
        f"{'task':16} {'items':>5} {'edge':>5} {'strong':>6}  AUROC(edge right): "
        f"{'calib':>6} {'uncal':>6} {'pre':>6} {'length':>6} {'random':>6}",
    ]
    for task, t in report["tasks"].items():
        a = t["auroc"]
        lines.append(
            f"{task:16} {t['items']:5d} {t['edge_right']:5.2f} {t['strong_right']:6.2f}  {'':19}"
            f"{a['calibrated']:6.3f} {a['uncalibrated']:6.3f} {a['pre-route']:6.3f} "
            f"{a['prompt-length']:6.3f} {a['random']:6.3f}  ({','.join(t['calibration_features'])})"
        )
    lines.append(f"{'task':16} {'router':14} {'APGR':>6} {'CPT50':>6} {'CPT80':>6}")
    for task, t in report["tasks"].items():
        for router, m in t["routers"].items():
            lines.append(f"{task:16} {router:14} {m['apgr']:6.3f} {m['cpt50']:6.3f} {m['cpt80']:6.3f}")
        c = t["cost_at_two_stage_cpt50"]
        lines.append(
            f"{task:16} cost at CPT50 ({c['cloud_fraction']:.0%} cloud): {c['escalated_after_edge']} "
            f"escalated after the edge answered, {c['edge_tokens_wasted_per_request']:.2f} edge tokens "
            f"wasted per request ({c['edge_tokens_wasted_share']:.0%} of edge tokens), added latency p50 "
            f"{c['added_latency_ms_p50']:.0f} ms, p99 {c['added_latency_ms_p99']:.0f} ms"
        )
    return "\n".join(lines)


def _round(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)
