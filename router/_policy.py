"""The routing policy: (score, tier, request facts, backend health) → `Decision`.

Pure and synchronous: no I/O, no clock, so every branch is a unit test. `decide` is the rule;
`Policy` is the engine's seam for it: `TierPolicy` applies `decide` with a config's tiers, and a
wrapper (the device policy in `edge/`: privacy, link, device signals) adds its own rules around it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from hyrouter.router._backend import BackendHealth, Target
from hyrouter.router._config import TierConfig
from hyrouter.router._errors import (
    BackendError,
    BudgetExhausted,
    ContextLengthExceeded,
    EdgeBusy,
    NoBackendAvailable,
    RouterError,
    UnsupportedFeature,
)

if TYPE_CHECKING:
    from hyrouter.router._wire import ChatCompletionRequest


class RouteReason(enum.StrEnum):
    """Why a request went where it went; the value of `x-route-reason`."""

    TIER_FORCES_CLOUD = "tier_forces_cloud"
    TIER_FORBIDS_CLOUD = "tier_forbids_cloud"
    SCORE_ABOVE_THRESHOLD = "score_above_threshold"
    SCORE_BELOW_THRESHOLD = "score_below_threshold"
    CONTEXT_TOO_LONG = "context_too_long"
    EDGE_UNAVAILABLE = "edge_unavailable"
    EDGE_BUSY = "edge_busy"
    CLOUD_UNAVAILABLE = "cloud_unavailable"
    BUDGET_EXHAUSTED = "budget_exhausted"
    # The edge answered, and its model's confidence was below the tier's `verify.min_confidence`.
    EDGE_UNSURE = "edge_unsure"
    # Answered from the response cache (`hyrouter.router._cache`), before any estimate or backend.
    CACHE_HIT = "cache_hit"
    SEMANTIC_CACHE_HIT = "semantic_cache_hit"
    # The request asks what the edge model cannot give (`ChatBackend.cannot_honour`).
    NEEDS_TOOLS = "needs_tools"
    NEEDS_LOGPROBS = "needs_logprobs"
    NEEDS_STRUCTURED_OUTPUT = "needs_structured_output"
    # The deployment has one backend only (edge-only, cloud-only): what the other would have taken.
    EDGE_DISABLED = "edge_disabled"
    CLOUD_NOT_CONFIGURED = "cloud_not_configured"
    # Given only by the device policy (`edge/`), which sees the device and its link.
    OFFLINE = "offline"
    PRIVATE_DATA = "private_data"
    LOW_BATTERY = "low_battery"
    LOW_MEMORY = "low_memory"
    THERMAL = "thermal"
    SLOW_LINK = "slow_link"
    METERED_LINK = "metered_link"


@dataclass(frozen=True)
class RequestFacts:
    """What the policy knows about one request besides its score."""

    prompt_tokens: int
    max_tokens: int
    edge: BackendHealth
    cloud: BackendHealth
    edge_context_window: int
    cloud_context_window: int
    budget_left_usd: float | None = None
    #: what the request asks that the edge model cannot give ("tools"; see `ChatBackend.cannot_honour`)
    edge_lacks: str | None = None


@dataclass(frozen=True)
class Decision:
    """Where one request is answered and why; carried by every response and logged once."""

    target: Target
    reason: RouteReason
    score: float
    threshold: float | None
    tier: str
    tenant: str
    estimator: str
    fallback: bool = False
    #: the decision this one replaced when the first target failed
    original_reason: RouteReason | None = None
    #: the device could not reach the cloud router when this was decided (device policy only)
    offline: bool = False
    #: the device signals that changed the decision, e.g. "battery 12% not charging"
    signals: tuple[str, ...] = ()
    #: the kinds of personal data found in the request (never the values)
    personal_data: tuple[str, ...] = ()
    #: the A/B arm of the request ("a", "b"), None where its tier runs no test
    variant: str | None = None

    def fall_back(self, target: Target, reason: RouteReason, *, offline: bool | None = None) -> Decision:
        """This decision redirected to `target` after its own target failed."""
        return replace(
            self,
            target=target,
            reason=reason,
            fallback=True,
            original_reason=self.reason,
            offline=self.offline if offline is None else offline,
        )


@dataclass(frozen=True)
class PolicyInput:
    """Everything a policy decides from: the score, who asks, the request and its facts."""

    score: float
    tier_name: str
    tenant: str
    estimator: str
    facts: RequestFacts
    request: ChatCompletionRequest
    #: the A/B arm the request is in (`hyrouter.router._ab`), None where its tier runs no test
    variant: str | None = None
    #: the threshold of the request's arm, in place of the tier's (None: the tier's)
    threshold: float | None = None


class Policy(Protocol):
    """The engine's seam for deciding: where a request goes, and where it goes when that fails."""

    def tier(self, name: str) -> TierConfig:
        """The routing rules of tier `name`."""
        ...

    def decide(self, given: PolicyInput) -> Decision:
        """Where the request is answered; raises a `RouterError` when no allowed place can answer it."""
        ...

    def fall_back(self, decision: Decision, failure: BackendError, facts: RequestFacts) -> Decision:
        """The decision to retry elsewhere after `decision.target` failed, or `failure` re-raised."""
        ...


class TierPolicy:
    """The router's policy: `decide` with the tiers of a config, and the tier's fallback rules."""

    #: A stream that breaks after its first content goes on where `fall_back` sends it (the engine
    #: asks only a policy that says so; see `hyrouter.router._failover`).
    continues_cut_streams = True

    def __init__(self, tiers: Mapping[str, TierConfig]) -> None:
        """Decide with `tiers` (kept by reference: a reloaded config passes a new policy)."""
        self.tiers = tiers

    def tier(self, name: str) -> TierConfig:
        """The routing rules of tier `name`."""
        return self.tiers[name]

    def decide(self, given: PolicyInput) -> Decision:
        """`decide` on the tier's rules (at the threshold of the request's A/B arm, when it has one)."""
        tier = self.tier(given.tier_name)
        if given.threshold is not None:
            tier = tier.model_copy(update={"threshold": given.threshold})
        try:
            decision = decide(
                score=given.score,
                tier_name=given.tier_name,
                tier=tier,
                tenant=given.tenant,
                estimator=given.estimator,
                facts=given.facts,
            )
        except RouterError as exc:
            if given.variant is not None and exc.decision is not None:
                exc.decision = replace(exc.decision, variant=given.variant)
            raise
        return decision if given.variant is None else replace(decision, variant=given.variant)

    def fall_back(self, decision: Decision, failure: BackendError, facts: RequestFacts) -> Decision:
        """The other backend, once, where the tier allows it and that backend can take the request now."""
        tier = self.tier(decision.tier)
        needed = facts.prompt_tokens + facts.max_tokens
        if decision.target == "cloud":
            other, allowed, reason = "edge", tier.fallback_to_edge, RouteReason.CLOUD_UNAVAILABLE
            health, window = facts.edge, facts.edge_context_window
        else:
            other, allowed = "cloud", tier.fallback_to_cloud and tier.cloud != "never"
            reason = RouteReason.EDGE_BUSY if isinstance(failure, EdgeBusy) else RouteReason.EDGE_UNAVAILABLE
            health, window = facts.cloud, facts.cloud_context_window
        honoured = other != "edge" or facts.edge_lacks is None
        if allowed and honoured and not decision.fallback and health.available and needed <= window:
            return decision.fall_back(other, reason)
        raise failure


def decide(
    *, score: float, tier_name: str, tier: TierConfig, tenant: str, estimator: str, facts: RequestFacts
) -> Decision:
    """Apply the tier's policy.

    Order: what the tier forces or forbids; whether the deployment has an edge model at all; whether
    the edge model can give what the request asks (tools, ...); whether the prompt fits it; whether
    the edge can take it now; the budget; then the score against the threshold. A cloud target whose
    endpoint is down becomes a degraded edge answer where the tier allows it; one where no cloud
    endpoint is configured (edge-only) becomes the edge's answer on the same terms, with its own reason.
    A cloud target past the budget (`budget_left_usd` at or below 0) is answered on the edge where it
    fits, else refused (`BudgetExhausted`, 429): a budget is a cap, never overspent.
    """
    needed = facts.prompt_tokens + facts.max_tokens
    fits_edge = facts.edge.available and needed <= facts.edge_context_window and facts.edge_lacks is None
    fits_cloud = needed <= facts.cloud_context_window

    def make(target: Target, reason: RouteReason) -> Decision:
        return Decision(
            target=target,
            reason=reason,
            score=score,
            threshold=tier.threshold if tier.cloud == "allowed" else None,  # else the score decided nothing
            tier=tier_name,
            tenant=tenant,
            estimator=estimator,
        )

    def too_long(where: str, window: int) -> ContextLengthExceeded:
        return ContextLengthExceeded(
            f"This request needs {needed} tokens ({facts.prompt_tokens} in the messages, {facts.max_tokens} "
            f"for the completion), more than {where} allows ({window}). Shorten the messages or lower "
            "max_tokens.",
            param="messages",
        )

    if tier.cloud == "never":
        decided = make("edge", RouteReason.TIER_FORBIDS_CLOUD)
        _edge_can_answer(
            decided,
            facts,
            needed,
            too_long,
            why="this tier may not use the cloud",
            no_edge="This router has no edge model (edge disabled) and this tier may not use the cloud.",
            where="the edge model",
        )
        return decided

    if tier.cloud == "forced":
        wanted = make("cloud", RouteReason.TIER_FORCES_CLOUD)
    elif not facts.edge.configured:
        wanted = make("cloud", RouteReason.EDGE_DISABLED)
    elif facts.edge_lacks is not None:
        wanted = make("cloud", RouteReason(f"needs_{facts.edge_lacks}"))
    elif needed > facts.edge_context_window:
        wanted = make("cloud", RouteReason.CONTEXT_TOO_LONG)
    elif not facts.edge.available:
        wanted = make("cloud", RouteReason.EDGE_UNAVAILABLE)
    elif facts.edge.busy and tier.fallback_to_cloud:
        wanted = make("cloud", RouteReason.EDGE_BUSY)
    elif score >= tier.threshold:
        wanted = make("cloud", RouteReason.SCORE_ABOVE_THRESHOLD)
    else:
        return make("edge", RouteReason.SCORE_BELOW_THRESHOLD)

    if not facts.cloud.configured:
        return _edge_only(wanted, facts, tier, needed, too_long)
    if not fits_cloud and fits_edge and tier.fallback_to_edge:
        return replace(wanted, target="edge", reason=RouteReason.CONTEXT_TOO_LONG)
    if not fits_cloud:
        raise too_long(
            "every backend this tier may use", max(facts.cloud_context_window, facts.edge_context_window)
        )
    if facts.budget_left_usd is not None and facts.budget_left_usd <= 0:
        spent = replace(wanted, target="edge", reason=RouteReason.BUDGET_EXHAUSTED)
        if fits_edge:
            return spent
        error = BudgetExhausted(
            "This tenant's cloud budget for the period is spent and the edge model cannot answer "
            "this request; try again in the next budget period or ask for a larger budget."
        )
        error.decision = replace(spent, target="cloud")  # recorded: a refusal, nothing was sent
        raise error
    if not facts.cloud.available:
        if fits_edge and tier.fallback_to_edge:
            return wanted.fall_back("edge", RouteReason.CLOUD_UNAVAILABLE)
        raise _refused(
            wanted,
            f"The cloud endpoint is unavailable ({facts.cloud.detail}) and this request "
            "cannot be answered on the edge.",
        )
    return wanted


def _edge_only(
    wanted: Decision,
    facts: RequestFacts,
    tier: TierConfig,
    needed: int,
    too_long: Callable[[str, int], ContextLengthExceeded],
) -> Decision:
    """Where a request that wants the cloud goes when no cloud endpoint is configured: the edge, where
    the prompt fits, the model is up and the tier allows answers there (`fallback_to_edge`)."""
    _edge_can_answer(
        wanted,
        facts,
        needed,
        too_long,
        why="no cloud endpoint is configured",
        no_edge="This router has neither an edge model nor a cloud endpoint configured.",
        where="the edge model (no cloud endpoint is configured)",
    )
    if not tier.fallback_to_edge:
        raise _refused(
            wanted,
            "No cloud endpoint is configured and this tier does not take an edge answer in its place.",
        )
    return replace(wanted, target="edge", reason=RouteReason.CLOUD_NOT_CONFIGURED)


def _edge_can_answer(
    decision: Decision,
    facts: RequestFacts,
    needed: int,
    too_long: Callable[[str, int], ContextLengthExceeded],
    *,
    why: str,
    no_edge: str,
    where: str,
) -> None:
    """Raise why the edge cannot answer where the cloud may not (`why`): no edge model (`no_edge`),
    something it lacks, a prompt past its window (`where` names it), or the model down."""
    if not facts.edge.configured:
        raise _refused(decision, no_edge)
    if facts.edge_lacks is not None:
        raise _lacking(facts.edge_lacks, why)
    if needed > facts.edge_context_window:
        raise too_long(where, facts.edge_context_window)
    if not facts.edge.available:
        raise _refused(decision, f"The edge model is unavailable ({facts.edge.detail}) and {why}.")


#: The request member behind each thing the edge can lack, for the error's `param`.
_PARAM_OF = {"tools": "tools", "logprobs": "logprobs", "structured_output": "response_format"}


def _lacking(what: str, why_not_the_cloud: str) -> UnsupportedFeature:
    """The 400 for a request that needs `what` (`RequestFacts.edge_lacks`) where only the edge may answer."""
    return UnsupportedFeature(
        f"This request needs {what.replace('_', ' ')}, which the edge model cannot give, and "
        f"{why_not_the_cloud}.",
        param=_PARAM_OF.get(what),
    )


def _refused(decision: Decision, message: str) -> NoBackendAvailable:
    """The error for a decision no backend can carry out, carrying the decision so it is recorded."""
    error = NoBackendAvailable(message)
    error.decision = decision
    return error
