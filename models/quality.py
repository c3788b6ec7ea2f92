"""The field's router-quality metrics: PGR, CPT(x%), AUC and APGR (RouteLLM, Ong et al. 2024).

For a weak model scoring w, a strong one scoring s, and a router sending the fraction c of calls
with the highest scores to the strong model and reaching quality r(c):
PGR(c) = (r - w) / (s - w); CPT(x) = the smallest c with PGR >= x; AUC = the area under r over
c in [0, 1]; APGR = (AUC - w) / (s - w). Random routing gives APGR = 0.5 and CPT(x) = x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class NoQualityGapError(ValueError):
    """The weak and strong models score the same: PGR, CPT and APGR are undefined (0 / 0)."""


@dataclass(frozen=True)
class QualityCurve:
    """Quality against cloud fraction, at every point where the router's decision can change."""

    cloud_fraction: FloatArray
    quality: FloatArray
    weak: float
    strong: float
    # The lowest score sent to the strong model at each point (+inf at the first, where none is).
    cut_scores: FloatArray | None = None

    def at_threshold(self, threshold: float) -> tuple[float, float]:
        """(cloud fraction, quality) when every score at or above `threshold` goes to the strong model.

        That is how a tier's `threshold` routes (the policy escalates at or above it).

        Raises:
            ValueError: the curve was built without its scores.
        """
        if self.cut_scores is None:
            raise ValueError("this curve does not know its scores: build it with quality_curve")
        i = int(np.count_nonzero(self.cut_scores >= threshold)) - 1  # cut scores never increase
        return float(self.cloud_fraction[i]), float(self.quality[i])

    def pgr(self) -> FloatArray:
        """Performance gap recovered at each point."""
        return (self.quality - self.weak) / (self.strong - self.weak)

    def auc(self) -> float:
        """Area under quality over cloud fraction in [0, 1]."""
        return float(np.trapezoid(self.quality, self.cloud_fraction))

    def apgr(self) -> float:
        """Average performance gap recovered."""
        return (self.auc() - self.weak) / (self.strong - self.weak)

    def cpt(self, pgr_target: float) -> float:
        """Smallest cloud fraction whose PGR reaches `pgr_target`, interpolated linearly between points."""
        pgr = self.pgr()
        above = np.nonzero(pgr >= pgr_target - 1e-12)[0]
        if len(above) == 0:
            return 1.0
        i = int(above[0])
        if i == 0:
            return float(self.cloud_fraction[0])
        # Between two points the router mixes both decisions (ties broken at random): PGR is linear.
        p0, p1 = pgr[i - 1], pgr[i]
        c0, c1 = self.cloud_fraction[i - 1], self.cloud_fraction[i]
        return float(c0 + (pgr_target - p0) / (p1 - p0) * (c1 - c0))


def quality_curve(scores: FloatArray, weak: FloatArray, strong: FloatArray) -> QualityCurve:
    """The curve of routing the highest-scoring items to the strong model, at every score cut.

    Items with equal scores move together: between two cuts the curve is linear, which is the
    expectation when ties are broken at random.

    Raises:
        ValueError: the arrays are empty or of different lengths.
        NoQualityGapError: both models have the same mean quality (possible on a few items).
    """
    scores, weak, strong = (np.asarray(a, dtype=np.float64) for a in (scores, weak, strong))
    n = len(scores)
    if not (n == len(weak) == len(strong)) or n == 0:
        raise ValueError("scores, weak and strong must be non-empty and of the same length")
    order = np.argsort(-scores, kind="stable")
    gain = (strong - weak)[order]
    cum_gain = np.concatenate([[0.0], np.cumsum(gain)])
    sorted_scores = scores[order]
    # Cut points: 0, after each run of equal scores.
    boundaries = np.concatenate([[0], np.nonzero(np.diff(sorted_scores))[0] + 1, [n]])
    base = float(weak.mean())
    if float(strong.mean()) == base:
        raise NoQualityGapError(
            f"weak and strong quality are both {base:.4f} on these {n} items: no gap to recover"
        )
    return QualityCurve(
        cloud_fraction=boundaries / n,
        quality=base + cum_gain[boundaries] / n,
        weak=base,
        strong=float(strong.mean()),
        cut_scores=np.concatenate([[np.inf], sorted_scores[boundaries[1:] - 1]]),
    )


def summarize(curve: QualityCurve) -> dict[str, float]:
    """The standard numbers of one curve."""
    return {
        "weak_quality": round(curve.weak, 4),
        "strong_quality": round(curve.strong, 4),
        "apgr": round(curve.apgr(), 4),
        "auc": round(curve.auc(), 4),
        "cpt50": round(curve.cpt(0.5), 4),
        "cpt80": round(curve.cpt(0.8), 4),
    }
