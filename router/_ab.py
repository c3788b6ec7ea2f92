"""A/B tests of a tier's routing: which arm a request is in, and what arm "b" routes with.

A tier's `ab` section (`TierABConfig`) sends a share of its requests to arm "b", which routes with its
own threshold and/or estimator; the others are arm "a" (the tier as configured). The arm is a pure
function of a key (the request id, else the conversation's text; or the tenant) hashed with the tier's
name, so a retried request, or every request of a tenant with `by: tenant`, stays in its arm, and tests
of different tiers are independent. The engine records the arm in the decision (`Decision.variant`) and
so in the outcome record; `hybrid-router models canary` compares the arms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hyrouter.router._config import TierConfig
from hyrouter.router._estimator import ComplexityEstimator, conversation_text
from hyrouter.router._plan import Tenant
from hyrouter.router._request_id import current_request_id
from hyrouter.router._wire import ChatCompletionRequest

#: The arm that routes as the tier says, and the one that routes with the test's settings.
CONTROL, TREATMENT = "a", "b"

EstimatorLoader = Callable[[str, str | None], ComplexityEstimator]


def in_treatment(tier: str, key: str, share: float) -> bool:
    """Whether `key` falls in the first `share` of tier `tier`'s hash space (deterministic)."""
    digest = hashlib.sha256(f"{tier}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < share


@dataclass(frozen=True)
class Arm:
    """What one request is routed with: its arm, and arm b's threshold and estimator (None: the tier's)."""

    variant: str
    threshold: float | None = None
    estimator: ComplexityEstimator | None = None


class ABArms:
    """The A/B tests of a config's tiers, with arm b's estimators loaded once."""

    def __init__(
        self,
        tiers: Mapping[str, TierConfig],
        load: EstimatorLoader,
        loaded: Mapping[str, ComplexityEstimator] | None = None,
    ) -> None:
        """Load each test's estimator with `load(name, version)` (reusing those in `loaded`, keyed
        `name@version`, so a reconfigured engine keeps its models)."""
        self.tiers = {name: tier for name, tier in tiers.items() if tier.ab is not None}
        self.estimators: dict[str, ComplexityEstimator] = {}
        for tier in self.tiers.values():
            ref = tier.ab.estimator if tier.ab else None
            if ref is None:
                continue
            key = f"{ref.name}@{ref.version}"
            if key not in self.estimators:
                self.estimators[key] = (loaded or {}).get(key) or load(ref.name, ref.version)

    def arm(self, request: ChatCompletionRequest, tenant: Tenant) -> Arm | None:
        """The arm of `request`; None when its tier runs no test."""
        tier = self.tiers.get(tenant.tier)
        if tier is None or tier.ab is None:
            return None
        ab = tier.ab
        if ab.by == "tenant":
            key = tenant.name
        else:
            key = current_request_id() or conversation_text(request.messages)
        if not in_treatment(tenant.tier, key, ab.share):
            return Arm(CONTROL)
        estimator = None
        if ab.estimator is not None:
            estimator = self.estimators[f"{ab.estimator.name}@{ab.estimator.version}"]
        return Arm(TREATMENT, ab.threshold, estimator)
