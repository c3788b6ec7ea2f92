"""The one exception hierarchy of hybrid-router.

Every error that can reach a caller maps to an HTTP status and an OpenAI error body::

    RouterError                      500 server_error
    ├── ConfigError                  500 (raised at start-up; never mid-request)
    │   └── MissingExtra             500 a feature needs an extra that is not installed (`import_extra`)
    ├── RequestError                 400 invalid_request_error
    │   ├── UnsupportedFeature       400 unsupported_value (the spec allows it; this router cannot do it)
    │   ├── TooManyMessages          400 array_above_max_length (`server.max_messages`)
    │   ├── ContextLengthExceeded    400 context_length_exceeded
    │   ├── ModelNotFound            404 model_not_found
    │   ├── OutcomeNotFound          404 outcome_not_found (no answer of the caller's with that id)
    │   └── PayloadTooLarge          413 request_too_large
    ├── AuthenticationError          401 invalid_api_key
    ├── BudgetExhausted              429 budget_exhausted (the tier's cloud budget; the edge cannot answer)
    ├── RateLimitExceeded            429 rate_limit_exceeded (the tier's requests_per_minute; Retry-After)
    ├── EstimatorError               500 (the runtime scores 0.5 instead; see the engine)
    ├── DeadlineExceeded             504 deadline_exceeded (the request's own deadline passed)
    └── BackendError                 502/503 upstream failures
        ├── EdgeBackendError         503 edge_unavailable
        │   └── EdgeBusy             503 edge_busy (queue full or wait deadline passed)
        ├── CloudBackendError        502 cloud_error
        │   ├── CloudTimeout         504 cloud_timeout
        │   ├── CloudStreamCut       502 cloud_stream_cut (ended without finish_reason or [DONE])
        │   └── CloudUnavailable     503 cloud_unavailable (breaker open, not configured)
        └── NoBackendAvailable       503 no_backend_available

Callers catch the branch they mean: the engine falls back on `BackendError`, the HTTP app
turns any `RouterError` into an error response, with the error's `headers` (an upstream's
`Retry-After`, passed on with its 429).
"""

from __future__ import annotations

from typing import Any

from hyrouter.router._wire import ErrorDetail, ErrorResponse

#: The distribution `pip install` names in the hint of `MissingExtra`.
DISTRIBUTION = "hyrouter"


class RouterError(Exception):
    """Base of every hybrid-router error."""

    status_code = 500
    error_type = "server_error"
    code: str | None = "internal_error"
    #: what a caller may read where `message` names internals (an upstream's URL); None: `message`
    public_message: str | None = None
    #: the `router.Decision` a policy made and could not carry out (no backend it allows can answer),
    #: so that the refusal is recorded like any decision; None for errors that decide nothing
    decision: Any = None

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        #: response headers the error response carries (lower-case names), e.g. `retry-after`
        self.headers: dict[str, str] = dict(headers or {})

    def to_response(self) -> ErrorResponse:
        """The OpenAI-style error body for this error."""
        return ErrorResponse(
            error=ErrorDetail(message=self.message, type=self.error_type, param=self.param, code=self.code)
        )


class ConfigError(RouterError):
    """The configuration is invalid or cannot be read."""

    code = "config_error"


class MissingExtra(ConfigError):
    """A feature needs an optional dependency group (an extra) that is not installed.

    Its message is one line that names the extra and the command that installs it.
    """

    code = "missing_extra"

    def __init__(self, feature: str, extra: str, missing: str | None = None) -> None:
        """`feature` (e.g. `serve`) needs `extra`; `missing` is the module that could not be imported."""
        found = f" (no module named {missing!r})" if missing else ""
        super().__init__(f"{feature} needs the {extra} extra: pip install '{DISTRIBUTION}[{extra}]'{found}")
        self.feature = feature
        self.extra = extra
        self.missing = missing


class RequestError(RouterError):
    """The request is malformed or asks for something the router cannot do."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class OutOfRange(RequestError):
    """A number outside its bounds; `code` names which bound, as OpenAI's own API does
    (`integer_below_min_value` for `max_tokens: 0`)."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class UnsupportedFeature(RequestError):
    """The request asks for something OpenAI's API allows and this router cannot do (`n > 1`, images)."""

    code = "unsupported_value"


class TooManyMessages(RequestError):
    """The request carries more messages than the server's `max_messages`."""

    code = "array_above_max_length"


class ContextLengthExceeded(RequestError):
    """The prompt is longer than every backend the tier may use allows."""

    code = "context_length_exceeded"


class ModelNotFound(RequestError):
    """The requested model is not served here."""

    status_code = 404
    code = "model_not_found"


class OutcomeNotFound(RequestError):
    """Feedback names an answer the caller has no outcome record of (another tenant's reads the same)."""

    status_code = 404
    code = "outcome_not_found"


class PayloadTooLarge(RequestError):
    """The request body, or its messages' text, is over the configured size limit."""

    status_code = 413
    code = "request_too_large"


class AuthenticationError(RouterError):
    """The API key is missing or unknown."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class BudgetExhausted(RouterError):
    """The tenant's cloud budget for this period cannot pay for the request, and the edge cannot
    answer it; OpenAI's own error for a spent quota is a 429 `insufficient_quota`."""

    status_code = 429
    error_type = "insufficient_quota"
    code = "budget_exhausted"


class RateLimitExceeded(RouterError):
    """The tenant has sent its tier's `requests_per_minute` this minute; `Retry-After` says when the
    next minute starts."""

    status_code = 429
    error_type = "requests"
    code = "rate_limit_exceeded"


class EstimatorError(RouterError):
    """The complexity estimator could not be loaded or failed to score."""

    code = "estimator_error"


class DeadlineExceeded(RouterError):
    """The request's deadline (its tier's `deadline_s`) passed; not a backend's failure, so no fallback."""

    status_code = 504
    code = "deadline_exceeded"


class BackendError(RouterError):
    """A backend could not produce an answer."""

    status_code = 502
    error_type = "server_error"
    code = "backend_error"


class EdgeBackendError(BackendError):
    """The on-CPU model failed or is not loaded."""

    status_code = 503
    code = "edge_unavailable"


class EdgeBusy(EdgeBackendError):
    """The edge model's queue is full, or the wait for it passed its deadline."""

    code = "edge_busy"


class CloudBackendError(BackendError):
    """The GPU endpoint answered with an error or an unreadable body."""

    code = "cloud_error"


class CloudTimeout(CloudBackendError):
    """The GPU endpoint did not answer within its timeouts."""

    status_code = 504
    code = "cloud_timeout"


class CloudStreamCut(CloudBackendError):
    """The GPU endpoint's stream ended before its answer did: no `finish_reason`, no `data: [DONE]`."""

    code = "cloud_stream_cut"


class CloudUnavailable(CloudBackendError):
    """The GPU endpoint cannot be reached, is not configured, or its breaker is open."""

    status_code = 503
    code = "cloud_unavailable"


class NoBackendAvailable(BackendError):
    """No backend the tier allows can answer now."""

    status_code = 503
    code = "no_backend_available"
