"""Threshold calibration from a score distribution."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from hyrouter.cloud.cli import main
from hyrouter.models.calibrate import (
    add_calibrate_command,
    calibrate,
    escalation_share,
    threshold_for_fraction,
    write_threshold,
)
from hyrouter.router import DEMO_CONFIG_PATH, ConfigError, load_config

SCORES = np.linspace(0.0, 0.99, 100)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_threshold_escalates_the_requested_share(fraction: float) -> None:
    threshold = threshold_for_fraction(SCORES, fraction)
    assert escalation_share(SCORES, threshold) == pytest.approx(fraction, abs=0.011)


def test_target_pgr_and_writing_the_config(tmp_path: Path) -> None:
    result = calibrate(
        tier="free", config_path=DEMO_CONFIG_PATH, cloud_fraction=None, target_pgr=0.5, benchmarks=["gsm8k"]
    )
    assert 0.0 < result["expected_cloud_fraction"] < 0.5  # the heuristic beats random on GSM8K
    out = tmp_path / "tiers.yaml"
    write_threshold(DEMO_CONFIG_PATH, out, "free", result["threshold"])
    assert load_config(out, apply_env=False).tiers["free"].threshold == pytest.approx(result["threshold"])


def test_unknown_tier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown tier"):
        calibrate(
            tier="gold",
            config_path=DEMO_CONFIG_PATH,
            cloud_fraction=0.2,
            target_pgr=None,
            benchmarks=["mt-bench"],
        )


def test_calibrating_on_the_edge_pair_and_a_clear_error_without_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_calibrate_command(parser.add_subparsers())
    args = parser.parse_args(
        ["calibrate", "--tier", "free", "--cloud-fraction", "0.2", "--benchmark", "mmlu-edge"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert '"benchmarks": [\n    "mmlu-edge"\n  ]' in printed.out
    assert "printed only, no config changed: pass --output FILE" in printed.err
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hyrouter.models.routing_data.EDGE_LABELS_DIR", tmp_path / "no-labels")
        code = main(
            [*("calibrate", "--tier", "free", "--cloud-fraction", "0.2", "--benchmark", "mmlu-gemma")]
        )
    assert code == 2 and "no edge labels" in capsys.readouterr().err


def test_with_output_it_writes_and_does_not_say_printed_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiers.yaml"
    args = ["calibrate", "--tier", "free", "--cloud-fraction", "0.2", "--benchmark", "mmlu-edge"]
    assert main([*args, "--output", str(out)]) == 0
    assert "printed only" not in capsys.readouterr().err
    assert load_config(out, apply_env=False).tiers["free"].threshold > 0
