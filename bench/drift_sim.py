"""Simulated drift: after how many requests of a new kind of traffic does the drift alarm fire?

Replays prompts of the llmrouter-9model set through the real engine (the committed estimator, a real
SQLite outcome store, the live `DriftObserver`); the backends answer at once (answers do not matter
to drift, scores and decisions do). First a reference mix of some tasks, on which the tier's
threshold is calibrated to a target cloud share (`threshold_for_fraction`); then a new task appears
and takes `--new-share` of the traffic. Reported: the requests after the change until the live
observer first reports drift (and on which signal), the cloud share per window meanwhile, and what
`hybrid-router drift` computes over the store afterwards (the first reference records against the
last window).

    python -m bench.drift_sim [--estimator static-minilm] [--new-task gsm8k] [--window 200]
                              [--out bench/results/drift_sim.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hyrouter.models.calibrate import threshold_for_fraction
from hyrouter.models.drift import drift_report
from hyrouter.router import (
    ChatCompletionRequest,
    RoutingEngine,
    Tenant,
    load_estimator,
    parse_config,
)
from hyrouter.router._drift import DriftObserver, TierDrift
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._outcomes import OutcomeWriter
from tests.fakes import FakeBackend

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter-9model" / "scores.jsonl"
REFERENCE_TASKS = ("natural_qa", "trivia_qa", "commonsense_qa", "openbook_qa")


def load_prompts(data: Path) -> dict[str, list[str]]:
    by_task: dict[str, list[str]] = {}
    with data.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            by_task.setdefault(row["task_name"], []).append(row["query"])
    return by_task


def share(targets: list[str]) -> float:
    """The share of cloud targets."""
    return sum(t == "cloud" for t in targets) / len(targets)


async def simulate(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    prompts = load_prompts(args.data)
    estimator = load_estimator(args.estimator)
    reference_pool = [p for t in REFERENCE_TASKS for p in prompts[t]]
    new_pool = prompts[args.new_task]
    rng.shuffle(reference_pool)

    def req(text: str) -> ChatCompletionRequest:
        return ChatCompletionRequest(model="hybrid-router", messages=[{"role": "user", "content": text}])

    # Calibrate on a sample of the reference mix, as an operator would before going live.
    calibration = np.array([estimator.score(req(p).messages) for p in reference_pool[:300]])
    target = args.target_cloud_share
    threshold = threshold_for_fraction(calibration, target)
    config = parse_config(
        {
            "estimator": {"name": args.estimator},
            "tiers": {
                "standard": {"threshold": threshold, "drift": {"target_cloud_share": args.target_cloud_share}}
            },
        }
    )
    heard: list[tuple[int, TierDrift]] = []
    position = [0]
    observer = DriftObserver(
        config,
        reference_size=args.reference,
        window_size=args.window,
        every=args.every,
        on_update=lambda d: heard.append((position[0], d)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "outcomes.sqlite3"
        writer = OutcomeWriter(SqliteOutcomeStore(store_path), salt="sim")
        engine = RoutingEngine(
            config,
            estimator=estimator,
            edge=FakeBackend("edge", context_window=1 << 20),  # drift reads scores and decisions only
            cloud=FakeBackend("cloud", context_window=1 << 20),
            observers=[observer],
            outcomes=writer,
            log_decisions=False,
        )
        tenant = Tenant("sim", "standard")
        before = args.reference + args.before
        total = before + args.after
        targets: list[str] = []
        for i in range(total):
            position[0] = i
            if i >= before and rng.random() < args.new_share:
                text = rng.choice(new_pool)
            else:
                text = reference_pool[(i + 300) % len(reference_pool)]
            answer = await engine.complete(req(text), tenant)
            assert answer.route is not None
            targets.append(answer.route.target)
        await engine.aclose()
        store = SqliteOutcomeStore(store_path)
        records: list[Mapping[str, Any]] = list(store.records())
        store.close()
    # The drift command's view afterwards: the first `reference` records against the last `window`.
    split: dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {
        "standard": (records[: args.reference], records[-args.window :])
    }
    (offline,) = drift_report(split, {"standard": config.tiers["standard"].drift})
    first = next(((i, d) for i, d in heard if i >= before and d.drifted), None)
    false_alarms = sum(1 for i, d in heard if i < before and d.drifted)
    windows = []
    for start in range(0, total, args.window):
        part = targets[start : start + args.window]
        windows.append(
            {
                "requests": [start, start + len(part)],
                "after_change": start >= before,
                "cloud_share": round(sum(t == "cloud" for t in part) / len(part), 3),
            }
        )
    psi_by_position = [
        {"request": i, "score_psi": round(d.score_psi, 4), "cloud_share": d.cloud_share, "drifted": d.drifted}
        for i, d in heard
    ]
    return {
        "estimator": f"{estimator.name}@{estimator.version}",
        "reference_tasks": list(REFERENCE_TASKS),
        "new_task": args.new_task,
        "new_share": args.new_share,
        "threshold": threshold,
        "target_cloud_share": args.target_cloud_share,
        "observer": {"reference": args.reference, "window": args.window, "every": args.every},
        "change_at_request": before,
        "requests": total,
        "false_alarms_before_change": false_alarms,
        "alarm_after_requests": None if first is None else first[0] - before + 1,
        "alarm_reasons": None if first is None else first[1].reasons,
        "cloud_share_before_change": round(share(targets[args.reference : before]), 3),
        "cloud_share_after_change": round(share(targets[before:]), 3),
        "windows": windows,
        "live": psi_by_position,
        "drift_command": offline.to_json(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--estimator", default="static-minilm")
    parser.add_argument("--new-task", default="gsm8k")
    parser.add_argument("--new-share", type=float, default=0.5)
    parser.add_argument("--target-cloud-share", type=float, default=0.3)
    parser.add_argument("--reference", type=int, default=500, help="requests of the live reference window")
    parser.add_argument("--window", type=int, default=200, help="requests of the live recent window")
    parser.add_argument("--every", type=int, default=25, help="requests between two live comparisons")
    parser.add_argument("--before", type=int, default=400, help="reference-mix requests after the reference")
    parser.add_argument("--after", type=int, default=600, help="requests after the new task appears")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench/results/drift_sim.json"))
    args = parser.parse_args()
    result = asyncio.run(simulate(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("windows", "live")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
