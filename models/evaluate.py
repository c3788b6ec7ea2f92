"""Router-quality evaluation: estimators and baselines on held-out routing benchmarks, side by side.

    hybrid-router eval [--benchmark mmlu --benchmark gsm8k ...] [--json out.json] [--plot out.png]

Every router is scored on the same items: the configured estimators, plus the baselines every
router must beat: random routing (constant score: APGR 0.5 by construction) and prompt length.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.quality import QualityCurve, quality_curve, summarize
from models.routing_data import BENCHMARKS, RoutingBenchmark, load_benchmark
from router import ChatMessage, ComplexityEstimator, available_estimators, load_estimator

Scorer = Callable[[Sequence[ChatMessage]], float]


def baseline_scorers() -> dict[str, Scorer]:
    """Routers with no model: the floor a learned estimator must clear."""
    return {
        "random": lambda messages: 0.5,
        "prompt-length": lambda messages: float(sum(len(m.text) for m in messages)),
    }


def estimator_scorers(names: Sequence[str]) -> dict[str, Scorer]:
    """Registered estimators by `name` or `name@version`."""
    scorers: dict[str, Scorer] = {}
    for spec in names:
        name, _, version = spec.partition("@")
        estimator: ComplexityEstimator = load_estimator(name, version or None)
        scorers[f"{estimator.name}@{estimator.version}"] = estimator.score
    return scorers


def evaluate(benchmark: RoutingBenchmark, scorers: dict[str, Scorer]) -> dict[str, QualityCurve]:
    """The quality curve of each scorer on `benchmark`."""
    return {
        name: quality_curve(
            np.array([score(c) for c in benchmark.conversations]), benchmark.weak, benchmark.strong
        )
        for name, score in scorers.items()
    }


def plot_curves(results: dict[str, dict[str, QualityCurve]], path: Path) -> None:
    """Quality vs cloud fraction, one panel per benchmark, one line per router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (bench, curves) in zip(axes[0], results.items(), strict=True):
        for name, curve in curves.items():
            ax.plot(curve.cloud_fraction, curve.quality, label=f"{name} (APGR {curve.apgr():.3f})")
        first = next(iter(curves.values()))
        ax.axhline(first.strong, ls=":", c="grey")
        ax.axhline(first.weak, ls=":", c="grey")
        ax.set(title=bench, xlabel="fraction of calls to the strong model", ylabel="quality")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_eval(
    benchmarks: Sequence[str], estimators: Sequence[str], *, data_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, QualityCurve]]]:
    """Evaluate estimators and baselines on each benchmark: the report and the curves."""
    scorers = {**estimator_scorers(estimators), **baseline_scorers()}
    report: dict[str, Any] = {"benchmarks": {}}
    curves: dict[str, dict[str, QualityCurve]] = {}
    for name in benchmarks:
        bench = load_benchmark(name, data_dir)
        curves[name] = evaluate(bench, scorers)
        report["benchmarks"][name] = {
            "pair": bench.pair,
            "items": len(bench),
            "contaminated_excluded": bench.excluded,
            "routers": {router: summarize(curve) for router, curve in curves[name].items()},
        }
    return report, curves


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table."""
    lines = [
        f"{'benchmark':10} {'router':22} {'APGR':>6} {'CPT50':>6} {'CPT80':>6} {'weak':>6} {'strong':>6}"
    ]
    for bench, entry in report["benchmarks"].items():
        for router, m in entry["routers"].items():
            lines.append(
                f"{bench:10} {router:22} {m['apgr']:6.3f} {m['cpt50']:6.3f} {m['cpt80']:6.3f} "
                f"{m['weak_quality']:6.3f} {m['strong_quality']:6.3f}"
            )
    return "\n".join(lines)


def add_eval_command(subparsers: Any) -> None:
    """Register `hybrid-router eval`."""
    p = subparsers.add_parser("eval", help="router quality (APGR, CPT) of estimators and baselines")
    p.add_argument("--benchmark", action="append", choices=BENCHMARKS, help="repeatable; default: all")
    p.add_argument("--estimator", action="append", help="name[@version], repeatable; default: all registered")
    p.add_argument("--data-dir", type=Path, help="shared data folder (default: ../shared/data)")
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--plot", type=Path, help="write the quality-vs-cloud-fraction curves here (PNG)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: Any) -> int:
    estimators = args.estimator or [spec for spec in available_estimators()]
    report, curves = run_eval(args.benchmark or list(BENCHMARKS), estimators, data_dir=args.data_dir)
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot_curves(curves, args.plot)
    return 0
