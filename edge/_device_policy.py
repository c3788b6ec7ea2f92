"""The on-device policy: the router's `decide`, then privacy, the link and the device signals.

Pure and synchronous, like `router.decide`: every branch is a unit test. Order:

1. the tier: `cloud: never` answers locally whatever else holds;
2. privacy: a request with personal data stays local when the device says so (an error if the tier
   forbids local answers);
3. `router.decide` on the score, the context and the backends' health (the cloud router counts as
   unavailable while the device is offline: a cloud decision then becomes a local `offline` answer, or
   an `EdgeOffline` error where the tier forbids local answers);
4. device signals, only on decisions the score made: a slow or metered link keeps an escalation local;
   low battery, low memory or heat escalate a local answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from edge._errors import EdgeOffline, PersonalDataKeptLocal
from edge._sdk_config import DeviceTierPolicy
from edge._signals import DeviceSignals
from router._backend import BackendHealth, Target
from router._errors import ContextLengthExceeded, NoBackendAvailable
from router._policy import RequestFacts, RouteReason, decide


class DeviceReason(enum.StrEnum):
    """Reasons only the device gives, besides `router.RouteReason`'s."""

    OFFLINE = "offline"
    PRIVATE_DATA = "private_data"
    LOW_BATTERY = "low_battery"
    LOW_MEMORY = "low_memory"
    THERMAL = "thermal"
    SLOW_LINK = "slow_link"
    METERED_LINK = "metered_link"


Reason = RouteReason | DeviceReason


@dataclass(frozen=True)
class DeviceDecision:
    """Where one request is answered (`edge`: on this device; `cloud`: the cloud router) and why."""

    target: Target
    reason: Reason
    score: float
    threshold: float | None
    tier: str
    tenant: str
    estimator: str
    offline: bool = False
    fallback: bool = False
    #: the signal facts that changed the decision, e.g. "battery 12% discharging"
    signals: tuple[str, ...] = ()
    #: the kinds of personal data found (never the values)
    personal_data: tuple[str, ...] = ()
    original_reason: Reason | None = field(default=None)

    def fall_back(self, target: Target, reason: Reason, *, offline: bool | None = None) -> DeviceDecision:
        """This decision redirected to `target` after its own target failed."""
        return replace(
            self,
            target=target,
            reason=reason,
            fallback=True,
            original_reason=self.reason,
            offline=self.offline if offline is None else offline,
        )


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
) -> DeviceDecision:
    """Where this request is answered; raises `EdgeOffline`, `PersonalDataKeptLocal`,
    `ContextLengthExceeded` or `NoBackendAvailable` when no allowed place can answer it."""
    tier = policy.routing
    needed = facts.prompt_tokens + facts.max_tokens
    fits_edge = facts.edge.available and needed <= facts.edge_context_window

    def make(target: Target, reason: Reason, notes: tuple[str, ...] = ()) -> DeviceDecision:
        return DeviceDecision(
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
            raise EdgeOffline(
                f"The device is offline (the cloud router cannot be reached) and tier {tier_name!r} does "
                "not allow this request to be answered on the device."
            ) from exc
        raise
    reason: Reason = base.reason
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
