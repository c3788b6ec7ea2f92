"""Per-tier calibration: set a tier's threshold so that a chosen share of calls escalates.

    hybrid-router calibrate --tier standard --cloud-fraction 0.3 [--config FILE] [--output FILE]
    hybrid-router calibrate --tier free --target-pgr 0.5 --benchmark gsm8k
    hybrid-router calibrate --tier free --target-pgr 0.5 --benchmark mmlu-edge   # our edge pair
    hybrid-router calibrate --tier standard --cloud-fraction 0.3 --outcomes sqlite:o.sqlite3 --since 24h

With `--cloud-fraction F` the threshold is the (1 - F) quantile of the estimator's scores on the
calibration prompts; with `--target-pgr P` it is the score at which the router first recovers P of
the weak-to-strong gap on a benchmark with known outcomes (the CPT(P) point). It only prints the
threshold unless `--output` names where to write the config with it.

With `--outcomes STORE` (`sqlite:PATH`, `dynamodb:TABLE`) the scores are those of the tier's own recent
outcome records (`--since`: `24h`, `7d`, or seconds) instead of benchmark prompts: the threshold that
holds the target cloud share on the traffic the tier actually gets (after a drift alarm). Only records
scored by the config's current estimator count; `--cloud-fraction` only (outcomes carry no PGR).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.quality import quality_curve
from hyrouter.models.routing_data import ALL_BENCHMARKS, BENCHMARKS, load_benchmark
from hyrouter.router import DEMO_CONFIG_PATH, ConfigError, load_estimator, parse_config


def threshold_for_fraction(scores: npt.NDArray[np.float64], cloud_fraction: float) -> float:
    """The threshold that sends `cloud_fraction` of these scores (those at or above it) to the cloud."""
    if not 0.0 <= cloud_fraction <= 1.0:
        raise ValueError("cloud fraction must be in [0, 1]")
    if cloud_fraction == 0.0:  # just above every score (a score of exactly 1.0 still escalates)
        return float(min(1.0, np.nextafter(scores.max(), np.inf)))
    return float(np.quantile(scores, 1.0 - cloud_fraction, method="higher"))


def escalation_share(scores: npt.NDArray[np.float64], threshold: float) -> float:
    """The share of these scores at or above `threshold` (what the policy escalates)."""
    return float(np.mean(scores >= threshold))


def calibrate(
    *,
    tier: str,
    config_path: Path,
    cloud_fraction: float | None,
    target_pgr: float | None,
    benchmarks: Sequence[str],
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Compute the threshold for `tier` and what share of the calibration prompts it escalates."""
    import yaml

    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config = parse_config(data, source=str(config_path))
    if tier not in config.tiers:
        raise ConfigError(f"unknown tier {tier!r}; the config has {', '.join(sorted(config.tiers))}")
    estimator = load_estimator(config.estimator.name, config.estimator.version)
    scores_all, weak_all, strong_all = [], [], []
    for name in benchmarks:
        bench = load_benchmark(name, data_dir)
        scores_all.append(np.array([estimator.score(c) for c in bench.conversations]))
        weak_all.append(bench.weak)
        strong_all.append(bench.strong)
    scores = np.concatenate(scores_all)
    if target_pgr is not None:
        curve = quality_curve(scores, np.concatenate(weak_all), np.concatenate(strong_all))
        cloud_fraction = curve.cpt(target_pgr)
    assert cloud_fraction is not None
    threshold = threshold_for_fraction(scores, cloud_fraction)
    return {
        "tier": tier,
        "estimator": f"{estimator.name}@{estimator.version}",
        "threshold": round(threshold, 6),
        "requested_cloud_fraction": round(cloud_fraction, 4),
        "expected_cloud_fraction": round(escalation_share(scores, threshold), 4),
        "target_pgr": target_pgr,
        "calibration_prompts": len(scores),
        "benchmarks": list(benchmarks),
    }


def parse_since(text: str) -> float:
    """`24h`, `7d`, `90m` or plain seconds, as seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    unit = units.get(text[-1:].lower())
    try:
        return float(text[:-1]) * unit if unit is not None else float(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected seconds or a number with s, m, h or d") from None


def calibrate_from_outcomes(
    *, tier: str, config_path: Path, cloud_fraction: float, store_spec: str, since_s: float, now: float
) -> dict[str, Any]:
    """The threshold for `tier` from the scores of its outcome records of the last `since_s` seconds."""
    from hyrouter.models.stores import open_store
    from hyrouter.router import load_config

    config = load_config(config_path, apply_env=False)
    if tier not in config.tiers:
        raise ConfigError(f"unknown tier {tier!r}; the config has {', '.join(sorted(config.tiers))}")
    estimator = load_estimator(config.estimator.name, config.estimator.version)
    estimator_id = f"{estimator.name}@{estimator.version}"
    store = open_store(store_spec)
    try:
        rows = [
            float(r["score"])
            for r in store.records(now - since_s)
            if r["tier"] == tier and r["estimator"] == estimator_id and r["target"] in ("edge", "cloud")
        ]
    finally:
        store.close()
    if not rows:
        raise ConfigError(f"no outcome records of tier {tier!r} scored by {estimator_id} in {store_spec}")
    scores = np.array(rows)
    threshold = threshold_for_fraction(scores, cloud_fraction)
    return {
        "tier": tier,
        "estimator": estimator_id,
        "threshold": round(threshold, 6),
        "requested_cloud_fraction": round(cloud_fraction, 4),
        "expected_cloud_fraction": round(escalation_share(scores, threshold), 4),
        "target_pgr": None,
        "calibration_prompts": len(scores),
        "outcomes": store_spec,
        "since_s": since_s,
    }


def write_threshold(config_path: Path, output: Path, tier: str, threshold: float) -> None:
    """Write `threshold` into `tier` of the config at `config_path`, validated, to `output`.

    The file is re-serialised from its data: YAML comments are not kept.
    """
    import yaml

    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    data["tiers"][tier]["threshold"] = round(threshold, 6)
    parse_config(data, source=str(output))  # never write a config that would not load
    output.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def add_calibrate_command(subparsers: Any) -> None:
    """Register `hybrid-router calibrate`."""
    p = subparsers.add_parser(
        "calibrate",
        help="compute a tier's threshold from a target cloud share or PGR (written only with --output)",
    )
    p.add_argument("--tier", required=True, help="the tier whose threshold to set")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--cloud-fraction", type=float, help="share of calls to escalate, in [0, 1]")
    goal.add_argument("--target-pgr", type=float, help="share of the weak-to-strong gap to recover")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG_PATH, help="config to read")
    p.add_argument(
        "--output", type=Path, help="write the config with the new threshold here; default: print only"
    )
    p.add_argument(
        "--benchmark",
        action="append",
        choices=ALL_BENCHMARKS,
        help="calibration prompts (repeatable); default: the Mixtral/GPT-4 benchmarks",
    )
    p.add_argument(
        "--data-dir", type=Path, help="the benchmarks' data; default: $HYBRID_ROUTER_DATA_DIR or shared/data"
    )
    p.add_argument(
        "--outcomes", help="calibrate on the tier's recent outcome records: sqlite:PATH or dynamodb:TABLE"
    )
    p.add_argument("--since", default="24h", help="with --outcomes: records this recent (24h, 7d, seconds)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: Any) -> int:
    if args.outcomes:
        if args.cloud_fraction is None:
            raise ConfigError("--outcomes needs --cloud-fraction (outcome records carry no PGR)")
        result = calibrate_from_outcomes(
            tier=args.tier,
            config_path=args.config,
            cloud_fraction=args.cloud_fraction,
            store_spec=args.outcomes,
            since_s=parse_since(args.since),
            now=time.time(),
        )
    else:
        result = _calibrate_on_benchmarks(args)
    return _report(args, result)


def _calibrate_on_benchmarks(args: Any) -> dict[str, Any]:
    return calibrate(
        tier=args.tier,
        config_path=args.config,
        cloud_fraction=args.cloud_fraction,
        target_pgr=args.target_pgr,
        benchmarks=args.benchmark or list(BENCHMARKS),
        data_dir=args.data_dir,
    )


def _report(args: Any, result: dict[str, Any]) -> int:
    if args.output:
        write_threshold(args.config, args.output, args.tier, result["threshold"])
        result["written_to"] = str(args.output)
    print(json.dumps(result, indent=2))
    print(
        f"tier {args.tier}: threshold {result['threshold']} escalates "
        f"{result['expected_cloud_fraction']:.1%} of {result['calibration_prompts']} calibration prompts"
    )
    if not args.output:
        print(
            f"printed only, no config changed: pass --output FILE to write {args.config} with this threshold",
            file=sys.stderr,
        )
    return 0
