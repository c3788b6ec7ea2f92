"""`hybrid-router drift`: has each tier's traffic drifted from its reference? A check, for a cron or CI.

    hybrid-router drift --outcomes sqlite:outcomes.sqlite3 [--config FILE] [--tier NAME]
                        [--reference-days 7 --window-hours 24 | --reference-records N --window-records M]
                        [--json]

Reads the outcome records of a store (`sqlite:PATH`, or `dynamodb:TABLE` with AWS credentials),
splits each tier's into a reference window and a recent one, and compares them
(`hyrouter.router._drift`: score PSI and KS, cloud share against its target, confidence PSI, the
shadow judges' edge-good rate) against the thresholds of the tier's `drift` section in `--config`.
By time (default): the recent window is the last `--window-hours`, the reference the
`--reference-days` before it. By count: the last `--window-records` of a tier against the
`--reference-records` before them. Exit status 0 when nothing drifted, 1 when a tier drifted,
2 when there is nothing to compare (or bad arguments).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hyrouter.models.stores import open_store
from hyrouter.router import DEMO_CONFIG_PATH, load_config
from hyrouter.router._config import TierDriftConfig
from hyrouter.router._drift import TierDrift, Window, drift_between

EXIT_OK, EXIT_DRIFTED, EXIT_NOTHING = 0, 1, 2


def split_by_time(
    records: Iterable[Mapping[str, Any]], *, now: float, reference_days: float, window_hours: float
) -> dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]]:
    """Each tier's (reference, recent) records: the last `window_hours` and the days before them."""
    cut = now - window_hours * 3600.0
    start = cut - reference_days * 86400.0
    split: dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = defaultdict(lambda: ([], []))
    for r in records:
        at = float(r["created_at"])
        if at >= cut:
            split[r["tier"]][1].append(r)
        elif at >= start:
            split[r["tier"]][0].append(r)
    return dict(split)


def split_by_count(
    records: Iterable[Mapping[str, Any]], *, reference_records: int, window_records: int
) -> dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]]:
    """Each tier's (reference, recent) records: its last `window_records`, and the
    `reference_records` before them (records come oldest first)."""
    by_tier: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_tier[r["tier"]].append(r)
    split = {}
    for tier, rows in by_tier.items():
        recent = rows[-window_records:]
        reference = rows[: len(rows) - len(recent)][-reference_records:]
        split[tier] = (reference, recent)
    return split


def drift_report(
    split: Mapping[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]],
    limits: Mapping[str, TierDriftConfig],
) -> list[TierDrift]:
    """Each tier's drift (tiers with an empty window are left out)."""
    report = []
    for tier in sorted(split):
        reference, recent = (Window.of_records(rows) for rows in split[tier])
        if not reference.scores or not recent.scores:
            continue
        report.append(drift_between(tier, reference, recent, limits.get(tier, TierDriftConfig())))
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def format_table(report: list[TierDrift]) -> str:
    """The report as a table for a person."""
    head = ("tier", "ref n", "recent n", "PSI", "KS", "cloud", "target", "conf PSI", "edge good", "drift")
    rows = [head]
    for d in report:
        rows.append(
            (
                d.tier,
                str(d.reference_n),
                str(d.recent_n),
                _fmt(d.score_psi),
                _fmt(d.score_ks),
                _fmt(d.cloud_share),
                _fmt(d.target_cloud_share),
                _fmt(d.confidence_psi),
                _fmt(d.edge_good_rate) + (f" ({d.judged})" if d.judged else ""),
                "; ".join(d.reasons) or "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def add_drift_command(subparsers: Any) -> None:
    """Register `hybrid-router drift`."""
    p = subparsers.add_parser(
        "drift", help="compare recent outcome records with a reference window per tier (exit 1: drifted)"
    )
    p.add_argument("--outcomes", required=True, help="the store: sqlite:PATH or dynamodb:TABLE")
    p.add_argument("--config", type=Path, default=DEMO_CONFIG_PATH, help="config with the tiers' thresholds")
    p.add_argument("--tier", action="append", help="only this tier (repeatable)")
    p.add_argument("--reference-days", type=float, default=7.0, help="days of reference before the window")
    p.add_argument("--window-hours", type=float, default=24.0, help="hours of recent records")
    p.add_argument("--reference-records", type=int, help="by count: records of reference per tier")
    p.add_argument("--window-records", type=int, help="by count: recent records per tier")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_drift)


def _cmd_drift(args: Any) -> int:
    by_count = args.reference_records is not None or args.window_records is not None
    if by_count and (not args.reference_records or not args.window_records):
        print("error: --reference-records and --window-records go together (both > 0)", file=sys.stderr)
        return EXIT_NOTHING
    config = load_config(args.config, apply_env=False)
    store = open_store(args.outcomes)
    since = None if by_count else time.time() - args.window_hours * 3600 - args.reference_days * 86400
    try:
        records = list(store.records(since))
    finally:
        store.close()
    if args.tier:
        records = [r for r in records if r["tier"] in set(args.tier)]
    if by_count:
        split = split_by_count(
            records, reference_records=args.reference_records, window_records=args.window_records
        )
    else:
        split = split_by_time(
            records, now=time.time(), reference_days=args.reference_days, window_hours=args.window_hours
        )
    report = drift_report(split, {name: tier.drift for name, tier in config.tiers.items()})
    if args.json:
        print(json.dumps([d.to_json() for d in report], indent=2))
    elif report:
        print(format_table(report))
    if not report:
        print("no tier has records in both windows: nothing to compare", file=sys.stderr)
        return EXIT_NOTHING
    return EXIT_DRIFTED if any(d.drifted for d in report) else EXIT_OK
