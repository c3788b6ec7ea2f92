"""`/metrics` for Prometheus: a decision observer counting into a registry of its own (prometheus-client).

The local app plugs one `PrometheusMetrics` per app into its engine (a registry per app, not the
global one: a process may run several apps, tests do). Lambda keeps its EMF records instead. Series,
all prefixed `hybrid_router_`::

    requests_total{tier,target,reason}     finished chat completions by where they went and why
    fallbacks_total{tier,target}           answered on another backend than first decided
    errors_total{code} / failovers_total{from_code}    failed requests; streams continued elsewhere
    tokens_total{target,kind}              prompt and completion tokens
    cost_usd_total{tier} / cost_saved_usd_total{tier}  spend, and the saving against always-cloud
    upstream_latency_seconds{target} / estimator_latency_seconds    histograms
    cloud_share                            cloud decisions / all decisions since start
    edge_queue_depth, cloud_breaker_state (0 closed, 1 half-open, 2 open), backend_available{target}
    outcomes_written_total / outcomes_dropped_total / outcomes_failed_total / outcomes_queued
                                           outcome records (when on): written, dropped because the
                                           queue was full, refused by the store, waiting
    shadow_total{tier,event}               shadow judging (when on): sampled, judged, edge_good,
                                           unparseable, failed, skipped_budget/_queue/_privacy
    shadow_edge_good_rate{tier}            the judges' share of edge answers found good enough
    drift_score_psi{tier} / drift_score_ks{tier}       recent scores against the tier's reference
    drift_cloud_share{tier} / drift_cloud_share_target{tier} / drift_edge_good_rate{tier}
    drift_detected{tier}                   1 when a signal passed the tier's drift thresholds

prometheus_client is imported when an instance is made, never at import (the Lambda handler imports
`hyrouter.cloud.routes`, which names this class).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from hyrouter.router import OutcomeWriter, RequestOutcome, RoutingEngine, Target

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "hybrid_router"
#: Upstream latency buckets (seconds): a CPU token to a cloud call with a long answer.
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Estimator latency buckets (seconds): the ONNX estimator takes about a millisecond.
ESTIMATOR_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class PrometheusMetrics:
    """A `router.DecisionObserver` that counts into its own `CollectorRegistry`; `exposition()` is the
    text `/metrics` serves. Gauges of the engine's state (queue, breaker, backends) are read at scrape."""

    def __init__(self, engine: RoutingEngine, *, registry: CollectorRegistry | None = None) -> None:
        """Count `engine`'s requests (plug it in: `engine.observers.append(...)`) into `registry`."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.content_type: str = CONTENT_TYPE_LATEST
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "Finished chat completions.", ["tier", "target", "reason"], registry=r
        )
        self.fallbacks = Counter(
            f"{PREFIX}_fallbacks", "Requests answered on another backend.", ["tier", "target"], registry=r
        )
        self.errors = Counter(
            f"{PREFIX}_errors", "Requests that failed, by error code.", ["code"], registry=r
        )
        self.failovers = Counter(
            f"{PREFIX}_failovers", "Streams continued after a failure.", ["from_code"], registry=r
        )
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens, by backend.", ["target", "kind"], registry=r)
        self.cost = Counter(f"{PREFIX}_cost_usd", "Cloud spend in US dollars.", ["tier"], registry=r)
        self.cost_saved = Counter(
            f"{PREFIX}_cost_saved_usd",
            "Saving against sending everything to the cloud.",
            ["tier"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            f"{PREFIX}_upstream_latency_seconds",
            "Time the backend took.",
            ["target"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.estimator_latency = Histogram(
            f"{PREFIX}_estimator_latency_seconds",
            "Time the complexity estimator took.",
            buckets=ESTIMATOR_BUCKETS,
            registry=r,
        )
        self._lock = threading.Lock()
        self._decisions = 0
        self._cloud = 0
        Gauge(f"{PREFIX}_cloud_share", "Share of decisions sent to the cloud.", registry=r).set_function(
            self.cloud_share
        )
        Gauge(
            f"{PREFIX}_edge_queue_depth", "Requests waiting for or on the edge model.", registry=r
        ).set_function(lambda: float(getattr(engine.edge, "queue_depth", 0)))
        Gauge(
            f"{PREFIX}_cloud_breaker_state",
            "Cloud circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        ).set_function(lambda: _breaker_state(engine))
        available = Gauge(
            f"{PREFIX}_backend_available", "Whether a backend can answer now.", ["target"], registry=r
        )
        for target in ("edge", "cloud"):
            available.labels(target).set_function(_availability(engine, target))
        if engine.outcomes is not None:
            r.register(_OutcomeCounts(engine.outcomes))
        r.register(_LearningGauges(engine))

    def record(self, outcome: RequestOutcome) -> None:
        """Count one finished request."""
        d = outcome.decision
        self.requests.labels(d.tier, d.target, str(d.reason)).inc()
        if d.fallback:
            self.fallbacks.labels(d.tier, d.target).inc()
        if outcome.error_code:
            self.errors.labels(outcome.error_code).inc()
        if outcome.failover_from:
            self.failovers.labels(outcome.failover_from).inc()
        self.tokens.labels(d.target, "prompt").inc(outcome.prompt_tokens)
        self.tokens.labels(d.target, "completion").inc(outcome.completion_tokens)
        self.cost.labels(d.tier).inc(max(0.0, outcome.cost_usd))
        self.cost_saved.labels(d.tier).inc(max(0.0, outcome.cost_saved_usd))
        self.upstream_latency.labels(d.target).observe(outcome.upstream_ms / 1000.0)
        self.estimator_latency.observe(outcome.estimator_ms / 1000.0)
        with self._lock:
            self._decisions += 1
            self._cloud += int(d.target == "cloud")

    def cloud_share(self) -> float:
        """Cloud decisions over all decisions since start (0 before the first)."""
        with self._lock:
            return self._cloud / self._decisions if self._decisions else 0.0

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (`content_type`)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _OutcomeCounts:
    """The outcome writer's counts, read at scrape (a collector: they are kept by the writer)."""

    def __init__(self, writer: OutcomeWriter) -> None:
        self._writer = writer

    def describe(self) -> list[Any]:
        return []  # read at scrape only; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._writer.stats()
        for name, help_text in (
            ("written", "Outcome records the store accepted."),
            ("dropped", "Outcome records dropped because the writer's queue was full."),
            ("failed", "Outcome records in batches the store refused."),
        ):
            yield CounterMetricFamily(f"{PREFIX}_outcomes_{name}", help_text, value=stats[name])
        yield GaugeMetricFamily(
            f"{PREFIX}_outcomes_queued", "Outcome records waiting.", value=stats["queued"]
        )


class _LearningGauges:
    """Shadow judging's counts and the drift observer's latest comparison, read at scrape (the engine's
    current ones: a reload brings new ones)."""

    def __init__(self, engine: RoutingEngine) -> None:
        self._engine = engine

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from hyrouter.cloud.engines import drift_observer

        shadow = self._engine.shadow
        if shadow is not None:
            counts = CounterMetricFamily(
                f"{PREFIX}_shadow", "Shadow judging of sampled edge answers.", labels=["tier", "event"]
            )
            rate = GaugeMetricFamily(
                f"{PREFIX}_shadow_edge_good_rate", "Judged edge answers found good enough.", labels=["tier"]
            )
            for tier, events in sorted(shadow.stats.snapshot().items()):
                for event, n in events.items():
                    counts.add_metric([tier, event], n)
                good = shadow.stats.edge_good_rate(tier)
                if good is not None:
                    rate.add_metric([tier], good)
            yield counts
            yield rate
        drift = drift_observer(self._engine)
        if drift is None:
            return
        gauges = {
            name: GaugeMetricFamily(f"{PREFIX}_drift_{name}", text, labels=["tier"])
            for name, text in (
                ("score_psi", "PSI of recent scores against the tier's reference."),
                ("score_ks", "Kolmogorov-Smirnov statistic of recent scores against the reference."),
                ("cloud_share", "Recent share of decisions sent to the cloud."),
                ("cloud_share_target", "The cloud share the tier's threshold is meant to give."),
                ("edge_good_rate", "Recent shadow verdicts that found the edge good enough."),
                ("detected", "1 when a drift signal passed the tier's threshold."),
            )
        }
        for tier, d in sorted(drift.snapshot().items()):
            values = {
                "score_psi": d.score_psi,
                "score_ks": d.score_ks,
                "cloud_share": d.cloud_share,
                "cloud_share_target": d.target_cloud_share,
                "edge_good_rate": d.edge_good_rate,
                "detected": float(d.drifted),
            }
            for name, value in values.items():
                if value is not None:
                    gauges[name].add_metric([tier], value)
        yield from gauges.values()


def _availability(engine: RoutingEngine, target: Target) -> Callable[[], float]:
    return lambda: float(engine.health(target).available)


def _breaker_state(engine: RoutingEngine) -> float:
    breaker = getattr(engine.cloud, "breaker", None)
    return _BREAKER_STATES.get(str(getattr(breaker, "state", "closed")), 0.0)
