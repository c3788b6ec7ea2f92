"""`hybrid-router models fit --outcomes STORE`: a new estimator version from this deployment's own labels.

    hybrid-router models fit --outcomes sqlite:outcomes.sqlite3|dynamodb:TABLE [--registry estimators]
                             [--current static-minilm@1.1.0] [--eval-share 0.2] [--version V]
                             [--features embedding+length|embedding] [--force]

The label of a record is "escalation was needed" (1) or "the edge was good enough" (0):

- a judge's verdict (`judged_good`, shadow judging) decides where there is one (shadow judging
  samples only answers the edge was decided for, so cloud-decided records have none);
- else a caller's rating decides, but only of an answer the edge gave (target "edge"): at least 0.5
  (1 is "good"; graded ratings run from 0 to 1) → 0, below (-1 is "bad") → 1. A rating of a cloud
  (or cached) answer says nothing about the edge's.
- Every other record (no verdict, no rating; or a rated cloud answer) has no label and is not used;
  nor is one without features.

Only records scored by an estimator of the current one's name (`--current`, else the name that scored
most labelled records) are used: features are that encoder's, and another estimator's (another name,
or another width) mean something else. The report counts what was left out
(`left_out_other_estimator`) and each tenant's labels (`labels_per_tenant`), since every tenant's
labels train the one head of the deployment: one tenant's skew shows there.

The head is an L2-regularised logistic regression (numpy, Newton's method) on the frozen encoder's
features (the records' `features`, the current estimator's normalised embedding) and, by default
(`--features embedding+length`), the prompt's length: log(1 + the record's `prompt_chars`), the
characters of the conversation's text, which the run-time estimator computes from the conversation
(`HEAD_EXTRAS`; the answering model's `prompt_tokens` is known only after the request, so it cannot be
a feature). The length is not penalised (nor is the bias): a strong penalty leaves a head on length
alone. Records written before `prompt_chars` existed are left out (`--features embedding` uses them).
The penalty (`PENALTIES`, 1e-3 to 1e3, log-spaced) is the one with the lowest log-loss on the newest
fifth of the training records, fitted on the older four fifths; the head is then refitted on all.

Records are split by time: the oldest for training, the newest `eval_share` for evaluation, where
APGR, CPT(50%), CPT(80%) of the fitted head are reported beside the current estimator (the scores it
recorded; the evaluation uses the records it scored), prompt length and random (the mean of 20 draws).
Weak quality is "the edge was good enough" (1 - label); the strong model is taken as good on every
request. The acceptance check is about noise as much as about the mean: the evaluation must hold at
least `MIN_PER_LABEL` records of each label, and the 95% interval of the APGR difference (fitted minus
current; a stratified bootstrap of the evaluation records, `BOOTSTRAP` resamples) must lie above 0.
Otherwise the fit is refused, unless `force`.

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
from hyrouter.models.stores import open_store
from hyrouter.router._onnx_estimator import (
    HEAD_EXTRAS,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    OnnxEstimator,
    file_sha256,
    read_manifest,
)
from hyrouter.router._outcomes import OutcomeStore

DEFAULT_REGISTRY = Path("estimators")
DEFAULT_EVAL_SHARE = 0.2
#: The penalties tried (on standardised features): 1e-3 to 1e3, two a decade.
PENALTIES = tuple(float(p) for p in np.logspace(-3, 3, 13))
RANDOM_DRAWS = 20
#: The fewest records of each label the evaluation must hold for its verdict to count.
MIN_PER_LABEL = 20
#: Bootstrap resamples of the evaluation for the interval of the APGR difference.
BOOTSTRAP = 1000
#: What the head reads: the encoder's features, and the extras (`HEAD_EXTRAS`) after them.
FEATURE_SETS: dict[str, tuple[str, ...]] = {"embedding+length": ("log_prompt_chars",), "embedding": ()}
DEFAULT_FEATURES = "embedding+length"
#: A rating at or above this says the edge's answer was good enough.
GOOD_RATING = 0.5

FloatArray = npt.NDArray[np.float64]


class FitRefused(RuntimeError):
    """There is too little to fit a head or to evaluate one on."""


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
    #: the head's extra inputs (`extra_names`, `HEAD_EXTRAS`), one column each
    extras: FloatArray
    extra_names: tuple[str, ...] = ()
    #: labelled records with features left out because they lack what an extra is computed from
    lacking_extras: int = 0
    #: labelled records with features left out because another estimator (by name), or features of
    #: another width, scored them
    other_estimator: int = 0
    #: the tenant of each record
    tenants: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> FloatArray:
        """What the head reads: the features, then the extras."""
        return np.hstack([self.features, self.extras])

    def take(self, index: Any) -> Labelled:
        """The rows `index` selects."""
        return Labelled(
            self.features[index],
            self.labels[index],
            self.scores[index],
            self.prompt_tokens[index],
            [self.estimators[i] for i in np.arange(len(self))[index]],
            self.created_at[index],
            self.extras[index],
            self.extra_names,
            tenants=tuple(self.tenants[i] for i in np.arange(len(self))[index]) if self.tenants else (),
        )

    def per_tenant(self) -> dict[str, dict[str, int]]:
        """Each tenant's labels: how many said escalation was needed, how many the edge was good enough."""
        counts: dict[str, dict[str, int]] = {}
        for tenant, label in zip(self.tenants, self.labels, strict=True):
            c = counts.setdefault(tenant, {"escalation_needed": 0, "edge_good": 0})
            c["escalation_needed" if label else "edge_good"] += 1
        return dict(sorted(counts.items(), key=lambda kv: -sum(kv[1].values())))


def estimator_name(ident: str) -> str:
    """The name of an estimator `name@version`."""
    return ident.partition("@")[0]


def labelled_records(
    records: Iterable[dict[str, Any]],
    dims: int | None = None,
    extras: Sequence[str] = (),
    *,
    estimator: str | None = None,
) -> Labelled:
    """The records with a label and features (of `dims` values; None: the most common width) and,
    where `extras` are asked for, the `prompt_chars` they are computed from. With `estimator` (a name,
    or `name@version`), only records an estimator of that name scored; the others, and those of
    another width, are counted in `other_estimator`."""
    name = estimator_name(estimator) if estimator else None
    rows: list[tuple[list[float], int, float, int, str, float, list[float], str]] = []
    lacking = other = 0
    candidates: list[tuple[dict[str, Any], int, list[float]]] = []
    for r in records:
        label, features = escalation_label(r), r.get("features")
        if label is None or not features:
            continue
        if name is not None and estimator_name(str(r.get("estimator") or "")) != name:
            other += 1
            continue
        candidates.append((r, label, features))
    if dims is None and candidates:
        dims = Counter(len(f) for _, _, f in candidates).most_common(1)[0][0]
    for r, label, features in candidates:
        if len(features) != dims:
            other += 1
            continue
        values: list[float] = []
        if extras:
            chars = r.get("prompt_chars")
            if chars is None:
                lacking += 1
                continue
            values = [HEAD_EXTRAS[extra](int(chars)) for extra in extras]
        rows.append(
            (
                features,
                label,
                r["score"],
                r["prompt_tokens"],
                r["estimator"],
                r["created_at"],
                values,
                str(r.get("tenant") or ""),
            )
        )
    rows.sort(key=lambda row: row[5])
    return Labelled(
        np.asarray([r[0] for r in rows], dtype=np.float64).reshape(len(rows), dims or 0),
        np.asarray([r[1] for r in rows], dtype=np.float64),
        np.asarray([r[2] for r in rows], dtype=np.float64),
        np.asarray([r[3] for r in rows], dtype=np.float64),
        [r[4] for r in rows],
        np.asarray([r[5] for r in rows], dtype=np.float64),
        np.asarray([r[6] for r in rows], dtype=np.float64).reshape(len(rows), len(extras)),
        tuple(extras),
        lacking,
        other,
        tuple(r[7] for r in rows),
    )


def most_scored(records: Iterable[dict[str, Any]]) -> str | None:
    """The estimator (`name@version`) that scored the most labelled records with features."""
    counts = Counter(
        str(r["estimator"]) for r in records if r.get("features") and escalation_label(r) is not None
    )
    return counts.most_common(1)[0][0] if counts else None


@dataclass(frozen=True)
class Head:
    """A logistic head on raw inputs (features, then extras): sigmoid(weights · x + bias)."""

    weights: FloatArray
    bias: float
    penalty: float
    extras: tuple[str, ...] = ()

    def scores(self, features: FloatArray) -> FloatArray:
        """The head's probabilities."""
        logits = np.clip(features @ self.weights + self.bias, -60.0, 60.0)
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def logistic_regression(
    x: FloatArray, y: FloatArray, penalty: float, iterations: int = 50, *, free: int = 0
) -> Head:
    """L2-regularised logistic regression by Newton's method on standardised features (the bias and
    the last `free` columns are not penalised); the head returned reads raw features."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    ridge = np.full(z.shape[1], penalty)
    ridge[len(ridge) - 1 - free :] = 0.0
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


def fit_head(x: FloatArray, y: FloatArray, extras: Sequence[str] = ()) -> Head:
    """The head whose penalty gives the lowest log-loss on the newest fifth of (x, y) (rows oldest
    first) when fitted on the older four fifths, refitted on all. The last `len(extras)` columns of
    `x` are the extras, not penalised."""
    cut = int(len(y) * 0.8)
    free = len(extras)
    if 0 < cut < len(y) and 0 < y[:cut].mean() < 1:
        losses = []
        for penalty in PENALTIES:
            head = logistic_regression(x[:cut], y[:cut], penalty, free=free)
            p = np.clip(head.scores(x[cut:]), 1e-9, 1 - 1e-9)
            losses.append(float(-np.mean(y[cut:] * np.log(p) + (1 - y[cut:]) * np.log(1 - p))))
        penalty = PENALTIES[int(np.argmin(losses))]
    else:
        penalty = max(PENALTIES)
    head = logistic_regression(x, y, penalty, free=free)
    return Head(head.weights, head.bias, penalty, tuple(extras))


def routing_metrics(scores: FloatArray, labels: FloatArray) -> dict[str, float]:
    """APGR, CPT(50%) and CPT(80%) of routing by `scores` where `labels` say escalation was needed."""
    curve = quality_curve(scores, 1.0 - labels, np.ones_like(labels))
    return {
        "apgr": round(curve.apgr(), 4),
        "cpt50": round(curve.cpt(0.5), 4),
        "cpt80": round(curve.cpt(0.8), 4),
    }


def apgr_difference(
    fitted: FloatArray, current: FloatArray, labels: FloatArray, *, resamples: int = BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """APGR of `fitted` minus APGR of `current` on `labels`, with its 95% percentile interval from a
    stratified bootstrap (each resample keeps the number of records of each label)."""

    def apgr(scores: FloatArray, y: FloatArray) -> float:
        return quality_curve(scores, 1.0 - y, np.ones_like(y)).apgr()

    difference = apgr(fitted, labels) - apgr(current, labels)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == value) for value in (0.0, 1.0)]
    draws = []
    for _ in range(resamples):
        index = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        y = labels[index]
        draws.append(apgr(fitted[index], y) - apgr(current[index], y))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {
        "apgr": round(float(difference), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "resamples": resamples,
    }


def compare(head: Head, evaluation: Labelled, *, seed: int = 0) -> dict[str, Any]:
    """The fitted head beside the recorded (current) scores, prompt length and random, on `evaluation`,
    and the bootstrap interval of the APGR difference between the head and the current estimator."""
    y = evaluation.labels
    rng = np.random.default_rng(seed)
    draws = [routing_metrics(rng.random(len(y)), y) for _ in range(RANDOM_DRAWS)]
    fitted = head.scores(evaluation.inputs)
    return {
        "items": len(y),
        "escalation_needed": int(y.sum()),
        "escalation_needed_share": round(float(y.mean()), 4),
        "fitted": routing_metrics(fitted, y),
        "current": routing_metrics(evaluation.scores, y),
        "prompt_length": routing_metrics(evaluation.prompt_tokens, y),
        "random": {k: round(float(np.mean([d[k] for d in draws])), 4) for k in draws[0]},
        "fitted_minus_current": apgr_difference(fitted, evaluation.scores, y, seed=seed),
    }


def acceptance(evaluation: dict[str, Any]) -> str | None:
    """Why the evaluation does not show the fitted head better than the current estimator; None when
    it does (enough records of each label, and the interval of the APGR difference above 0)."""
    needed = int(evaluation["escalation_needed"])
    fine = int(evaluation["items"]) - needed
    if min(needed, fine) < MIN_PER_LABEL:
        return (
            f"the evaluation holds {needed} records where escalation was needed and {fine} where the edge "
            f"was good enough: at least {MIN_PER_LABEL} of each are needed to tell heads apart"
        )
    difference = evaluation["fitted_minus_current"]
    low, high = difference["ci95"]
    if low <= 0.0:
        return (
            f"APGR difference to the current estimator {difference['apgr']:+.4f}, 95% interval "
            f"[{low:+.4f}, {high:+.4f}]: not shown better"
        )
    return None


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
    features: str = DEFAULT_FEATURES,
) -> tuple[Head, dict[str, Any]]:
    """Fit a head on the oldest labelled records and evaluate it on the newest `eval_share`.

    `current` is the estimator (`name@version`) to beat; None: the one that scored most labelled
    records. Only records an estimator of its name scored are used (`labelled_records`).
    `features` names what the head reads (`FEATURE_SETS`). The report's `refusal` says why the head is
    not shown better than the current one (`acceptance`), None when it is.
    Raises `FitRefused` where there is too little to fit or to evaluate on.
    """
    records = list(records)
    current = current or most_scored(records)
    data = labelled_records(records, extras=FEATURE_SETS[features], estimator=current)
    if len(data) < 20:
        lacking = (
            f" ({data.lacking_extras} more lack prompt_chars, written before it was recorded: "
            "--features embedding uses them)"
            if data.lacking_extras
            else ""
        )
        raise FitRefused(f"{len(data)} labelled records with features: at least 20 are needed{lacking}")
    assert current is not None  # some record was labelled
    cut = round(len(data) * (1.0 - eval_share))
    train, newest = data.take(slice(0, cut)), data.take(slice(cut, None))
    if not 0 < train.labels.mean() < 1:
        raise FitRefused(f"the {len(train)} training records all have the same label")
    head = fit_head(train.inputs, train.labels, data.extra_names)
    evaluation = newest.take(np.asarray([e == current for e in newest.estimators], dtype=bool))
    if len(evaluation) == 0:
        raise FitRefused(f"no record of the newest {len(newest)} was scored by {current}")
    try:
        metrics = compare(head, evaluation)
    except NoQualityGapError as exc:
        raise FitRefused(f"the newest records cannot judge a router: {exc}") from exc
    report: dict[str, Any] = {
        "current": current,
        "labelled_records": len(data),
        "features": features,
        "extras": list(data.extra_names),
        "left_out_lacking_prompt_chars": data.lacking_extras,
        "left_out_other_estimator": data.other_estimator,
        "labels_per_tenant": data.per_tenant(),
        "train": {
            "items": len(train),
            "escalation_needed_share": round(float(train.labels.mean()), 4),
            "until": float(train.created_at[-1]),
        },
        "evaluation": {**metrics, "from": float(newest.created_at[0])},
        "penalty": head.penalty,
    }
    report["refusal"] = acceptance(report["evaluation"])
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
    # The tensor the records' features came from: the one `OnnxEstimator` reads (and checks on load).
    source = OnnxEstimator(base_root, base, threads=1).features_output
    if source is None:
        raise FitRefused(f"estimator {base['name']}@{base['version']} gives no features to fit a head on")
    head_doc = {
        "input": source,
        "extras": list(head.extras),
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
    features: str = DEFAULT_FEATURES,
) -> FitResult:
    """Fit, compare and (when the evaluation shows it better than the current estimator, or `force`)
    write a version."""
    from hyrouter.models.artefacts import ARTEFACTS_DIR

    head, report = fit(store.records(since), current=current, eval_share=eval_share, features=features)
    report["better_than_current"] = report["refusal"] is None
    if report["refusal"] is not None and not force:
        return FitResult(head, report, None)
    base_root, base = find_entry(report["current"], [registry, *base_roots, ARTEFACTS_DIR])
    chosen = version or next_version(base, registry)
    entry = write_version(registry, base_root, base, head, report, version=chosen, command=command)
    return FitResult(head, report, entry)


def add_fit_command(subparsers: Any) -> None:
    """Register `hybrid-router models fit`."""
    f = subparsers.add_parser("fit", help="fit a new estimator version to this deployment's outcome records")
    f.add_argument("--outcomes", required=True, help="sqlite:PATH or dynamodb:TABLE")
    f.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="registry folder to write to")
    f.add_argument("--current", help="name@version to beat (default: the one that scored most records)")
    f.add_argument("--eval-share", type=float, default=DEFAULT_EVAL_SHARE, help="newest share to evaluate on")
    f.add_argument("--version", help="version to write (default: the current's, plus .N)")
    f.add_argument("--since", type=float, help="use records created at or after this Unix time")
    f.add_argument(
        "--features",
        choices=sorted(FEATURE_SETS),
        default=DEFAULT_FEATURES,
        help="what the head reads: the embedding and the prompt's length (default), or the embedding",
    )
    f.add_argument("--force", action="store_true", help="write the version even when it is not shown better")
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
            features=args.features,
            command="hybrid-router " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
    except FitRefused as exc:
        print(f"fit refused: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(result.report, indent=2))
    if result.entry is None:
        print(f"fit refused: {result.report['refusal']} (--force writes it)", file=sys.stderr)
        return 1
    print(
        f"wrote {result.entry['name']}@{result.entry['version']} to {args.registry}; try it as a canary: "
        f"estimator: {{registry: {args.registry}, candidate: {{name: {result.entry['name']}, "
        f"version: '{result.entry['version']}'}}}}",
        file=sys.stderr,
    )
    return 0
