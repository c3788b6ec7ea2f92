"""Drift statistics, the rolling observer, and `hybrid-router drift` on a real SQLite store."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hyrouter.models.drift import EXIT_DRIFTED, EXIT_NOTHING, EXIT_OK, add_drift_command
from hyrouter.router import load_estimator, parse_config
from hyrouter.router._config import TierDriftConfig
from hyrouter.router._drift import DriftObserver, TierDrift, Window, drift_between, ks_statistic, psi
from hyrouter.router._metrics import RequestOutcome
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._policy import Decision, RouteReason
from tests.fakes import outcome_record


def test_psi_and_ks_are_zero_for_the_same_sample_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.beta(2, 5, 2000).tolist()
    same = rng.beta(2, 5, 2000).tolist()
    moved = rng.beta(5, 2, 2000).tolist()
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12) and ks_statistic(ref, ref) == 0.0
    assert psi(ref, same) < 0.05 and ks_statistic(ref, same) < 0.06
    assert psi(ref, moved) > 1.0 and ks_statistic(ref, moved) > 0.5


def test_ks_matches_the_textbook_value_on_a_small_case() -> None:
    # ECDFs of {1,2,3} and {2.5,3.5,4.5} differ most at 2 (2/3 vs 0)
    assert ks_statistic([1, 2, 3], [2.5, 3.5, 4.5]) == pytest.approx(2 / 3)


def rows(scores: list[float], threshold: float, *, good: list[bool] | None = None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, s in enumerate(scores):
        judged = None if good is None else good[i % len(good)]
        out.append({"score": s, "target": "cloud" if s >= threshold else "edge", "judged_good": judged})
    return out


def test_drift_between_names_each_signal_past_its_threshold() -> None:
    rng = random.Random(1)
    ref = Window.of_records(rows([rng.random() * 0.6 for _ in range(500)], 0.5))
    calm = Window.of_records(rows([rng.random() * 0.6 for _ in range(200)], 0.5))
    hard = Window.of_records(rows([0.4 + rng.random() * 0.6 for _ in range(200)], 0.5, good=[False, True]))
    limits = TierDriftConfig(min_edge_good_rate=0.8)
    assert not drift_between("t", ref, calm, limits).drifted
    moved = drift_between("t", ref, hard, limits)
    assert moved.drifted and moved.score_psi > 0.2
    assert any("score PSI" in r for r in moved.reasons)
    assert any("cloud share" in r for r in moved.reasons)
    assert any("edge-good rate" in r for r in moved.reasons)
    assert moved.target_cloud_share == ref.cloud_share  # no target set: the reference's share
    fixed = drift_between("t", ref, calm, TierDriftConfig(target_cloud_share=0.9))
    assert fixed.target_cloud_share == 0.9 and any("cloud share" in r for r in fixed.reasons)


def outcome(score: float, tier: str = "t", threshold: float = 0.5) -> RequestOutcome:
    target = "cloud" if score >= threshold else "edge"
    decision = Decision(target, RouteReason.SCORE_BELOW_THRESHOLD, score, threshold, tier, "acme", "h@1")
    return RequestOutcome(decision=decision, model="m", status=200, stream=False)


def test_the_observer_compares_rolling_windows_with_its_reference_and_reports() -> None:
    heard: list[TierDrift] = []
    config = parse_config({"tiers": {"t": {}}})
    observer = DriftObserver(config, reference_size=300, window_size=100, every=25, on_update=heard.append)
    rng = random.Random(2)
    for _ in range(300 + 100):
        observer.record(outcome(rng.random() * 0.6))
    assert heard and not heard[-1].drifted
    for _ in range(100):
        observer.record(outcome(0.5 + rng.random() * 0.5))
    assert heard[-1].drifted and observer.snapshot()["t"] == heard[-1]
    observer.judged("t", False)
    assert len(heard) == 4 + 4


def test_a_deliberate_threshold_change_starts_the_tier_from_a_new_reference() -> None:
    heard: list[TierDrift] = []
    config = parse_config({"tiers": {"t": {"threshold": 0.5}, "u": {"threshold": 0.5}}})
    observer = DriftObserver(config, reference_size=300, window_size=100, every=25, on_update=heard.append)
    rng = random.Random(3)
    for _ in range(400):
        observer.record(outcome(rng.random()))
        observer.record(outcome(rng.random(), tier="u"))
    assert set(observer.snapshot()) == {"t", "u"}
    # t's threshold moves on purpose (u's drift limits only): t's cloud share will move with it.
    observer.retarget(
        parse_config({"tiers": {"t": {"threshold": 0.2}, "u": {"threshold": 0.5, "drift": {"max_psi": 0.3}}}})
    )
    assert set(observer.snapshot()) == {"u"}
    heard.clear()
    for _ in range(299):  # t refills its reference at the new threshold; u compares as before
        observer.record(outcome(rng.random(), threshold=0.2))
        observer.record(outcome(rng.random(), tier="u"))
    assert heard and {d.tier for d in heard} == {"u"}
    for _ in range(101):
        observer.record(outcome(rng.random(), threshold=0.2))
    latest = observer.snapshot()["t"]
    # The new routing is its own reference: its cloud share (about 0.8) is the target, not drift.
    assert latest.reference_n == 300 and latest.target_cloud_share is not None
    assert latest.target_cloud_share > 0.7 and not any("cloud share" in r for r in latest.reasons)


def test_without_numpy_the_observer_compares_nothing_and_never_fails_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_numpy(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("No module named 'numpy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numpy)
    observer = DriftObserver(parse_config({"tiers": {"t": {}}}), reference_size=50, window_size=50, every=10)
    for i in range(200):  # the first comparison imported numpy here, on a request's path
        observer.record(outcome((i % 10) / 10))
    assert not observer.compares and observer.snapshot() == {}


def write_records(path: Path, scores_by_age: list[tuple[float, float]], estimator: str = "h@1") -> None:
    store = SqliteOutcomeStore(path)
    now = time.time()
    records = []
    for i, (age_h, score) in enumerate(scores_by_age):
        records.append(
            outcome_record(
                f"r{i}",
                created_at=now - age_h * 3600,
                tier="standard",
                target="cloud" if score >= 0.4 else "edge",
                score=score,
                threshold=0.4,
                estimator=estimator,
                features=None,
            )
        )
    store.write(records)
    store.close()


def run_drift(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_drift_command(parser.add_subparsers())
    args = parser.parse_args(["drift", *argv])
    return int(args.func(args))


def test_the_drift_command_passes_calm_traffic_and_fails_drifted_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(3)
    calm, moved = tmp_path / "calm.sqlite3", tmp_path / "moved.sqlite3"
    reference = [(48 + rng.random() * 100, rng.random() * 0.5) for _ in range(400)]
    write_records(calm, reference + [(rng.random() * 20, rng.random() * 0.5) for _ in range(200)])
    write_records(moved, reference + [(rng.random() * 20, 0.3 + rng.random() * 0.7) for _ in range(200)])
    assert run_drift("--outcomes", f"sqlite:{calm}") == EXIT_OK
    assert "standard" in capsys.readouterr().out
    assert run_drift("--outcomes", f"sqlite:{moved}", "--json") == EXIT_DRIFTED
    (tier,) = json.loads(capsys.readouterr().out)
    assert tier["tier"] == "standard" and tier["drifted"] and tier["score_psi"] > 0.2
    assert (tier["reference_n"], tier["recent_n"]) == (400, 200)
    by_count = ("--reference-records", "300", "--window-records", "100")
    assert run_drift("--outcomes", f"sqlite:{moved}", *by_count) == EXIT_DRIFTED
    assert run_drift("--outcomes", f"sqlite:{calm}", "--tier", "premium") == EXIT_NOTHING
    assert run_drift("--outcomes", f"sqlite:{calm}", "--reference-records", "3") == EXIT_NOTHING


def test_calibrate_from_outcomes_holds_the_target_share_on_recent_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyrouter.models.calibrate import add_calibrate_command

    path = tmp_path / "o.sqlite3"
    recent = [(1.0, i / 100) for i in range(100)]  # scores 0.00 .. 0.99, an hour old
    old = [(100.0, 0.99)] * 50  # older than --since: not counted
    current = load_estimator("heuristic")  # the demo config's
    write_records(path, recent + old, estimator=f"{current.name}@{current.version}")
    parser = argparse.ArgumentParser()
    add_calibrate_command(parser.add_subparsers())
    argv = ["calibrate", "--tier", "standard", "--cloud-fraction", "0.25", "--outcomes", f"sqlite:{path}"]
    args = parser.parse_args([*argv, "--since", "24h"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out.split("\ntier ")[0])
    assert result["calibration_prompts"] == 100 and result["threshold"] == pytest.approx(0.75)
    assert result["expected_cloud_fraction"] == 0.25
