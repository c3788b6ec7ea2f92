"""The metrics interface and the one structured log line per routing decision.

The local server keeps counters in memory (served on `/metrics` as JSON); the Lambda handler plugs
in a powertools EMF implementation of the same protocol.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hyrouter.router._policy import Decision
from hyrouter.router._request_id import current_request_id

if TYPE_CHECKING:
    from hyrouter.router._wire import ChatCompletionRequest

DECISION_LOGGER = logging.getLogger("hybrid_router.decisions")


@dataclass(frozen=True)
class RequestOutcome:
    """What happened to one request after its decision, for metrics and the decision log."""

    decision: Decision
    model: str
    status: int
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimator_ms: float = 0.0
    upstream_ms: float = 0.0
    cost_usd: float = 0.0
    cost_saved_usd: float = 0.0
    error_code: str | None = None
    #: the error code of the mid-stream failure this answer was continued after on another backend
    failover_from: str | None = None
    #: content chunks the caller had (one token each, about) when the stream failed over
    failover_at_tokens: int | None = None
    #: the answer's id (`chatcmpl-...`), None when there is no answer
    completion_id: str | None = None
    #: the estimator's input features (`FeatureEstimator`), when captured
    features: Sequence[float] | None = None
    #: the request answered (outcome capture reads its text off the request path)
    request: ChatCompletionRequest | None = None
    #: whether the tier lets its prompts' text be kept (`TierConfig.store_prompts`)
    keep_prompt: bool = False
    #: the edge model's confidence in its answer, where the tier verifies edge answers
    confidence: float | None = None
    #: the calibration that gave `confidence` (`Calibration.name`)
    calibration: str | None = None
    #: the edge's completion tokens thrown away when an unsure edge answer went to the cloud
    edge_tokens_discarded: int | None = None
    #: the answer's text, for observers that look at it (shadow judging); None without an answer
    answer: str | None = None


class DecisionObserver(Protocol):
    """The engine's seam for watching: sees every finished request with its decision and outcome.

    Metrics, the decision log and EMF are observers; so are outcome capture, shadow evaluation and
    drift detection. `record` runs on the request's path: keep it quick (queue slow work), and
    never raise (the engine logs and ignores an observer's exception).
    """

    def record(self, outcome: RequestOutcome) -> None:
        """See one finished request."""
        ...


#: Metrics are an observer that counts; the name the engine's `metrics=` argument has always had.
RouterMetrics = DecisionObserver


class InMemoryMetrics:
    """Counters of decisions by target, tier and reason, plus token and cost totals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.fallbacks = 0
        self.errors: Counter[str] = Counter()
        #: streams continued on another backend, by the error code of the failure that cut them
        self.failovers: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self.cost_usd = 0.0
        self.cost_saved_usd = 0.0

    def record(self, outcome: RequestOutcome) -> None:
        """Count one finished request."""
        d = outcome.decision
        with self._lock:
            self.decisions[(d.target, d.tier, str(d.reason))] += 1
            self.fallbacks += int(d.fallback)
            if outcome.error_code:
                self.errors[outcome.error_code] += 1
            if outcome.failover_from:
                self.failovers[outcome.failover_from] += 1
            self.tokens[f"{d.target}_prompt"] += outcome.prompt_tokens
            self.tokens[f"{d.target}_completion"] += outcome.completion_tokens
            self.cost_usd += outcome.cost_usd
            self.cost_saved_usd += outcome.cost_saved_usd

    def snapshot(self) -> dict[str, object]:
        """The counters as JSON-ready data."""
        with self._lock:
            return {
                "decisions": [
                    {"target": t, "tier": tier, "reason": r, "count": n}
                    for (t, tier, r), n in sorted(self.decisions.items())
                ],
                "fallbacks": self.fallbacks,
                "errors": dict(self.errors),
                "failovers": dict(self.failovers),
                "tokens": dict(self.tokens),
                "cost_usd": round(self.cost_usd, 8),
                "cost_saved_usd": round(self.cost_saved_usd, 8),
            }


class DecisionLog:
    """The observer that writes the one structured log line per decision (`log_decision`)."""

    def record(self, outcome: RequestOutcome) -> None:
        """Log `outcome`."""
        log_decision(outcome)


def log_decision(outcome: RequestOutcome) -> None:
    """Write the one structured record for this request's decision (no prompt text).

    The record's message is the dict of `decision_fields`, not text: a JSON formatter (python-json-logger
    on the local server, powertools in Lambda) writes its members as the line's own, one object per
    line.
    """
    if DECISION_LOGGER.isEnabledFor(logging.INFO):
        DECISION_LOGGER.info(decision_fields(outcome))


def decision_fields(outcome: RequestOutcome) -> dict[str, object]:
    """The decision line's members: where the request went and why, what it cost, and its request id."""
    d = outcome.decision
    return {
        "event": "route_decision",
        "request_id": current_request_id(),
        "target": d.target,
        "reason": str(d.reason),
        "original_reason": str(d.original_reason) if d.original_reason else None,
        "fallback": d.fallback,
        "score": round(d.score, 4),
        "threshold": d.threshold,
        "tier": d.tier,
        "tenant": d.tenant,
        "estimator": d.estimator,
        "model": outcome.model,
        "status": outcome.status,
        "stream": outcome.stream,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "estimator_ms": round(outcome.estimator_ms, 3),
        "upstream_ms": round(outcome.upstream_ms, 1),
        "cost_usd": round(outcome.cost_usd, 8),
        "cost_saved_usd": round(outcome.cost_saved_usd, 8),
        "error_code": outcome.error_code,
        "failover_from": outcome.failover_from,
        "failover_at_tokens": outcome.failover_at_tokens,
        "confidence": None if outcome.confidence is None else round(outcome.confidence, 4),
        "calibration": outcome.calibration,
    }
