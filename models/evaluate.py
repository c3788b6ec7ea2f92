"""Router-quality evaluation: estimators and baselines on held-out routing benchmarks, side by side.

    hybrid-router eval [--benchmark mmlu --benchmark gsm8k-edge ...] [--json out.json] [--plot out.png]
                      [--config router/demo-config.yaml]

Every router is scored on the same items: the configured estimators, plus the baselines every
router must beat: random routing (constant score: APGR 0.5 by construction) and prompt length.
By default every benchmark of every pair: Mixtral-8x7B / GPT-4 (`mmlu`, `gsm8k`, `mt-bench`), our
edge model SmolLM2-135M / GPT-4 (`mmlu-edge`, `gsm8k-edge`) and Gemma-3-270M / GPT-4 (`mmlu-gemma`,
`gsm8k-gemma`), on the items labelled so far; an edge benchmark with no labels yet is skipped with a
note.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyrouter.models.litellm_baseline import litellm_complexity_scorer
from hyrouter.models.quality import NoQualityGapError, QualityCurve, quality_curve, summarize
from hyrouter.models.quality_plot import TierMarks, plot_curves
from hyrouter.models.routing_data import ALL_BENCHMARKS, MissingLabelsError, RoutingBenchmark, load_benchmark
from hyrouter.router import (
    DEMO_CONFIG_PATH,
    ChatMessage,
    ComplexityEstimator,
    available_estimators,
    import_extra,
    load_config,
    load_estimator,
)

Scorer = Callable[[Sequence[ChatMessage]], float]


def baseline_scorers() -> dict[str, Scorer]:
    """Routers with no model: the floor a learned estimator must clear.

    LiteLLM's rule-based complexity router joins them when litellm is installed (the `baselines` extra).
    """
    scorers: dict[str, Scorer] = {
        "random": lambda messages: 0.5,
        "prompt-length": lambda messages: float(sum(len(m.text) for m in messages)),
    }
    litellm = litellm_complexity_scorer()
    if litellm is not None:
        scorers["litellm-complexity"] = litellm
    return scorers


def estimator_scorers(names: Sequence[str]) -> dict[str, Scorer]:
    """Registered estimators by `name` or `name@version`."""
    scorers: dict[str, Scorer] = {}
    for spec in names:
        name, _, version = spec.partition("@")
        estimator: ComplexityEstimator = load_estimator(name, version or None)
        scorers[f"{estimator.name}@{estimator.version}"] = estimator.score
    return scorers


def evaluate(
    benchmark: RoutingBenchmark, scorers: dict[str, Scorer], *, progress: bool = False
) -> dict[str, QualityCurve]:
    """The quality curve of each scorer on `benchmark` (with a progress bar per scorer if asked)."""
    tqdm = import_extra("tqdm", feature="eval", extra="eval").tqdm
    curves = {}
    for name, score in scorers.items():
        items = tqdm(benchmark.conversations, desc=f"{name} {benchmark.name}", disable=not progress)
        curves[name] = quality_curve(np.array([score(c) for c in items]), benchmark.weak, benchmark.strong)
    return curves


def tier_marks(config_path: Path, evaluated: Sequence[str]) -> TierMarks | None:
    """The tiers of the routing config at `config_path`, for the estimator it uses if it was evaluated.

    None (with a note on stderr) when that estimator is not among `evaluated`: its thresholds mean
    nothing on another estimator's scores.
    """
    config = load_config(config_path, apply_env=False)
    estimator = load_estimator(config.estimator.name, config.estimator.version)
    key = f"{estimator.name}@{estimator.version}"
    if key not in evaluated:
        print(f"note: {config_path} routes with {key}, not evaluated: no tier marks", file=sys.stderr)
        return None
    return TierMarks(estimator=key, tiers=config.tiers, source=config_path.name)


def run_eval(
    benchmarks: Sequence[str],
    estimators: Sequence[str],
    *,
    data_dir: Path | None = None,
    labels_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, QualityCurve]]]:
    """Evaluate estimators and baselines on each benchmark: the report and the curves.

    An edge benchmark with no labels yet, or too few for the two models to differ, is left out of
    both, with a note in `report["skipped"]` (and on stderr).
    """
    scorers = {**estimator_scorers(estimators), **baseline_scorers()}
    report: dict[str, Any] = {"benchmarks": {}, "skipped": {}}
    curves: dict[str, dict[str, QualityCurve]] = {}
    for name in benchmarks:
        try:
            bench = load_benchmark(name, data_dir, labels_dir=labels_dir)
            curves[name] = evaluate(bench, scorers)
        except (MissingLabelsError, NoQualityGapError) as exc:
            report["skipped"][name] = str(exc)
            print(f"note: skipping {name}: {exc}", file=sys.stderr)
            continue
        report["benchmarks"][name] = {
            "pair": bench.pair,
            "items": len(bench),
            "contaminated_excluded": bench.excluded,
            "unmatched_labels": bench.unmatched,
            "routers": {router: summarize(curve) for router, curve in curves[name].items()},
        }
    return report, curves


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table."""
    lines = [
        f"{'benchmark':10} {'pair (weak/strong)':20} {'items':>6} {'router':22} "
        f"{'APGR':>6} {'CPT50':>6} {'CPT80':>6} {'weak':>6} {'strong':>6}"
    ]
    for bench, entry in report["benchmarks"].items():
        for router, m in entry["routers"].items():
            lines.append(
                f"{bench:10} {entry['pair']:20} {entry['items']:6d} {router:22} {m['apgr']:6.3f} "
                f"{m['cpt50']:6.3f} {m['cpt80']:6.3f} {m['weak_quality']:6.3f} {m['strong_quality']:6.3f}"
            )
    lines += [f"(skipped {bench}: {why})" for bench, why in report.get("skipped", {}).items()]
    return "\n".join(lines)


def add_eval_command(subparsers: Any) -> None:
    """Register `hybrid-router eval`."""
    p = subparsers.add_parser("eval", help="router quality (APGR, CPT) of estimators and baselines")
    p.add_argument(
        "--benchmark",
        action="append",
        choices=ALL_BENCHMARKS,
        help="repeatable; default: all (edge benchmarks without labels are skipped)",
    )
    p.add_argument("--estimator", action="append", help="name[@version], repeatable; default: all registered")
    p.add_argument("--data-dir", type=Path, help="shared data folder (default: ../shared/data)")
    p.add_argument("--labels-dir", type=Path, help="edge labels folder (default: models/data/edge-labels)")
    p.add_argument(
        "--cascade",
        action="store_true",
        help="instead: the two-stage router (estimator, then the edge's calibrated confidence) on graded "
        "edge answers it was not calibrated on, beside the pre-route router, prompt length and random",
    )
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--plot", type=Path, help="write the quality-vs-cloud-fraction curves here (PNG)")
    p.add_argument(
        "--config",
        type=Path,
        default=DEMO_CONFIG_PATH,
        help="routing config whose tier thresholds the plot marks (default: the demo config)",
    )
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: Any) -> int:
    if args.cascade:
        from hyrouter.models.cascade_eval import format_cascade_table, run_cascade_eval

        estimator = args.estimator[0] if args.estimator else None
        cascade = run_cascade_eval(estimator=estimator, data_dir=args.data_dir)
        print(format_cascade_table(cascade))
        if args.json:
            args.json.write_text(json.dumps(cascade, indent=2) + "\n")
        return 0
    estimators = args.estimator or [spec for spec in available_estimators()]
    report, curves = run_eval(
        args.benchmark or list(ALL_BENCHMARKS),
        estimators,
        data_dir=args.data_dir,
        labels_dir=args.labels_dir,
    )
    print(format_table(report))
    if not report["benchmarks"]:
        print("nothing to evaluate: every benchmark asked for was skipped", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        pairs = {b: e["pair"] for b, e in report["benchmarks"].items()}
        evaluated = list(next(iter(curves.values())))
        plot_curves(curves, args.plot, pairs, tier_marks(args.config, evaluated))
    return 0
