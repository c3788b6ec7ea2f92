"""Drift: has a tier's traffic moved away from what its threshold was set on?

Prompt-only estimators plateau on traffic unlike their training data, and a threshold calibrated for
a cloud share holds only while the scores keep their distribution. Per tier, four signals compare a
recent window of requests with a reference window:

- the estimator's scores: the population stability index (PSI, over the reference's deciles; above
  0.2 is the conventional "significant shift") and the two-sample Kolmogorov-Smirnov statistic;
- the cloud share against its target (`TierDriftConfig.target_cloud_share`, else the reference's);
- the edge model's confidence in its answers (PSI, where the tier verifies edge answers);
- the shadow judges' edge-good rate (`hyrouter.router._shadow`), against a floor where one is set.

`drift_between` computes them from outcome records (`hybrid-router drift` reads a store);
`DriftObserver` keeps rolling windows in the serving process and reports every `every` requests per
tier (Prometheus gauges locally, EMF metrics in Lambda). numpy is imported when first needed, and
by `DriftObserver` when it is made, so that no request pays the import (without numpy, an observer
compares nothing and says so once).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hyrouter.router._config import RouterConfig, TierDriftConfig
from hyrouter.router._metrics import RequestOutcome

logger = logging.getLogger("hybrid_router.drift")

#: PSI's floor for an empty bin: log(0) has no value, and a bin empty in one window is a shift, not infinity.
_PSI_FLOOR = 1e-4


def psi(reference: Sequence[float], recent: Sequence[float], bins: int = 10) -> float:
    """The population stability index of `recent` against `reference`, over the reference's quantile
    bins (deciles by default; ties merge bins). 0 for the same distribution; > 0.2 is a shift."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    new = np.asarray(recent, dtype=np.float64)
    if ref.size == 0 or new.size == 0:
        return math.nan
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    q = np.bincount(np.searchsorted(edges, new, side="right"), minlength=edges.size + 1) / new.size
    p, q = np.maximum(p, _PSI_FLOOR), np.maximum(q, _PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_statistic(reference: Sequence[float], recent: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    import numpy as np

    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(recent, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return math.nan
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


@dataclass(frozen=True)
class Window:
    """The facts of one window of a tier's requests that drift compares."""

    scores: Sequence[float]
    cloud: int = 0  #: requests decided for the cloud
    decided: int = 0  #: requests decided for the cloud or the edge
    confidences: Sequence[float] = ()
    judged: int = 0
    edge_good: int = 0

    @classmethod
    def of_records(cls, records: Iterable[Mapping[str, Any]]) -> Window:
        """The window of outcome records (`OutcomeStore.records` dicts); answers from the cache and
        refusals of nothing decided are left out."""
        scores: list[float] = []
        confidences: list[float] = []
        cloud = decided = judged = good = 0
        for r in records:
            if r["target"] not in ("edge", "cloud"):
                continue
            scores.append(float(r["score"]))
            decided += 1
            cloud += r["target"] == "cloud"
            if r.get("confidence") is not None:
                confidences.append(float(r["confidence"]))
            if r.get("judged_good") is not None:
                judged += 1
                good += bool(r["judged_good"])
        return cls(scores, cloud, decided, confidences, judged, good)

    @property
    def cloud_share(self) -> float | None:
        """Cloud decisions over cloud and edge decisions; None when there were none."""
        return self.cloud / self.decided if self.decided else None

    @property
    def edge_good_rate(self) -> float | None:
        """The judges' share of edge answers found good enough; None before a verdict."""
        return self.edge_good / self.judged if self.judged else None


@dataclass(frozen=True)
class TierDrift:
    """One tier's drift signals, and whether (and why) they pass its thresholds."""

    tier: str
    reference_n: int
    recent_n: int
    score_psi: float
    score_ks: float
    cloud_share: float | None
    target_cloud_share: float | None
    confidence_psi: float | None
    edge_good_rate: float | None
    judged: int
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Whether any signal passed its threshold."""
        return bool(self.reasons)

    @property
    def cloud_share_gap(self) -> float | None:
        """The cloud share minus its target (positive: more cloud than meant)."""
        if self.cloud_share is None or self.target_cloud_share is None:
            return None
        return self.cloud_share - self.target_cloud_share

    def to_json(self) -> dict[str, Any]:
        """The signals as JSON-ready data (NaN as None)."""
        data = asdict(self)
        data.update(drifted=self.drifted, cloud_share_gap=self.cloud_share_gap)
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in data.items()}


def drift_between(tier: str, reference: Window, recent: Window, limits: TierDriftConfig) -> TierDrift:
    """The drift of `recent` against `reference` for `tier`, judged by `limits`."""
    score_psi = psi(reference.scores, recent.scores)
    score_ks = ks_statistic(reference.scores, recent.scores)
    target = limits.target_cloud_share
    if target is None:
        target = reference.cloud_share
    confidence_psi = None
    if len(reference.confidences) >= 10 and len(recent.confidences) >= 10:
        confidence_psi = psi(reference.confidences, recent.confidences)
    reasons: list[str] = []
    if score_psi > limits.max_psi:
        reasons.append(f"score PSI {score_psi:.3f} > {limits.max_psi}")
    share = recent.cloud_share
    if share is not None and target is not None and abs(share - target) > limits.max_cloud_share_gap:
        reasons.append(f"cloud share {share:.3f} vs target {target:.3f}")
    if confidence_psi is not None and confidence_psi > limits.max_psi:
        reasons.append(f"confidence PSI {confidence_psi:.3f} > {limits.max_psi}")
    good = recent.edge_good_rate
    if good is not None and limits.min_edge_good_rate is not None and good < limits.min_edge_good_rate:
        reasons.append(f"edge-good rate {good:.3f} < {limits.min_edge_good_rate}")
    return TierDrift(
        tier=tier,
        reference_n=len(reference.scores),
        recent_n=len(recent.scores),
        score_psi=score_psi,
        score_ks=score_ks,
        cloud_share=share,
        target_cloud_share=target,
        confidence_psi=confidence_psi,
        edge_good_rate=good,
        judged=recent.judged,
        reasons=reasons,
    )


class _TierWindows:
    def __init__(self, reference_size: int, window_size: int) -> None:
        self.reference: list[tuple[float, bool, float | None]] = []
        self.reference_size = reference_size
        self.recent: deque[tuple[float, bool, float | None]] = deque(maxlen=window_size)
        self.verdicts: deque[bool] = deque(maxlen=window_size)
        self.seen = 0

    def window(self, rows: Iterable[tuple[float, bool, float | None]], verdicts: Sequence[bool]) -> Window:
        rows = list(rows)
        return Window(
            scores=[s for s, _, _ in rows],
            cloud=sum(c for _, c, _ in rows),
            decided=len(rows),
            confidences=[c for _, _, c in rows if c is not None],
            judged=len(verdicts),
            edge_good=sum(verdicts),
        )


class DriftObserver:
    """Rolling drift per tier in the serving process: a `DecisionObserver`.

    A tier's first `reference_size` decided requests are its reference; the last `window_size` are
    compared with it every `every` requests once the reference is full, and `on_update` hears the
    result (EMF in Lambda; Prometheus reads `snapshot()` at scrape). Shadow verdicts arrive through
    `judged`. Each process keeps its own windows: `hybrid-router drift` reads the whole fleet's store.
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        reference_size: int = 1000,
        window_size: int = 200,
        every: int = 50,
        on_update: Callable[[TierDrift], None] | None = None,
    ) -> None:
        self.config = config
        self.reference_size = reference_size
        self.window_size = window_size
        self.every = every
        self.on_update = on_update
        self._lock = threading.Lock()
        self._tiers: dict[str, _TierWindows] = {}
        self._latest: dict[str, TierDrift] = {}
        try:  # here, not at the first comparison: that is on a request's path
            import numpy  # noqa: F401
        except ImportError:
            logger.warning("drift is not compared: numpy is not installed (the 'onnx' extra has it)")
            self.compares = False
        else:
            #: whether windows are compared (numpy is installed)
            self.compares = True

    def retarget(self, config: RouterConfig) -> None:
        """Judge by a new config's limits. A tier whose routing changed on purpose (its threshold or
        its cloud mode) starts again from an empty reference: its old one measured the old routing,
        and the new cloud share would read as drift. Other tiers keep their windows."""
        old, self.config = self.config, config
        with self._lock:
            for name in list(self._tiers):
                before, after = old.tiers.get(name), config.tiers.get(name)
                if (
                    before is None
                    or after is None
                    or (before.threshold, before.cloud) != (after.threshold, after.cloud)
                ):
                    del self._tiers[name]
                    self._latest.pop(name, None)

    def _windows(self, tier: str) -> _TierWindows:
        windows = self._tiers.get(tier)
        if windows is None:
            windows = self._tiers[tier] = _TierWindows(self.reference_size, self.window_size)
        return windows

    def record(self, outcome: RequestOutcome) -> None:
        """Add a decided request to its tier's windows; every `every`-th compares them."""
        d = outcome.decision
        if d.target not in ("edge", "cloud"):
            return
        row = (d.score, d.target == "cloud", outcome.confidence)
        with self._lock:
            w = self._windows(d.tier)
            if len(w.reference) < w.reference_size:
                w.reference.append(row)
                return
            w.recent.append(row)
            w.seen += 1
            if not self.compares or w.seen % self.every or len(w.recent) < min(self.every, self.window_size):
                return
            reference = w.window(w.reference, ())
            recent = w.window(w.recent, list(w.verdicts))
        tier = self.config.tiers.get(d.tier)
        limits = tier.drift if tier is not None else TierDriftConfig()
        result = drift_between(d.tier, reference, recent, limits)
        with self._lock:
            self._latest[d.tier] = result
        if self.on_update is not None:
            self.on_update(result)

    def judged(self, tier: str, good: bool) -> None:
        """A shadow judge's verdict on one of `tier`'s edge answers."""
        with self._lock:
            self._windows(tier).verdicts.append(good)

    def snapshot(self) -> dict[str, TierDrift]:
        """Each tier's latest comparison (tiers whose reference is not yet full have none)."""
        with self._lock:
            return dict(self._latest)
