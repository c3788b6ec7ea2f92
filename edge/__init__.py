"""What runs on a CPU next to the user: the llama.cpp backend and the on-device SDK (`EdgeRouter`).

The SDK decides on the device: the estimator and the small model run here, and only hard or premium
requests, or those the device's signals send away, cross the network to the cloud router::

    from edge import EdgeRouter, load_edge_router_config

    async with EdgeRouter.open(load_edge_router_config("device.yaml")) as router:
        answer = await router.complete({"messages": [{"role": "user", "content": "Hi"}]})
        print(answer.route.target, answer.route.reason, answer.route.offline)

Names are imported on first use, so that `import edge.llama_cpp_backend` (the cloud's Lambda path)
does not pay for the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge._device_policy import DeviceDecision, DevicePolicy, DeviceReason, decide_on_device
    from edge._errors import (
        CloudUnreachable,
        EdgeOffline,
        EscalationInterrupted,
        ModelTooLarge,
        PersonalDataKeptLocal,
    )
    from edge._escalation import EscalationClient
    from edge._escalation_backend import EscalationBackend
    from edge._link import LinkMonitor
    from edge._privacy import find_personal_data
    from edge._resources import check_model_fits
    from edge._router import DevicePlan, EdgeRouter
    from edge._sdk_config import (
        CloudLink,
        ConfigSyncSettings,
        DeviceTierPolicy,
        EdgeRouterConfig,
        PrivacyConfig,
        SignalPolicy,
        load_edge_router_config,
        parse_edge_router_config,
    )
    from edge._signals import DeviceSignals, LinuxSignalReader, SignalSource, StaticSignals
    from edge._sync import PolicySync, SyncedPolicy, SyncResult
    from edge._types import EdgeChunk, EdgeCompletion, EdgeRoute, EdgeStream

_EXPORTS = {
    "CloudLink": "edge._sdk_config",
    "EscalationBackend": "edge._escalation_backend",
    "EscalationClient": "edge._escalation",
    "CloudUnreachable": "edge._errors",
    "ConfigSyncSettings": "edge._sdk_config",
    "DeviceDecision": "edge._device_policy",
    "DevicePlan": "edge._router",
    "DevicePolicy": "edge._device_policy",
    "DeviceReason": "edge._device_policy",
    "DeviceSignals": "edge._signals",
    "DeviceTierPolicy": "edge._sdk_config",
    "EdgeChunk": "edge._types",
    "EdgeCompletion": "edge._types",
    "EdgeOffline": "edge._errors",
    "EdgeRoute": "edge._types",
    "EdgeRouter": "edge._router",
    "EdgeRouterConfig": "edge._sdk_config",
    "EdgeStream": "edge._types",
    "EscalationInterrupted": "edge._errors",
    "LinkMonitor": "edge._link",
    "LinuxSignalReader": "edge._signals",
    "ModelTooLarge": "edge._errors",
    "PersonalDataKeptLocal": "edge._errors",
    "PolicySync": "edge._sync",
    "PrivacyConfig": "edge._sdk_config",
    "SignalPolicy": "edge._sdk_config",
    "SignalSource": "edge._signals",
    "StaticSignals": "edge._signals",
    "SyncResult": "edge._sync",
    "SyncedPolicy": "edge._sync",
    "check_model_fits": "edge._resources",
    "decide_on_device": "edge._device_policy",
    "find_personal_data": "edge._privacy",
    "load_edge_router_config": "edge._sdk_config",
    "parse_edge_router_config": "edge._sdk_config",
}

__all__ = [
    "CloudLink",
    "CloudUnreachable",
    "ConfigSyncSettings",
    "DeviceDecision",
    "DevicePlan",
    "DevicePolicy",
    "DeviceReason",
    "DeviceSignals",
    "DeviceTierPolicy",
    "EdgeChunk",
    "EdgeCompletion",
    "EdgeOffline",
    "EdgeRoute",
    "EdgeRouter",
    "EdgeRouterConfig",
    "EdgeStream",
    "EscalationBackend",
    "EscalationClient",
    "EscalationInterrupted",
    "LinkMonitor",
    "LinuxSignalReader",
    "ModelTooLarge",
    "PersonalDataKeptLocal",
    "PolicySync",
    "PrivacyConfig",
    "SignalPolicy",
    "SignalSource",
    "StaticSignals",
    "SyncResult",
    "SyncedPolicy",
    "check_model_fits",
    "decide_on_device",
    "find_personal_data",
    "load_edge_router_config",
    "parse_edge_router_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
