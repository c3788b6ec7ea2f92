"""The on-device policy: the router's `decide`, then privacy, the link and the device signals.

`decide_on_device` is pure and synchronous, like `router.decide`: every branch is a unit test. Order:

1. the tier: `cloud: never` answers locally whatever else holds;
2. privacy: a request with personal data stays local when the device says so (an error if the tier
   forbids local answers);
3. `router.decide` on the score, the context and the backends' health (the cloud router counts as
   unavailable while the device is offline: a cloud decision then becomes a local `offline` answer, or
   an `EdgeOffline` error where the tier forbids local answers);
4. device signals, only on decisions the score made: a slow or metered link keeps an escalation local;
   low battery, low memory or heat escalate a local answer.

`DevicePolicy` is that rule as the engine's `Policy`: the `RoutingEngine` an `EdgeRouter` runs
decides with it, and falls back with its rules (an unreachable cloud router answers locally as
`offline`; personal data never escalates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hyrouter.edge._errors import CloudUnreachable, EdgeOffline, PersonalDataKeptLocal
from hyrouter.edge._privacy import personal_data_in
from hyrouter.edge._sdk_config import DeviceTierPolicy, PrivacyConfig
from hyrouter.edge._signals import DeviceSignals
from hyrouter.router._backend import BackendHealth, Target
from hyrouter.router._config import TierConfig
from hyrouter.router._errors import (
    BackendError,
    ContextLengthExceeded,
    NoBackendAvailable,
    UnsupportedFeature,
)
from hyrouter.router._policy import Decision, PolicyInput, RequestFacts, RouteReason, TierPolicy, decide

#: The device's reasons are the router's: one enum, so that a route reads the same everywhere.
DeviceReason = RouteReason
#: A device decision is a router `Decision` whose device fields (offline, signals, personal data) are set.
DeviceDecision = Decision


def local_answer_allowed(policy: DeviceTierPolicy) -> bool:
    """Whether the tier lets the device answer at all (a forced-cloud tier without edge fallback does not)."""
    return policy.routing.cloud != "forced" or policy.routing.fallback_to_edge


def decide_on_device(
    *,
    score: float,
    tier_name: str,
    policy: DeviceTierPolicy,
    tenant: str,
    estimator: str,
    facts: RequestFacts,
    signals: DeviceSignals,
    online: bool,
    personal_data: tuple[str, ...] = (),
    keep_private_local: bool = False,
) -> Decision:
    """Where this request is answered; raises `EdgeOffline`, `PersonalDataKeptLocal`,
    `ContextLengthExceeded` or `NoBackendAvailable` when no allowed place can answer it."""
    tier = policy.routing
    needed = facts.prompt_tokens + facts.max_tokens
    fits_edge = facts.edge.available and needed <= facts.edge_context_window and facts.edge_lacks is None

    def make(target: Target, reason: RouteReason, notes: tuple[str, ...] = ()) -> Decision:
        return Decision(
            target=target,
            reason=reason,
            score=score,
            threshold=tier.threshold if tier.cloud == "allowed" else None,
            tier=tier_name,
            tenant=tenant,
            estimator=estimator,
            offline=not online,
            signals=notes,
            personal_data=personal_data,
        )

    if personal_data and keep_private_local and tier.cloud != "never":
        if not local_answer_allowed(policy):
            raise PersonalDataKeptLocal(
                f"This request contains personal data ({', '.join(personal_data)}), which this device keeps "
                f"local, but tier {tier_name!r} does not allow answers on the device."
            )
        if facts.edge_lacks is not None:
            raise UnsupportedFeature(
                f"This request contains personal data ({', '.join(personal_data)}), which this device keeps "
                f"local, and needs {facts.edge_lacks.replace('_', ' ')}, which the device model cannot give."
            )
        if needed > facts.edge_context_window:
            raise ContextLengthExceeded(
                f"This request contains personal data ({', '.join(personal_data)}), so it is answered on the "
                f"device, but it needs {needed} tokens, more than the device model allows "
                f"({facts.edge_context_window}). Shorten the messages or lower max_tokens.",
                param="messages",
            )
        if not facts.edge.available:
            raise NoBackendAvailable(
                f"This request contains personal data, which this device keeps local, and the device "
                f"model is unavailable ({facts.edge.detail})."
            )
        return make("edge", DeviceReason.PRIVATE_DATA)

    cloud = facts.cloud if online else BackendHealth(available=False, detail="offline")
    try:
        base = decide(
            score=score,
            tier_name=tier_name,
            tier=tier,
            tenant=tenant,
            estimator=estimator,
            facts=replace(facts, cloud=cloud),
        )
    except NoBackendAvailable as exc:
        if not online and facts.cloud.available:
            offline = EdgeOffline(
                f"The device is offline (the cloud router cannot be reached) and tier {tier_name!r} does "
                "not allow this request to be answered on the device."
            )
            offline.decision = exc.decision
            raise offline from exc
        raise
    reason: RouteReason = base.reason
    if base.fallback and base.reason is RouteReason.CLOUD_UNAVAILABLE and not online:
        reason = DeviceReason.OFFLINE
    decision = make(base.target, reason)
    if base.fallback:
        decision = replace(decision, fallback=True, original_reason=base.original_reason)
    if not online:
        return decision

    rules = policy.signals
    prefer_local: list[tuple[DeviceReason, str]] = []
    rtt = signals.link_rtt_ms
    if rules.slow_link_rtt_ms is not None and rtt is not None and rtt >= rules.slow_link_rtt_ms:
        prefer_local.append((DeviceReason.SLOW_LINK, f"link rtt {rtt:.0f} ms"))
    if rules.local_on_metered and signals.metered:
        prefer_local.append((DeviceReason.METERED_LINK, "metered link"))
    prefer_cloud: list[tuple[DeviceReason, str]] = []
    battery = signals.battery_pct
    if (
        rules.low_battery_pct is not None
        and battery is not None
        and battery <= rules.low_battery_pct
        and signals.charging is not True
    ):
        prefer_cloud.append((DeviceReason.LOW_BATTERY, f"battery {battery:.0f}% not charging"))
    memory = signals.free_memory_mb
    if rules.min_free_memory_mb is not None and memory is not None and memory < rules.min_free_memory_mb:
        prefer_cloud.append((DeviceReason.LOW_MEMORY, f"free memory {memory:.0f} MB"))
    heat = signals.temperature_c
    if rules.hot_celsius is not None and heat is not None and heat >= rules.hot_celsius:
        prefer_cloud.append((DeviceReason.THERMAL, f"temperature {heat:.0f} °C"))

    if decision.reason is RouteReason.SCORE_ABOVE_THRESHOLD and prefer_local and fits_edge:
        return make("edge", prefer_local[0][0], tuple(note for _, note in prefer_local))
    if (
        decision.reason is RouteReason.SCORE_BELOW_THRESHOLD
        and prefer_cloud
        and not prefer_local
        and facts.cloud.available
        and needed <= facts.cloud_context_window
    ):
        return make("cloud", prefer_cloud[0][0], tuple(note for _, note in prefer_cloud))
    return decision


class DevicePolicy:
    """`decide_on_device` as the engine's `Policy`, on the device's current tier, signals and link."""

    #: A tier's budget and rate limit are the cloud router's to hold, for the tenant the device's key
    #: names; the device's engine neither reserves nor counts (`router._failover.enforces_tenant_limits`).
    enforces_tenant_limits = False

    def __init__(
        self,
        current: Callable[[], tuple[str, DeviceTierPolicy]],
        *,
        signals: Callable[[], DeviceSignals],
        online: Callable[[], bool],
        privacy: PrivacyConfig,
    ) -> None:
        """Decide with the tier `current()` returns now (config sync may change it between requests)."""
        self._current = current
        self._signals = signals
        self._online = online
        self.privacy = privacy

    def tier(self, name: str) -> TierConfig:
        """The routing rules of the device's tier."""
        return self._current()[1].routing

    def decide(self, given: PolicyInput) -> Decision:
        """Privacy, link and device signals around the router's `decide`."""
        tier_name, policy = self._current()
        keep_local = self.privacy.keep_personal_data_local
        privacy = self.privacy
        personal = (
            tuple(personal_data_in(given.request.messages, privacy.kinds, privacy.phone_regions))
            if keep_local
            else ()
        )
        return decide_on_device(
            score=given.score,
            tier_name=tier_name,
            policy=policy,
            tenant=given.tenant,
            estimator=given.estimator,
            # Budgets are the cloud router's to enforce, with the tenant its key names: the device has
            # neither the real tenant nor the cloud's spend.
            facts=replace(given.facts, budget_left_usd=None),
            signals=self._signals(),
            online=self._online(),
            personal_data=personal,
            keep_private_local=keep_local,
        )

    def fall_back(self, decision: Decision, failure: BackendError, facts: RequestFacts) -> Decision:
        """The device model failed: escalate as the router would, unless the data must stay here or the
        link is down. The cloud router failed: answer here where the tier allows any local answer,
        as `offline` when the network did not carry the call (else an `EdgeOffline` error)."""
        tier_name, policy = self._current()
        if decision.target == "edge":
            if decision.reason is RouteReason.PRIVATE_DATA or not self._online():
                raise failure
            # Keyed by the decision's tier: a config sync may have changed the current one since.
            return TierPolicy({decision.tier: policy.routing}).fall_back(decision, failure, facts)
        unreachable = isinstance(failure, CloudUnreachable)
        needed = facts.prompt_tokens + facts.max_tokens
        allowed = local_answer_allowed(policy)
        fits = facts.edge.available and needed <= facts.edge_context_window and facts.edge_lacks is None
        if allowed and not decision.fallback and fits:
            if unreachable:
                return decision.fall_back("edge", RouteReason.OFFLINE, offline=True)
            return decision.fall_back("edge", RouteReason.CLOUD_UNAVAILABLE)
        if not unreachable:
            raise failure
        why = (
            "the device model cannot take it"
            if allowed
            else f"tier {tier_name!r} does not allow answers on the device"
        )
        raise EdgeOffline(
            f"The device is offline ({failure.message}) and this request cannot be answered locally: {why}."
        ) from failure
