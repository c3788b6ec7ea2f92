"""`hybrid-router models fit --outcomes STORE`: a new estimator version from this deployment's own labels.

    hybrid-router models fit --outcomes sqlite:outcomes.sqlite3 [--registry estimators]
                             [--current static-minilm@1.1.0] [--eval-share 0.2] [--version V] [--force]

The label of a record is "escalation was needed" (1) or "the edge was good enough" (0):

- a judge's verdict (`judged_good`, shadow judging) decides where there is one, whatever answered;
- else a caller's rating decides, but only of an answer the edge gave (target "edge"): at least 0.5
  (1 is "good"; graded ratings run from 0 to 1) → 0, below (-1 is "bad") → 1. A rating of a cloud
  (or cached) answer says nothing about the edge's.
- Every other record (no verdict, no rating; or a rated cloud answer) has no label and is not used;
  nor is one without features.

The head is an L2-regularised logistic regression (numpy, Newton's method) on the frozen encoder's
features (the records' `features`, the current estimator's embedding), its penalty chosen on the newest
fifth of the training records. Records are split by time: the oldest for training, the newest
`eval_share` for evaluation, where APGR, CPT(50%), CPT(80%) of the fitted head are reported beside the
current estimator (the scores it recorded; the evaluation uses the records it scored), prompt length
and random (the mean of 20 draws). Weak quality is "the edge was good enough" (1 - label); the strong
model is taken as good on every request. A fit worse than the current estimator (lower APGR) is refused
unless `force`.

The new version is an entry in the registry folder (`--registry`, default `estimators`): the current
estimator's encoder and tokenizer (copied once per encoder) and a `head` file (`OnnxEstimator` loads
it, checking every file's sha256), with the metrics, the label counts and the split. Serve it by
naming the folder and the version in the config (`estimator: {registry: ..., version: ...}`), first
as a canary (`estimator.candidate`).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.quality import NoQualityGapError, quality_curve
from hyrouter.router._onnx_estimator import MANIFEST_FORMAT, MANIFEST_NAME, file_sha256, read_manifest
from hyrouter.router._outcomes import OutcomeStore

DEFAULT_REGISTRY = Path("estimators")
DEFAULT_EVAL_SHARE = 0.2
PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
RANDOM_DRAWS = 20
#: A rating at or above this says the edge's answer was good enough.
GOOD_RATING = 0.5

FloatArray = npt.NDArray[np.float64]


class FitRefused(RuntimeError):
    """The fitted head routes worse than the current estimator on the newest records (or cannot be
    fitted or judged); `force` writes it anyway where it exists."""


def open_store(spec: str) -> OutcomeStore:
    """The outcome store `spec` names: `sqlite:PATH`."""
    kind, _, where = spec.partition(":")
    if kind == "sqlite" and where:
        from hyrouter.router._outcome_sqlite import SqliteOutcomeStore

        return SqliteOutcomeStore(where)
    # `models` may not import `cloud` (the layering test), where the DynamoDB store lives: reading a
    # table from `models fit` needs a seam that does not exist yet.
    raise ValueError(f"outcome store {spec!r}: expected sqlite:PATH (dynamodb:TABLE is not supported yet)")


def escalation_label(record: dict[str, Any]) -> int | None:
    """1 where escalating was needed, 0 where the edge was good enough, None where the record says not."""
    judged = record.get("judged_good")
    if judged is not None:
        return 0 if judged else 1
    rating = record.get("rating")
    if rating is None or record.get("target") != "edge":
        return None
    return 0 if rating >= GOOD_RATING else 1


@dataclass
class Labelled:
    """The labelled records with features, oldest first, as arrays."""

    features: FloatArray
    labels: FloatArray
    scores: FloatArray  # the score each record's estimator recorded
    prompt_tokens: FloatArray
    estimators: list[str]
    created_at: FloatArray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: Any) -> Labelled:
        """The rows `index` selects."""
        return Labelled(
            self.features[index],
            self.labels[index],
            self.scores[index],
            self.prompt_tokens[index],
            [self.estimators[i] for i in np.arange(len(self))[index]],
            self.created_at[index],
        )


def labelled_records(records: Iterable[dict[str, Any]], dims: int | None = None) -> Labelled:
    """The records with a label and features (of `dims` values; None: as many as the first has)."""
    rows: list[tuple[list[float], int, float, int, str, float]] = []
    for r in records:
        label, features = escalation_label(r), r.get("features")
        if label is None or not features:
            continue
        dims = dims or len(features)
        if len(features) != dims:
            continue
        rows.append((features, label, r["score"], r["prompt_tokens"], r["estimator"], r["created_at"]))
    rows.sort(key=lambda row: row[5])
    return Labelled(
        np.asarray([r[0] for r in rows], dtype=np.float64).reshape(len(rows), dims or 0),
        np.asarray([r[1] for r in rows], dtype=np.float64),
        np.asarray([r[2] for r in rows], dtype=np.float64),
        np.asarray([r[3] for r in rows], dtype=np.float64),
        [r[4] for r in rows],
        np.asarray([r[5] for r in rows], dtype=np.float64),
    )


@dataclass(frozen=True)
class Head:
    """A logistic head on raw features: sigmoid(weights · x + bias)."""

    weights: FloatArray
    bias: float
    penalty: float

    def scores(self, features: FloatArray) -> FloatArray:
        """The head's probabilities."""
        logits = np.clip(features @ self.weights + self.bias, -60.0, 60.0)
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def logistic_regression(x: FloatArray, y: FloatArray, penalty: float, iterations: int = 50) -> Head:
    """L2-regularised logistic regression by Newton's method on standardised features (the bias is
    not penalised); the head returned reads raw features."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    ridge = np.full(z.shape[1], penalty)
    ridge[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -60.0, 60.0)))
        gradient = z.T @ (p - y) + ridge * w
        hessian = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    weights = w[:-1] / scale
    return Head(weights, float(w[-1] - weights @ mean), penalty)


def fit_head(x: FloatArray, y: FloatArray) -> Head:
    """The head whose penalty gives the lowest log-loss on the newest fifth of (x, y), refitted on all."""
    cut = int(len(y) * 0.8)
    if 0 < y[:cut].mean() < 1 and 0 < cut < len(y):
        losses = []
        for penalty in PENALTIES:
            p = np.clip(logistic_regression(x[:cut], y[:cut], penalty).scores(x[cut:]), 1e-9, 1 - 1e-9)
            losses.append(float(-np.mean(y[cut:] * np.log(p) + (1 - y[cut:]) * np.log(1 - p))))
        penalty = PENALTIES[int(np.argmin(losses))]
    else:
        penalty = max(PENALTIES)
    return logistic_regression(x, y, penalty)


def routing_metrics(scores: FloatArray, labels: FloatArray) -> dict[str, float]:
    """APGR, CPT(50%) and CPT(80%) of routing by `scores` where `labels` say escalation was needed."""
    curve = quality_curve(scores, 1.0 - labels, np.ones_like(labels))
    return {
        "apgr": round(curve.apgr(), 4),
        "cpt50": round(curve.cpt(0.5), 4),
        "cpt80": round(curve.cpt(0.8), 4),
    }


def compare(head: Head, evaluation: Labelled, *, seed: int = 0) -> dict[str, Any]:
    """The fitted head beside the recorded (current) scores, prompt length and random, on `evaluation`."""
    y = evaluation.labels
    rng = np.random.default_rng(seed)
    draws = [routing_metrics(rng.random(len(y)), y) for _ in range(RANDOM_DRAWS)]
    return {
        "items": len(y),
        "escalation_needed_share": round(float(y.mean()), 4),
        "fitted": routing_metrics(head.scores(evaluation.features), y),
        "current": routing_metrics(evaluation.scores, y),
        "prompt_length": routing_metrics(evaluation.prompt_tokens, y),
        "random": {k: round(float(np.mean([d[k] for d in draws])), 4) for k in draws[0]},
    }


@dataclass(frozen=True)
class FitResult:
    """A fitted head, its evaluation, and the registry entry written (None when refused)."""

    head: Head
    report: dict[str, Any]
    entry: dict[str, Any] | None


def fit(
    records: Iterable[dict[str, Any]],
    *,
    current: str | None = None,
    eval_share: float = DEFAULT_EVAL_SHARE,
) -> tuple[Head, dict[str, Any]]:
    """Fit a head on the oldest labelled records and evaluate it on the newest `eval_share`.

    `current` is the estimator (`name@version`) to beat; None: the one that scored most records.
    Raises `FitRefused` where there is too little to fit or to evaluate on.
    """
    data = labelled_records(records)
    if len(data) < 20:
        raise FitRefused(f"{len(data)} labelled records with features: at least 20 are needed")
    current = current or Counter(data.estimators).most_common(1)[0][0]
    cut = round(len(data) * (1.0 - eval_share))
    train, newest = data.take(slice(0, cut)), data.take(slice(cut, None))
    if not 0 < train.labels.mean() < 1:
        raise FitRefused(f"the {len(train)} training records all have the same label")
    head = fit_head(train.features, train.labels)
    evaluation = newest.take(np.asarray([e == current for e in newest.estimators], dtype=bool))
    if len(evaluation) == 0:
        raise FitRefused(f"no record of the newest {len(newest)} was scored by {current}")
    try:
        metrics = compare(head, evaluation)
    except NoQualityGapError as exc:
        raise FitRefused(f"the newest records cannot judge a router: {exc}") from exc
    report = {
        "current": current,
        "labelled_records": len(data),
        "train": {
            "items": len(train),
            "escalation_needed_share": round(float(train.labels.mean()), 4),
            "until": float(train.created_at[-1]),
        },
        "evaluation": {**metrics, "from": float(newest.created_at[0])},
        "penalty": head.penalty,
    }
    return head, report


def find_entry(ident: str, roots: Sequence[Path]) -> tuple[Path, dict[str, Any]]:
    """The registry root and manifest entry of `name@version`, searched in `roots` in order."""
    name, _, version = ident.partition("@")
    for root in roots:
        if not (root / MANIFEST_NAME).exists():
            continue
        for entry in read_manifest(root)["estimators"]:
            if entry["name"] == name and entry["version"] == version:
                return root, entry
    raise FitRefused(f"estimator {ident} is in none of the registries {[str(r) for r in roots]}")


def next_version(current: dict[str, Any], registry: Path) -> str:
    """The current version's first three parts and one more than the highest fourth part in `registry`."""
    stem = ".".join(str(current["version"]).split(".")[:3])
    taken = [0]
    if (registry / MANIFEST_NAME).exists():
        for entry in read_manifest(registry)["estimators"]:
            parts = str(entry["version"]).split(".")
            if entry["name"] == current["name"] and ".".join(parts[:3]) == stem and len(parts) == 4:
                taken.append(int(parts[3]) if parts[3].isdigit() else 0)
    return f"{stem}.{max(taken) + 1}"


def write_version(
    registry: Path,
    base_root: Path,
    base: dict[str, Any],
    head: Head,
    report: dict[str, Any],
    *,
    version: str,
    command: str,
) -> dict[str, Any]:
    """Write the head beside a copy of `base`'s encoder files in `registry`; the manifest entry."""
    registry.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for role in ("model", "tokenizer"):
        spec = base["files"][role]
        target = registry / spec["path"]
        if registry.resolve() != base_root.resolve() and not (
            target.exists() and file_sha256(target) == spec["sha256"]
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base_root / spec["path"], target)
        files[role] = dict(spec)
    folder = registry / f"{base['name']}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    embedding = base.get("embedding") or {}
    head_doc = {
        "input": str(embedding.get("output", "features")),
        "weights": [float(w) for w in head.weights],
        "bias": head.bias,
    }
    (folder / "head.json").write_text(json.dumps(head_doc) + "\n", encoding="utf-8")
    files["head"] = {"path": f"{folder.name}/head.json", "sha256": file_sha256(folder / "head.json")}
    entry: dict[str, Any] = {
        "name": base["name"],
        "version": version,
        "kind": "logistic head fitted to this deployment's outcomes, on the frozen encoder of "
        f"{base['name']}@{base['version']}",
        "max_tokens": base.get("max_tokens", 256),
        "files": files,
        "fit": {"command": command, **report},
    }
    if embedding:
        entry["embedding"] = embedding
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "estimators": []}
    if (registry / MANIFEST_NAME).exists():
        manifest = read_manifest(registry)
    manifest["estimators"] = [
        e for e in manifest["estimators"] if (e["name"], e["version"]) != (entry["name"], version)
    ] + [entry]
    (registry / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return entry


def fit_outcomes(
    store: OutcomeStore,
    registry: Path,
    *,
    current: str | None = None,
    eval_share: float = DEFAULT_EVAL_SHARE,
    version: str | None = None,
    force: bool = False,
    since: float | None = None,
    command: str = "hybrid-router models fit",
    base_roots: Sequence[Path] = (),
) -> FitResult:
    """Fit, compare and (unless it is worse than the current estimator, or `force`) write a version."""
    from hyrouter.models.artefacts import ARTEFACTS_DIR

    head, report = fit(store.records(since), current=current, eval_share=eval_share)
    evaluation = report["evaluation"]
    worse = evaluation["fitted"]["apgr"] < evaluation["current"]["apgr"]
    report["better_than_current"] = not worse
    if worse and not force:
        return FitResult(head, report, None)
    base_root, base = find_entry(report["current"], [registry, *base_roots, ARTEFACTS_DIR])
    chosen = version or next_version(base, registry)
    entry = write_version(registry, base_root, base, head, report, version=chosen, command=command)
    return FitResult(head, report, entry)


def add_fit_command(subparsers: Any) -> None:
    """Register `hybrid-router models fit`."""
    f = subparsers.add_parser("fit", help="fit a new estimator version to this deployment's outcome records")
    f.add_argument("--outcomes", required=True, help="sqlite:PATH")
    f.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="registry folder to write to")
    f.add_argument("--current", help="name@version to beat (default: the one that scored most records)")
    f.add_argument("--eval-share", type=float, default=DEFAULT_EVAL_SHARE, help="newest share to evaluate on")
    f.add_argument("--version", help="version to write (default: the current's, plus .N)")
    f.add_argument("--since", type=float, help="use records created at or after this Unix time")
    f.add_argument("--force", action="store_true", help="write the version even when it is worse")
    f.set_defaults(func=_cmd_fit)


def _cmd_fit(args: Any) -> int:
    import shlex

    store = open_store(args.outcomes)
    try:
        result = fit_outcomes(
            store,
            args.registry,
            current=args.current,
            eval_share=args.eval_share,
            version=args.version,
            force=args.force,
            since=args.since,
            command="hybrid-router " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
    except FitRefused as exc:
        print(f"fit refused: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(result.report, indent=2))
    if result.entry is None:
        print(
            "fit refused: worse than the current estimator on the newest records (--force writes it)",
            file=sys.stderr,
        )
        return 1
    print(
        f"wrote {result.entry['name']}@{result.entry['version']} to {args.registry}; try it as a canary: "
        f"estimator: {{registry: {args.registry}, candidate: {{name: {result.entry['name']}, "
        f"version: '{result.entry['version']}'}}}}",
        file=sys.stderr,
    )
    return 0
