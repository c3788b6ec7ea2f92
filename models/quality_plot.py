"""The routing-quality plot of `hybrid-router eval`: quality against the share of calls to the strong model.

One panel per benchmark, one line per router, on one y scale (quality is a share in [0, 1] on every
benchmark: MT-Bench's judge scores are divided by 10). Each panel shows the weak and strong model
alone (dotted), where each router recovers half the gap (CPT(50%)), where the routing config's tiers
sit on the configured estimator's curve, and says so when no router beats random routing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hyrouter.models.quality import QualityCurve, summarize
from hyrouter.router import TierConfig, import_extra

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_COLUMNS = 4  # panels per row
RANDOM = "random"  # the baseline's name in `hyrouter.models.evaluate.baseline_scorers`
NO_ROUTER_BEATS_RANDOM = "no router beats random here (every APGR ≤ 0.5)"
ABOVE_IS_BETTER = "above the diagonal (random routing) is better"
_CAPTION_FONT_PT = 8
_CAPTION_CHARS_PER_INCH = 15  # at 8 pt, with room to spare


@dataclass(frozen=True)
class TierMarks:
    """The routing config's tiers, to be marked on the curves of the estimator that config uses."""

    estimator: str  # the curve's name: `name@version`
    tiers: Mapping[str, TierConfig]
    source: str  # the config file they come from


def caption(tiers: TierMarks | None) -> str:
    """What the figure shows and how to read it, under the panels."""
    text = (
        "Quality (mean score of the answers) against the fraction of calls sent to the strong model, "
        "as each router's threshold sweeps from nothing to everything. Dotted lines: the weak and the "
        f"strong model alone. Random routing is the diagonal between them (APGR 0.5); {ABOVE_IS_BETTER}. "
        "Circles: CPT(50%), the fraction of strong calls at which a router recovers half the weak-to-strong "
        "gap (lower is better)."
    )
    if tiers is not None:
        text += (
            f" Triangles: the tiers of {tiers.source} on the curve of the estimator it uses "
            f"({tiers.estimator}); a tier escalates scores at or above its threshold."
        )
    return text


def plot_curves(
    results: dict[str, dict[str, QualityCurve]],
    path: Path,
    pairs: dict[str, str] | None = None,
    tiers: TierMarks | None = None,
) -> None:
    """Write `quality_figure` to `path` (PNG)."""
    import_extra("matplotlib", feature="eval --plot", extra="eval")
    import matplotlib.pyplot as plt

    fig = quality_figure(results, pairs, tiers)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quality_figure(
    results: dict[str, dict[str, QualityCurve]],
    pairs: dict[str, str] | None = None,
    tiers: TierMarks | None = None,
) -> Figure:
    """Quality vs cloud fraction: one panel per benchmark, titled with its pair; one line per router.

    The caller closes the figure (`matplotlib.pyplot.close`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(results), PLOT_COLUMNS)
    rows = -(-len(results) // cols)
    width, height = 5 * cols, 4 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, sharey=True)
    for ax in axes.flat[len(results) :]:
        ax.set_visible(False)
    for ax, (bench, curves) in zip(axes.flat, results.items(), strict=False):
        _panel(ax, bench, curves, pairs.get(bench) if pairs else None, tiers)
    for ax in axes[:, 0]:
        ax.set_ylabel("quality (share of good answers)")
    text = textwrap.fill(caption(tiers), width=int(width * _CAPTION_CHARS_PER_INCH))
    caption_in = (text.count("\n") + 1.5) * _CAPTION_FONT_PT * 1.4 / 72
    fig.text(0.01, 0.005, text, ha="left", va="bottom", fontsize=_CAPTION_FONT_PT, gid="caption")
    fig.tight_layout(rect=(0, caption_in / height, 1, 1))
    return fig


def _panel(
    ax: Axes, bench: str, curves: dict[str, QualityCurve], pair: str | None, tiers: TierMarks | None
) -> None:
    weak_name, _, strong_name = (pair or "weak model/strong model").partition("/")
    apgrs = {}
    for name, curve in curves.items():
        apgrs[name] = summarize(curve)["apgr"]  # the report's rounding, so legend and table agree
        (line,) = ax.plot(curve.cloud_fraction, curve.quality, label=f"{name} (APGR {apgrs[name]:.3f})")
        cpt = curve.cpt(0.5)
        ax.plot([cpt], [curve.weak + 0.5 * (curve.strong - curve.weak)], "o", c=line.get_color(), gid="cpt50")
    first = next(iter(curves.values()))
    ax.axhline(first.strong, ls=":", c="grey", label=f"strong alone: {strong_name} ({first.strong:.3f})")
    ax.axhline(first.weak, ls=":", c="black", label=f"weak alone: {weak_name} ({first.weak:.3f})")
    ax.plot([], [], "o", c="grey", label="CPT(50%) of each router")
    if tiers is not None and tiers.estimator in curves:
        _mark_tiers(ax, curves[tiers.estimator], tiers)
    ax.text(0.02, 0.98, f"↑ {ABOVE_IS_BETTER}", transform=ax.transAxes, va="top", fontsize=7)
    if not any(apgr > 0.5 for name, apgr in apgrs.items() if name != RANDOM):
        ax.text(
            0.02, 0.91, NO_ROUTER_BEATS_RANDOM, transform=ax.transAxes, va="top", fontsize=7, c="firebrick"
        )
    ax.set(title=f"{bench} ({pair})" if pair else bench, xlabel="fraction of calls to the strong model")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=6.5, loc="lower right")


def _mark_tiers(ax: Axes, curve: QualityCurve, tiers: TierMarks) -> None:
    """A triangle per tier where its threshold puts it on `curve`; forced and never tiers at the ends."""
    for i, (name, tier) in enumerate(tiers.tiers.items()):
        if tier.cloud == "allowed":
            x, y = curve.at_threshold(tier.threshold)
            label = f"{name} ≥ {tier.threshold:g}"
        else:
            x, y = (1.0, curve.strong) if tier.cloud == "forced" else (0.0, curve.weak)
            label = f"{name} ({tier.cloud})"
        ax.plot([x], [y], "^", c="black", ms=7, gid=f"tier:{name}")
        right, up = x > 0.8, y < 0.2  # keep the label inside the panel
        ax.annotate(  # one line further per tier: tiers often sit close together
            label,
            (x, y),
            xytext=(-4 if right else 4, 5 + 9 * i if up else -11 - 9 * i),
            textcoords="offset points",
            ha="right" if right else "left",
            fontsize=7,
        )
    ax.plot([], [], "^", c="black", label=f"tier thresholds ({tiers.estimator})")
