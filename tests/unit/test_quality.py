"""The router-quality metrics on cases whose answers are known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hyrouter.models.quality import NoQualityGapError, quality_curve, summarize

WEAK = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=float)
STRONG = np.array([1, 1, 1, 1, 0, 1, 1, 0], dtype=float)  # gains on items 1, 2, 6


def test_random_routing_gives_half_the_gap() -> None:
    curve = quality_curve(np.full(8, 0.3), WEAK, STRONG)
    assert curve.apgr() == pytest.approx(0.5)
    assert curve.cpt(0.5) == pytest.approx(0.5) and curve.cpt(0.8) == pytest.approx(0.8)


def test_an_oracle_recovers_the_gap_with_the_fewest_calls() -> None:
    oracle = STRONG - WEAK
    curve = quality_curve(oracle, WEAK, STRONG)
    # The 3 items that gain are sent first: full quality at 3/8 of calls.
    assert curve.cpt(1.0) == pytest.approx(3 / 8)
    assert curve.cpt(0.5) == pytest.approx(1.5 / 8)
    assert curve.apgr() > 0.8


def test_the_worst_router_is_below_random() -> None:
    assert quality_curve(WEAK - STRONG, WEAK, STRONG).apgr() < 0.5


def test_curve_end_points_and_summary() -> None:
    curve = quality_curve(np.arange(8.0), WEAK, STRONG)
    assert curve.quality[0] == pytest.approx(WEAK.mean()) and curve.quality[-1] == pytest.approx(
        STRONG.mean()
    )
    assert curve.cloud_fraction[0] == 0 and curve.cloud_fraction[-1] == 1
    assert set(summarize(curve)) == {"weak_quality", "strong_quality", "apgr", "auc", "cpt50", "cpt80"}


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        quality_curve(np.zeros(3), WEAK, STRONG)


def test_equal_weak_and_strong_quality_is_a_clear_error_not_a_division_by_zero() -> None:
    swapped = np.array([0, 1, 0, 1, 0, 1, 0, 0], dtype=float)  # same mean as WEAK, other items
    with pytest.raises(NoQualityGapError, match="no gap to recover"):
        quality_curve(np.arange(8.0), WEAK, swapped)
    worse = quality_curve(np.arange(8.0), STRONG, WEAK)  # a negative gap is still defined
    assert np.isfinite(worse.apgr())


def test_the_quality_plot_wraps_into_rows_of_four_panels(tmp_path: Path) -> None:
    import matplotlib.image

    from hyrouter.models.quality_plot import PLOT_COLUMNS, plot_curves

    curve = quality_curve(np.array([0.1, 0.9, 0.5]), np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0]))
    results = {f"b{i}": {"r": curve} for i in range(PLOT_COLUMNS + 1)}
    png = tmp_path / "curves.png"
    plot_curves(results, png)
    height, width = matplotlib.image.imread(png).shape[:2]
    assert (width, height) == (5 * PLOT_COLUMNS * 110, 2 * 4 * 110)  # 4 columns, 2 rows (one panel hidden)
