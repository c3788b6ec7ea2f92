"""Errors only the on-device SDK raises, placed in the router's one hierarchy::

    RouterError
    ├── RequestError
    │   └── PersonalDataKeptLocal     400 personal_data_kept_local (the tier forbids a local answer)
    └── BackendError
        ├── EdgeBackendError
        │   └── ModelTooLarge          503 model_too_large (over max_model_memory_mb or free memory)
        ├── CloudBackendError
        │   ├── CloudUnavailable
        │   │   └── CloudUnreachable   503 cloud_unreachable (no route, refused, stalled, reset)
        │   └── EscalationInterrupted  502 stream_interrupted (the link broke mid-answer)
        └── NoBackendAvailable
            └── EdgeOffline            503 offline (the tier forbids a local answer)

Callers catch the branch they mean, as with the router's own errors.
"""

from __future__ import annotations

from hyrouter.router._errors import (
    CloudBackendError,
    CloudUnavailable,
    EdgeBackendError,
    NoBackendAvailable,
    RequestError,
)


class EdgeOffline(NoBackendAvailable):
    """The cloud router cannot be reached and the tier does not allow a local answer."""

    code = "offline"


class PersonalDataKeptLocal(RequestError):
    """The request has personal data the device keeps local, and the tier forbids local answers."""

    code = "personal_data_kept_local"


class ModelTooLarge(EdgeBackendError):
    """The model file does not fit the configured memory limit or the memory free on the device."""

    code = "model_too_large"


class EscalationInterrupted(CloudBackendError):
    """The link to the cloud router broke after part of the answer was delivered."""

    code = "stream_interrupted"


class CloudUnreachable(CloudUnavailable):
    """The network did not carry the call: nothing listening, no route, a stall, a reset.

    Unlike a 5xx from a cloud router that answered, this marks the device offline.
    """

    code = "cloud_unreachable"
