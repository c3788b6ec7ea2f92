"""Telemetry in Lambda: EMF metrics for every routed request, and the decision line as structured JSON.

`EmfRouterMetrics` is the `router.RouterMetrics` the engine reports to. Each finished request becomes
one EMF record (one stdout line) with the same metrics under four dimension sets, so that alarms can
read the service as a whole, a tier, a tier's target, and a tier's target and reason:

    Decisions, CloudDecisions, EdgeDecisions, Fallbacks, ServerErrors        Count
    EstimatorLatency, UpstreamLatency                                         Milliseconds
    PromptTokens, CompletionTokens                                            Count
    CostUSD, CostSavedUSD (against always-cloud)                              None

`emit_drift` writes a tier's drift signals (the engine's `DriftObserver` calls it every so many
requests): ScorePSI, ScoreKS, CloudShare, CloudShareGap, EdgeGoodRate, DriftDetected, under the
dimensions service and tier; template.yaml alarms on them. `emit_shadow` writes what the judge
function (`hyrouter.cloud.aws.judge`) found: ShadowJudged, ShadowEdgeGood, ShadowUnparseable,
ShadowFailed, ShadowSkippedBudget, per tier, and with a verdict EdgeGoodRate (the share found good
enough: averaged over an hour, the share of that hour's verdicts, which the template alarms on; in
Lambda the router functions' drift records carry none, their verdicts being the judge function's).
"""

from __future__ import annotations

import contextlib
import json
import logging

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric

from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.router import RequestOutcome
from hyrouter.router._drift import TierDrift


def metrics_namespace(settings: LambdaSettings | None = None) -> str:
    """The CloudWatch namespace: POWERTOOLS_METRICS_NAMESPACE, else `HybridRouter`."""
    return (settings or LambdaSettings.from_env()).metrics_namespace


def service_name(settings: LambdaSettings | None = None) -> str:
    """The service dimension: POWERTOOLS_SERVICE_NAME, else `hybrid-router`."""
    return (settings or LambdaSettings.from_env()).service_name


class EmfRouterMetrics:
    """A `router.RouterMetrics` that writes one EMF record per finished request (powertools metrics)."""

    def __init__(self, *, namespace: str | None = None, service: str | None = None) -> None:
        self.namespace = namespace or metrics_namespace()
        self.service = service or service_name()

    def record(self, outcome: RequestOutcome) -> None:
        """Emit the request's metrics now: one record, flushed at once (no state between requests)."""
        d = outcome.decision
        # Ephemeral: powertools' `Metrics` shares its metric set across instances; this one does not,
        # so that a request's record never mixes with the handler's own per-invocation metrics.
        m = EphemeralMetrics(namespace=self.namespace, service=self.service)
        m.add_dimensions(service=self.service, tier=d.tier)
        m.add_dimensions(service=self.service, tier=d.tier, target=d.target)
        m.add_dimensions(service=self.service, tier=d.tier, target=d.target, reason=str(d.reason))
        count = MetricUnit.Count
        m.add_metric(name="Decisions", unit=count, value=1)
        m.add_metric(name="CloudDecisions", unit=count, value=int(d.target == "cloud"))
        m.add_metric(name="EdgeDecisions", unit=count, value=int(d.target == "edge"))
        m.add_metric(name="CacheHits", unit=count, value=int(d.target == "cache"))
        m.add_metric(name="Fallbacks", unit=count, value=int(d.fallback))
        m.add_metric(name="ServerErrors", unit=count, value=int(outcome.status >= 500))
        m.add_metric(name="EstimatorLatency", unit=MetricUnit.Milliseconds, value=outcome.estimator_ms)
        m.add_metric(name="UpstreamLatency", unit=MetricUnit.Milliseconds, value=outcome.upstream_ms)
        m.add_metric(name="PromptTokens", unit=count, value=outcome.prompt_tokens)
        m.add_metric(name="CompletionTokens", unit=count, value=outcome.completion_tokens)
        m.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=outcome.cost_usd)
        m.add_metric(name="CostSavedUSD", unit=MetricUnit.NoUnit, value=outcome.cost_saved_usd)
        m.add_metadata(key="estimator", value=d.estimator)
        m.add_metadata(key="stream", value=outcome.stream)
        m.flush_metrics()


def emit_drift(drift: TierDrift, *, namespace: str | None = None, service: str | None = None) -> None:
    """One EMF record of `drift`'s signals for its tier (a signal without a value is left out)."""
    service = service or service_name()
    m = EphemeralMetrics(namespace=namespace or metrics_namespace(), service=service)
    m.add_dimensions(service=service, tier=drift.tier)
    values = {
        "ScorePSI": drift.score_psi,
        "ScoreKS": drift.score_ks,
        "CloudShare": drift.cloud_share,
        "CloudShareGap": None if drift.cloud_share_gap is None else abs(drift.cloud_share_gap),
        "EdgeGoodRate": drift.edge_good_rate,
        "DriftDetected": float(drift.drifted),
    }
    for name, value in values.items():
        if value is not None and value == value:  # NaN: no value
            m.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)
    m.flush_metrics()


def emit_shadow(tier: str, counts: dict[str, int], *, namespace: str | None = None) -> None:
    """One EMF record of a judge function invocation's counts for `tier` (and EdgeGoodRate with a verdict)."""
    service = service_name()
    m = EphemeralMetrics(namespace=namespace or metrics_namespace(), service=service)
    m.add_dimensions(service=service, tier=tier)
    for name in ("judged", "edge_good", "unparseable", "failed", "skipped_budget"):
        metric = "Shadow" + "".join(part.title() for part in name.split("_"))
        m.add_metric(name=metric, unit=MetricUnit.Count, value=counts.get(name, 0))
    if counts.get("judged", 0) > 0:
        m.add_metric(
            name="EdgeGoodRate", unit=MetricUnit.NoUnit, value=counts.get("edge_good", 0) / counts["judged"]
        )
    m.flush_metrics()


def emit_cold_start(function_name: str, *, namespace: str | None = None, service: str | None = None) -> None:
    """The `ColdStart` metric, in the record powertools' `capture_cold_start_metric` writes."""
    with single_metric(
        name="ColdStart", unit=MetricUnit.Count, value=1, namespace=namespace or metrics_namespace()
    ) as metric:
        metric.add_dimension(name="function_name", value=function_name)
        metric.add_dimension(name="service", value=service or service_name())


class _JsonMessage(logging.Filter):
    """Turns the core's decision line (a JSON string) into a dict, which powertools logs as fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("{"):
            with contextlib.suppress(ValueError):
                record.msg = json.loads(record.msg)
        return True


def route_core_logs(logger: Logger) -> None:
    """Send the core's logs (`hybrid_router`, incl. the decision line) through `logger`'s JSON handler.

    The decision line then carries the invocation's correlation id and Lambda context like every other
    line; it never contains prompt text (see `router.log_decision`).
    """
    decisions = logging.getLogger("hybrid_router.decisions")
    if not any(isinstance(f, _JsonMessage) for f in decisions.filters):
        decisions.addFilter(_JsonMessage())
    copy_config_to_registered_loggers(source_logger=logger, include={"hybrid_router"})
