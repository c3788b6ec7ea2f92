"""The routing-quality plot, rendered (Agg) from a small synthetic evaluation: what a reader is told."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hyrouter.models.evaluate import tier_marks
from hyrouter.models.quality import QualityCurve, quality_curve
from hyrouter.models.quality_plot import ABOVE_IS_BETTER, NO_ROUTER_BEATS_RANDOM, TierMarks, quality_figure
from hyrouter.router import DEMO_CONFIG_PATH, TierConfig

WEAK = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=float)
STRONG = np.array([1, 1, 1, 1, 0, 1, 1, 0], dtype=float)  # gains on items 1, 2, 6
ORACLE = np.array([0.1, 0.9, 0.8, 0.2, 0.3, 0.1, 0.75, 0.4])  # the gaining items score highest
TIERS = TierMarks(
    estimator="oracle@1",
    tiers={
        "free": TierConfig(cloud="allowed", threshold=0.7),
        "standard": TierConfig(cloud="allowed", threshold=0.35),
        "premium": TierConfig(cloud="forced"),
    },
    source="tiers.yaml",
)


@pytest.fixture
def figure() -> Iterator[Figure]:
    import matplotlib.pyplot as plt

    results = {
        "good": {"oracle@1": quality_curve(ORACLE, WEAK, STRONG), "random": _random()},
        "hopeless": {"oracle@1": quality_curve(1 - ORACLE, WEAK, STRONG), "random": _random()},
    }
    fig = quality_figure(results, {"good": "small/big", "hopeless": "small/big"}, TIERS)
    yield fig
    plt.close(fig)


def _random() -> QualityCurve:
    return quality_curve(np.full(8, 0.5), WEAK, STRONG)


def _panels(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


def _xy(line: Line2D) -> tuple[float, float]:
    """The one point a marker line draws."""
    return float(np.asarray(line.get_xdata())[0]), float(np.asarray(line.get_ydata())[0])


def _texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_the_caption_says_how_to_read_the_plot(figure: Figure) -> None:
    (caption,) = [t.get_text().replace("\n", " ") for t in figure.texts if t.get_gid() == "caption"]
    assert ABOVE_IS_BETTER in caption and "CPT(50%)" in caption
    assert "dotted lines: the weak and the strong model alone" in caption.lower()
    assert "tiers of tiers.yaml" in caption and "oracle@1" in caption


def test_the_weak_and_strong_lines_are_labelled_in_every_legend(figure: Figure) -> None:
    for ax in _panels(figure):
        legend = ax.get_legend()
        assert legend is not None
        labels = [t.get_text() for t in legend.get_texts()]
        assert "weak alone: small (0.375)" in labels and "strong alone: big (0.750)" in labels
        assert "CPT(50%) of each router" in labels and "tier thresholds (oracle@1)" in labels
        assert any(ABOVE_IS_BETTER in text for text in _texts(ax))


def test_each_router_has_its_cpt50_marker_halfway_up_the_gap(figure: Figure) -> None:
    good = _panels(figure)[0]
    markers = [line for line in good.lines if line.get_gid() == "cpt50"]
    assert len(markers) == 2  # oracle and random
    points = sorted(_xy(line) for line in markers)
    assert [x for x, _ in points] == pytest.approx([1.5 / 8, 0.5])  # the oracle's, random's
    assert [y for _, y in points] == pytest.approx([0.5625, 0.5625])  # half of 0.375 -> 0.75


def test_each_tier_is_marked_where_its_threshold_routes(figure: Figure) -> None:
    good = _panels(figure)[0]
    marks = {line.get_gid(): _xy(line) for line in good.lines if str(line.get_gid()).startswith("tier:")}
    assert marks["tier:free"] == pytest.approx((3 / 8, 0.75))  # 0.9, 0.8, 0.75 escalate: the whole gap
    assert marks["tier:standard"] == pytest.approx((4 / 8, 0.75))  # and 0.4
    assert marks["tier:premium"] == pytest.approx((1.0, 0.75))  # forced: every call
    assert {"free ≥ 0.7", "standard ≥ 0.35", "premium (forced)"} <= set(_texts(good))


def test_a_panel_says_when_no_router_beats_random(figure: Figure) -> None:
    good, hopeless = _panels(figure)
    assert NO_ROUTER_BEATS_RANDOM not in _texts(good)
    assert NO_ROUTER_BEATS_RANDOM in _texts(hopeless)


def test_the_panels_share_one_y_scale(figure: Figure) -> None:
    good, hopeless = _panels(figure)
    assert good.get_shared_y_axes().joined(good, hopeless)
    assert good.get_ylim() == hopeless.get_ylim() == (0.0, 1.0)


def test_a_curve_knows_where_a_threshold_puts_it() -> None:
    curve = quality_curve(ORACLE, WEAK, STRONG)
    assert curve.at_threshold(1.0) == pytest.approx((0.0, 0.375))  # nothing escalates
    assert curve.at_threshold(0.8) == pytest.approx((2 / 8, 0.625))  # at or above: 0.9 and 0.8
    assert curve.at_threshold(0.0) == pytest.approx((1.0, 0.75))
    tied = quality_curve(np.full(8, 0.5), WEAK, STRONG)
    assert tied.at_threshold(0.5)[0] == 1.0 and tied.at_threshold(0.6)[0] == 0.0


def test_the_tiers_come_from_the_routing_config_for_its_own_estimator(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    marks = tier_marks(DEMO_CONFIG_PATH, ["heuristic@1.0.0", "random"])
    assert marks is not None and marks.estimator == "heuristic@1.0.0"
    assert marks.tiers["free"].threshold == 0.7 and marks.tiers["premium"].cloud == "forced"
    assert tier_marks(DEMO_CONFIG_PATH, ["random"]) is None  # another estimator's scores: no marks
    assert "routes with heuristic@1.0.0, not evaluated" in capsys.readouterr().err
