"""A simulated deployment: routing data replayed as traffic, and the learning curve of `models fit`.

python -m bench.learning_curve [--weak MODEL] [--strong MODEL] [--plot docs/learning-curve.png]
(default pair: llama-3.1-8b-instruct / llama-3.3-nemotron-super-49b-v1)

No real traffic exists, so the llmrouter-9model queries (train and test splits, every task; shared/data)
are the traffic: shuffled within each task (seed 0), then one query of each task in turn, so that the
mix is the same all along. Each query goes through the real `RoutingEngine` with the committed ONNX
estimator (static-minilm 1.1.0: real scores, real features) and a real SQLite outcome store; the edge
and cloud backends are fakes (only the decision and the features matter here). Records are then
labelled as the live path labels them: a shadow judge (`ShadowJudge`) samples only answers the edge
was decided for, so only edge-decided records (at the shipped estimator's threshold, 0.5; every one
of them, a sample rate of 1) get a verdict, through the interface the live path uses,
`OutcomeStore.judge(record_id, good, judge)`: good when the weak model scored at least as well as the
strong one (what a shadow judge comparing the two answers says). Cloud-decided records get no label
(`models fit` reads no rating of a cloud answer either), so the head learns from the edge's side of
the threshold only; `labelled` says how many of the first N that is.

The fit code of `models fit` (`labelled_records`, `fit_head`) is run on the first N = 100, 300, 1000,
3000 records read back from the store, twice: the default head (the embedding and the prompt's length,
log(1 + `prompt_chars`)) and the embedding alone (`--features embedding`, the head before the length
was added); every N is evaluated on the same traffic that follows them all (every record after the
3000th, whichever side decided it: the benchmark's measurement, not labels the deployment has), with
the weak and strong models' real scores: APGR, CPT(50%), CPT(80%) of the fitted heads,
the shipped estimator (the scores it recorded), prompt length and random (the mean of 20 draws), all
in this one run; `*_judged_labels` are the same on the judges' binary labels (weak good enough or not,
the strong model good on all), the metric `models fit` computes. `models_fit_decision` says what
`models fit` itself would do with those N records (its own time split and acceptance check: both
labels at least 20 times in the newest fifth, and the bootstrap interval of the APGR difference to
the current estimator above 0), with the difference and interval it saw. The head fitted on 3000 is
also written as a registry version and scored through `OnnxEstimator` on the evaluation queries, to
show the run-time artefact gives the head's scores.

Caveat: the shipped estimator was trained on the train split of 10 of these 14 tasks (with the weak
models' scores as target), so on this traffic it is partly scored in-sample; the per-task comparison
on the tasks it never saw (agentverse-mgsm, gpqa, gsm8k, mmlu) is reported as `unseen_tasks`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import report
from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.models.fit import (
    DEFAULT_FEATURES,
    FEATURE_SETS,
    FitRefused,
    fit,
    fit_head,
    labelled_records,
    write_version,
)
from hyrouter.models.quality import quality_curve
from hyrouter.models.routing_data import default_data_dir
from hyrouter.router import (
    ChatCompletionRequest,
    OutcomeWriter,
    RoutingEngine,
    Tenant,
    load_estimator,
    parse_config,
)
from hyrouter.router._onnx_estimator import OnnxEstimator, read_manifest
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.fakes import FakeBackend

SIZES = (100, 300, 1000, 3000)
UNSEEN = ("agentverse-mgsm", "gpqa", "gsm8k", "mmlu")
CURRENT = ("static-minilm", "1.1.0")
TENANT = Tenant("replay", "free")
RANDOM_DRAWS = 20


def traffic(data_dir: Path, weak: str, strong: str) -> list[dict[str, Any]]:
    """The queries in replay order: shuffled within each task, then one of each task in turn."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with (data_dir / "llmrouter-9model" / "scores.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            by_task[row["task_name"]].append(
                {
                    "task": row["task_name"],
                    "query": row["query"],
                    "weak": row["scores"][weak],
                    "strong": row["scores"][strong],
                }
            )
    rng = np.random.default_rng(0)
    queues = []
    for task in sorted(by_task):
        rows = by_task[task]
        queues.append([rows[i] for i in rng.permutation(len(rows))])
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop())
    return order


async def replay(rows: list[dict[str, Any]], store_path: Path) -> list[str]:
    """Route every query through the real engine into the SQLite store; the record ids, in order."""
    config = parse_config({"tiers": {"free": {"threshold": 0.5}}})
    writer = OutcomeWriter(SqliteOutcomeStore(store_path), salt="replay")
    engine = RoutingEngine(
        config,
        estimator=load_estimator(*CURRENT),
        edge=FakeBackend("edge", context_window=1_000_000),
        cloud=FakeBackend("cloud", context_window=1_000_000),
        outcomes=writer,
        log_decisions=False,
    )
    ids = []
    for row in rows:
        request = ChatCompletionRequest.model_validate(
            {"model": config.served_model_name, "messages": [{"role": "user", "content": row["query"]}]}
        )
        response = await engine.complete(request, TENANT)
        ids.append(response.id)
    await engine.aclose()
    return ids


def metrics(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    curve = quality_curve(scores, weak, strong)
    return {
        "apgr": round(curve.apgr(), 4),
        "cpt50": round(curve.cpt(0.5), 4),
        "cpt80": round(curve.cpt(0.8), 4),
    }


def random_metrics(weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(1)
    draws = [metrics(rng.random(len(weak)), weak, strong) for _ in range(RANDOM_DRAWS)]
    return {k: round(float(np.mean([d[k] for d in draws])), 4) for k in draws[0]}


def run(weak_model: str, strong_model: str, plot: Path | None) -> dict[str, Any]:
    data_dir = default_data_dir()
    rows = traffic(data_dir, weak_model, strong_model)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "outcomes.sqlite3"
        ids = asyncio.run(replay(rows, store_path))
        replay_s = time.perf_counter() - started
        store = SqliteOutcomeStore(store_path)
        decided = {r["id"]: r for r in store.records()}
        edge_decided = 0
        for record_id, row in zip(ids, rows, strict=True):
            r = decided[record_id]
            if r["target"] == "edge" and not r["fallback"]:  # what ShadowJudge samples
                store.judge(record_id, row["weak"] >= row["strong"], "replay-judge")
                edge_decided += 1
        records = list(store.records())
        store.close()
        by_id = {r["id"]: r for r in records}
        ordered = [by_id[i] for i in ids]  # replay order (created_at ties broken by it)
        for i, r in enumerate(ordered):
            r["created_at"] = float(i)
        # The evaluation's labels are the benchmark's, on every later request (not only judged ones).
        evaluation = [
            {**r, "judged_good": row["weak"] >= row["strong"]}
            for r, row in zip(ordered[max(SIZES) :], rows[max(SIZES) :], strict=True)
        ]
        extras = FEATURE_SETS[DEFAULT_FEATURES]
        data = labelled_records(evaluation, extras=extras)
        assert len(data) == len(evaluation)  # every later request, in order
        weak = np.asarray([row["weak"] for row in rows[max(SIZES) :]])
        strong = np.asarray([row["strong"] for row in rows[max(SIZES) :]])
        # The fake backends report no real usage: prompt length is the query's length in characters.
        tokens = np.asarray([float(len(row["query"])) for row in rows[max(SIZES) :]])
        tasks = [row["task"] for row in rows[max(SIZES) :]]
        unseen = np.asarray([t in UNSEEN for t in tasks])
        # The metric `models fit` itself computes: the judges' binary labels, the strong model good on all.
        judged_weak, judged_strong = 1.0 - data.labels, np.ones_like(data.labels)
        judged_base = {
            "shipped": metrics(data.scores, judged_weak, judged_strong),
            "prompt_length": metrics(tokens, judged_weak, judged_strong),
            "random": random_metrics(judged_weak, judged_strong),
        }
        baselines = {
            "shipped": metrics(data.scores, weak, strong),
            "prompt_length": metrics(tokens, weak, strong),
            "random": random_metrics(weak, strong),
        }
        unseen_base = {
            "shipped": metrics(data.scores[unseen], weak[unseen], strong[unseen]),
            "prompt_length": metrics(tokens[unseen], weak[unseen], strong[unseen]),
            "random": random_metrics(weak[unseen], strong[unseen]),
        }
        curve = []
        head = None
        for n in SIZES:
            train = labelled_records(ordered[:n], extras=extras)
            head = fit_head(train.inputs, train.labels, extras)
            scores = head.scores(data.inputs)
            plain = fit_head(train.features, train.labels)
            plain_scores = plain.scores(data.features)
            try:
                _, fit_report = fit(ordered[:n], current="@".join(CURRENT))
                refusal = fit_report["refusal"]
                decision: dict[str, Any] = {
                    "accepted": refusal is None,
                    "refusal": refusal,
                    "evaluation_items": fit_report["evaluation"]["items"],
                    "evaluation_escalation_needed": fit_report["evaluation"]["escalation_needed"],
                    "fitted_minus_current": fit_report["evaluation"]["fitted_minus_current"],
                }
            except FitRefused as exc:
                decision = {"accepted": False, "refusal": str(exc)}
            curve.append(
                {
                    "outcomes": n,
                    "labelled": len(train),
                    "escalation_needed_share": round(float(train.labels.mean()), 4),
                    "penalty": head.penalty,
                    "fitted": metrics(scores, weak, strong),
                    "fitted_unseen_tasks": metrics(scores[unseen], weak[unseen], strong[unseen]),
                    "fitted_judged_labels": metrics(scores, judged_weak, judged_strong),
                    "embedding_only": {
                        "penalty": plain.penalty,
                        "fitted": metrics(plain_scores, weak, strong),
                        "fitted_unseen_tasks": metrics(plain_scores[unseen], weak[unseen], strong[unseen]),
                    },
                    "models_fit_decision": decision,
                }
            )
        assert head is not None
        check = runtime_check(head, ordered[: max(SIZES)], rows[max(SIZES) :], Path(tmp) / "estimators")
    result = {
        "pair": f"{weak_model}/{strong_model}",
        "traffic": len(rows),
        "evaluation_items": len(evaluation),
        "unseen_task_items": int(unseen.sum()),
        "weak_good_enough_share": round(float(np.mean([r["weak"] >= r["strong"] for r in rows])), 4),
        "labels": "judge verdicts on edge-decided records only (threshold 0.5, sample rate 1)",
        "edge_decided_share": round(edge_decided / len(rows), 4),
        "replay_s": round(replay_s, 1),
        "baselines": baselines,
        "baselines_unseen_tasks": unseen_base,
        "baselines_judged_labels": judged_base,
        "curve": curve,
        "runtime_artefact": check,
    }
    if plot is not None:
        draw(result, plot)
    return result


def runtime_check(
    head: Any, records: list[dict[str, Any]], rows: list[dict[str, Any]], registry: Path
) -> dict[str, Any]:
    """Write the head as a version and score queries through `OnnxEstimator`: the same as the head's."""
    _, fit_report = fit(records, current="@".join(CURRENT))
    base = next(e for e in read_manifest(ARTEFACTS_DIR)["estimators"] if (e["name"], e["version"]) == CURRENT)
    entry = write_version(registry, ARTEFACTS_DIR, base, head, fit_report, version="1.1.0.1", command="bench")
    estimator = OnnxEstimator(registry, entry)
    from hyrouter.router import ChatMessage
    from hyrouter.router._estimator import conversation_text

    sample = rows[:: max(1, len(rows) // 200)]
    diffs = []
    for row in sample:
        messages = [ChatMessage(role="user", content=row["query"])]
        score, features = estimator.score_with_features(messages)
        assert features is not None
        x = np.append(np.asarray(features, dtype=np.float64), np.log1p(len(conversation_text(messages))))
        expected = float(head.scores(x[None, :])[0])
        diffs.append(abs(score - expected))
    return {"version": "static-minilm@1.1.0.1", "queries": len(sample), "max_abs_diff": float(max(diffs))}


def draw(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p["outcomes"] for p in result["curve"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (axes[0], "apgr", "APGR (higher is better)"),
        (axes[1], "cpt50", "CPT(50%) (lower is better)"),
    ):
        ax.plot(sizes, [p["fitted"][key] for p in result["curve"]], "o-", label="fitted: embedding + length")
        ax.plot(
            sizes,
            [p["embedding_only"]["fitted"][key] for p in result["curve"]],
            "s--",
            color="C2",
            label="fitted: embedding only",
        )
        for name, style in (("shipped", "--"), ("prompt_length", ":"), ("random", "-.")):
            ax.axhline(
                result["baselines"][name][key],
                linestyle=style,
                color="grey" if name != "shipped" else "C1",
                label=name.replace("_", " "),
            )
        ax.set_xscale("log")
        ax.set_xlabel("requests replayed (edge-decided ones judged)")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Learning curve, {result['pair']}, evaluated on the next {result['evaluation_items']} requests",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weak", default="llama-3.1-8b-instruct")
    parser.add_argument("--strong", default="llama-3.3-nemotron-super-49b-v1")
    parser.add_argument("--plot", type=Path, default=Path("docs/learning-curve.png"))
    args = parser.parse_args()
    report("learning_curve", run(args.weak, args.strong, args.plot))


if __name__ == "__main__":
    main()
