"""`hybrid-router models canary --outcomes STORE`: the canary and the A/B arms, from outcome records.

    hybrid-router models canary --outcomes sqlite:outcomes.sqlite3|dynamodb:TABLE [--since UNIX_TIME]

Canary (`estimator.candidate`): on every record the candidate scored, its decision and the live
estimator's at the record's threshold (escalate at or above it): their agreement, and the cloud share
each gives per tier; on the records with a label (`hyrouter.models.fit.escalation_label`), each one's
APGR and CPT(50%) and the share of decisions that match the label.

A/B (`tiers.<name>.ab`): per tier, arm a against arm b on cost per request, cloud share, fallback
rate, judged quality (the edge-good rate among judged records) and feedback (mean rating), each with
its test (two-proportion z or Welch's t; `hyrouter.models.abstats`) and the requests per arm that 80%
power at 5% significance would need for the difference observed.

Promoting the candidate (or arm b) is a config change: its version in `estimator.version` (or the
tier's threshold); rolling back is the old value. In Lambda the config is the SSM parameter: no deploy.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from hyrouter.models.abstats import two_proportions, welch
from hyrouter.models.fit import escalation_label, routing_metrics
from hyrouter.models.quality import NoQualityGapError
from hyrouter.models.stores import open_store


def canary_report(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Live against candidate on the records the candidate scored (with a threshold)."""
    shadowed = [r for r in records if r.get("candidate_score") is not None and r.get("threshold") is not None]
    if not shadowed:
        return {"records": 0}
    by_tier: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in shadowed:
        by_tier[r["tier"]].append(r)
    tiers = {}
    for tier, rows in sorted(by_tier.items()):
        live = np.array([r["score"] >= r["threshold"] for r in rows])
        cand = np.array([r["candidate_score"] >= r["threshold"] for r in rows])
        tiers[tier] = {
            "records": len(rows),
            "threshold": rows[-1]["threshold"],
            "agreement": round(float((live == cand).mean()), 4),
            "live_cloud_share": round(float(live.mean()), 4),
            "candidate_cloud_share": round(float(cand.mean()), 4),
        }
    agree = [(r["score"] >= r["threshold"]) == (r["candidate_score"] >= r["threshold"]) for r in shadowed]
    return {
        "records": len(shadowed),
        "live": sorted({r["estimator"] for r in shadowed}),
        "candidate": sorted({r["candidate_estimator"] for r in shadowed}),
        "agreement": round(float(np.mean(agree)), 4),
        "tiers": tiers,
        "judged": _judged(shadowed),
    }


def _judged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    labelled = [(r, label) for r in rows if (label := escalation_label(r)) is not None]
    out: dict[str, Any] = {"records": len(labelled)}
    if not labelled:
        return out
    y = np.array([label for _, label in labelled], dtype=np.float64)
    out["escalation_needed_share"] = round(float(y.mean()), 4)
    for name, key in (("live", "score"), ("candidate", "candidate_score")):
        scores = np.array([r[key] for r, _ in labelled], dtype=np.float64)
        decided = np.array([r[key] >= r["threshold"] for r, _ in labelled], dtype=np.float64)
        result: dict[str, Any] = {"decisions_matching_label": round(float((decided == y).mean()), 4)}
        try:
            result.update(routing_metrics(scores, y))
        except NoQualityGapError:
            result["apgr"] = None  # every label the same: no router can be told from another
        out[name] = result
    return out


def ab_report(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Arm a against arm b, per tier, on the records of tiers that ran an A/B test."""
    arms: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: {"a": [], "b": []})
    for r in records:
        if r.get("variant") in ("a", "b"):
            arms[r["tier"]][r["variant"]].append(r)
    return {tier: compare_arms(pair["a"], pair["b"]) for tier, pair in sorted(arms.items())}


def compare_arms(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """The A/B comparison of two arms' records."""
    out: dict[str, Any] = {"requests": {"a": len(a), "b": len(b)}}
    if not a or not b:
        return out

    def proportion(rows: list[dict[str, Any]], hit: Any) -> tuple[int, int]:
        return sum(1 for r in rows if hit(r)), len(rows)

    def mean_var(values: list[float]) -> tuple[float, float, int]:
        arr = np.asarray(values, dtype=np.float64)
        return (
            float(arr.mean()) if len(arr) else 0.0,
            float(arr.var(ddof=1)) if len(arr) > 1 else 0.0,
            len(arr),
        )

    cost_a, cost_b = mean_var([r["cost_usd"] for r in a]), mean_var([r["cost_usd"] for r in b])
    out["cost_per_request_usd"] = welch(*cost_a, *cost_b).as_dict()
    for name, hit in (
        ("cloud_share", lambda r: r["target"] == "cloud"),
        ("fallback_rate", lambda r: bool(r["fallback"])),
    ):
        out[name] = two_proportions(*proportion(a, hit), *proportion(b, hit)).as_dict()
    judged_a = [r for r in a if r.get("judged_good") is not None]
    judged_b = [r for r in b if r.get("judged_good") is not None]
    out["judged"] = {"a": len(judged_a), "b": len(judged_b)}
    if judged_a and judged_b:
        good = lambda r: bool(r["judged_good"])  # noqa: E731
        out["edge_good_rate"] = two_proportions(
            *proportion(judged_a, good), *proportion(judged_b, good)
        ).as_dict()
    rated_a = [float(r["rating"]) for r in a if r.get("rating") is not None]
    rated_b = [float(r["rating"]) for r in b if r.get("rating") is not None]
    out["rated"] = {"a": len(rated_a), "b": len(rated_b)}
    if rated_a and rated_b:
        out["mean_rating"] = welch(*mean_var(rated_a), *mean_var(rated_b)).as_dict()
    return out


def add_canary_command(subparsers: Any) -> None:
    """Register `hybrid-router models canary`."""
    c = subparsers.add_parser(
        "canary", help="compare the canary estimator and the A/B arms on outcome records"
    )
    c.add_argument("--outcomes", required=True, help="sqlite:PATH or dynamodb:TABLE")
    c.add_argument("--since", type=float, help="use records created at or after this Unix time")
    c.set_defaults(func=_cmd_canary)


def _cmd_canary(args: Any) -> int:
    store = open_store(args.outcomes)
    try:
        records = list(store.records(args.since))
    finally:
        store.close()
    json.dump({"canary": canary_report(records), "ab": ab_report(records)}, sys.stdout, indent=2)
    print()
    return 0
