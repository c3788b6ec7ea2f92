"""What runs on a CPU next to the user: the llama.cpp backend and the on-device SDK (`EdgeRouter`).

The SDK decides on the device: the estimator and the small model run here, and only hard or premium
requests, or those the device's signals send away, cross the network to the cloud router::

    from hyrouter.edge import EdgeRouter, load_edge_router_config

    async with EdgeRouter.open(load_edge_router_config("device.yaml")) as router:
        answer = await router.complete({"messages": [{"role": "user", "content": "Hi"}]})
        print(answer.route.target, answer.route.reason, answer.route.offline)

Names are imported on first use, so that `import hyrouter.edge.llama_cpp_backend` (the cloud's Lambda path)
does not pay for the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyrouter.edge._device_policy import DeviceDecision, DevicePolicy, DeviceReason, decide_on_device
    from hyrouter.edge._errors import (
        CloudUnreachable,
        EdgeOffline,
        EscalationInterrupted,
        ModelTooLarge,
        PersonalDataKeptLocal,
    )
    from hyrouter.edge._escalation import EscalationClient
    from hyrouter.edge._escalation_backend import EscalationBackend
    from hyrouter.edge._link import LinkMonitor
    from hyrouter.edge._privacy import find_personal_data
    from hyrouter.edge._resources import check_model_fits
    from hyrouter.edge._router import DevicePlan, EdgeRouter
    from hyrouter.edge._sdk_config import (
        CloudLink,
        ConfigSyncSettings,
        DeviceTierPolicy,
        EdgeRouterConfig,
        PrivacyConfig,
        SignalPolicy,
        load_edge_router_config,
        parse_edge_router_config,
    )
    from hyrouter.edge._signals import DeviceSignals, LinuxSignalReader, SignalSource, StaticSignals
    from hyrouter.edge._sync import PolicySync, SyncedPolicy, SyncResult
    from hyrouter.edge._types import EdgeChunk, EdgeCompletion, EdgeRoute, EdgeStream

_EXPORTS = {
    "CloudLink": "hyrouter.edge._sdk_config",
    "EscalationBackend": "hyrouter.edge._escalation_backend",
    "EscalationClient": "hyrouter.edge._escalation",
    "CloudUnreachable": "hyrouter.edge._errors",
    "ConfigSyncSettings": "hyrouter.edge._sdk_config",
    "DeviceDecision": "hyrouter.edge._device_policy",
    "DevicePlan": "hyrouter.edge._router",
    "DevicePolicy": "hyrouter.edge._device_policy",
    "DeviceReason": "hyrouter.edge._device_policy",
    "DeviceSignals": "hyrouter.edge._signals",
    "DeviceTierPolicy": "hyrouter.edge._sdk_config",
    "EdgeChunk": "hyrouter.edge._types",
    "EdgeCompletion": "hyrouter.edge._types",
    "EdgeOffline": "hyrouter.edge._errors",
    "EdgeRoute": "hyrouter.edge._types",
    "EdgeRouter": "hyrouter.edge._router",
    "EdgeRouterConfig": "hyrouter.edge._sdk_config",
    "EdgeStream": "hyrouter.edge._types",
    "EscalationInterrupted": "hyrouter.edge._errors",
    "LinkMonitor": "hyrouter.edge._link",
    "LinuxSignalReader": "hyrouter.edge._signals",
    "ModelTooLarge": "hyrouter.edge._errors",
    "PersonalDataKeptLocal": "hyrouter.edge._errors",
    "PolicySync": "hyrouter.edge._sync",
    "PrivacyConfig": "hyrouter.edge._sdk_config",
    "SignalPolicy": "hyrouter.edge._sdk_config",
    "SignalSource": "hyrouter.edge._signals",
    "StaticSignals": "hyrouter.edge._signals",
    "SyncResult": "hyrouter.edge._sync",
    "SyncedPolicy": "hyrouter.edge._sync",
    "check_model_fits": "hyrouter.edge._resources",
    "decide_on_device": "hyrouter.edge._device_policy",
    "find_personal_data": "hyrouter.edge._privacy",
    "load_edge_router_config": "hyrouter.edge._sdk_config",
    "parse_edge_router_config": "hyrouter.edge._sdk_config",
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
