"""The GPU-backed OpenAI-compatible endpoint (vLLM, SageMaker LMI, llama.cpp server) as a `ChatBackend`.

Calls go through the one OpenAI HTTP client (`hyrouter.router._openai_client`: retries with exponential
backoff and full jitter, `Retry-After`, one total deadline, SSE). What this module adds: every error
status is a `CloudHTTPError` (so the engine falls back on it), and a circuit breaker, plugged into the
client's admission check and outcome report, makes a dead endpoint fail fast.

The breaker is shared by every tenant, so it counts only evidence that the endpoint is down, never
what one caller's request provoked (or one tenant could switch the cloud off for all):

- failures: a connect error or connect timeout, a read or total timeout, a connection dropped or a
  body that is not an answer, and the gateway statuses 502, 503 and 504;
- no evidence either way (the breaker is `release`d): a 500 or another 5xx, and a 429. A 500 is what
  vLLM and llama.cpp's server answer for a request they choke on (an assistant message with
  `content: null` and `tool_calls`, a field of the wrong JSON type), so the caller that sends one
  could send three; an engine that is really down shows it by the other signs (its process exits:
  connections refused; SageMaker and load balancers answer 502/503/504; requests hang into
  timeouts). A 429 says the endpoint is up and busy; it is passed on (below);
- success: an answer, and a 4xx other than 429 (the endpoint is up and judged the request). A
  stream's answer counts when it ends whole (its `finish_reason`); its first chunk only lets a
  half-open breaker's waiting calls go, so a stream cut after it is one failure, and an endpoint
  that cuts every stream opens the breaker like one that refuses every call.

Retries are the shared client's defaults (429, 502, 503, 504, and the network failures it lists): a
500 is not retried, for the same reason it is not counted (`GPU_RETRY_STATUSES` is kept as the name
the GPU client retries by).

A 500 that says the request itself is bad is a `CloudRequestRejected` (400, `invalid_request_error`)
rather than a 502 `cloud_error`, so a caller that cannot fall back learns to fix its request. It is
recognised by its error body, not its status: an OpenAI `code` that names a client error (a number
400–499 as vLLM sends, `invalid_request_error`, `BadRequestError`, `invalid_request`,
`context_length_exceeded`), or llama.cpp's JSON exception marker `[json.exception.` at the head of
the message (its server answers 500 when a field has the wrong JSON type).

A 429 is a `CloudRateLimited` (429, `rate_limit_exceeded`) that carries the upstream's
`Retry-After` in its `headers`: a tier that cannot fall back passes both on to its caller.

While the breaker is half-open its one probe goes out and every other call waits for the probe's
outcome within its own deadline (`CircuitBreaker.admit`): then they all go to a recovered endpoint,
or, if the probe failed, they are refused (`CloudUnavailable`) and the engine falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from hyrouter.cloud.breaker import Admission, BreakerState, CircuitBreaker
from hyrouter.cloud.probe import CloudProbe
from hyrouter.router._backend import BackendHealth, ChatBackend, Target
from hyrouter.router._config import CloudConfig
from hyrouter.router._errors import CloudBackendError, CloudUnavailable, RouterError
from hyrouter.router._openai_client import (
    RETRY_STATUSES,
    HTTPPool,
    HTTPTimeouts,
    OpenAIHTTPClient,
    RetryPolicy,
    chat_body,
)
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

#: Statuses worth another attempt: the shared defaults (429, 502, 503, 504). Not a 500: it is most
#: often the request's own fault, and another attempt only repeats it (see the module docstring).
GPU_RETRY_STATUSES = RETRY_STATUSES
#: Statuses that are evidence the endpoint is down: the gateway errors.
UNHEALTHY_STATUSES: frozenset[int] = frozenset({502, 503, 504})
#: OpenAI error codes (and vLLM's error types) that say the request is at fault.
REQUEST_FAULT_CODES: frozenset[str] = frozenset(
    {"invalid_request_error", "badrequesterror", "invalid_request", "context_length_exceeded"}
)
#: How llama.cpp's server begins the message of a 500 for a field of the wrong JSON type.
LLAMA_CPP_JSON_ERROR = "[json.exception."


class CloudHTTPError(CloudBackendError):
    """The endpoint answered with an error status; `upstream_status` is that status."""

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class CloudRateLimited(CloudHTTPError):
    """The endpoint answered 429; passed on as a 429 with the upstream's `Retry-After`."""

    status_code = 429
    error_type = "requests"  # what OpenAI sends with `rate_limit_exceeded`
    code = "rate_limit_exceeded"


class CloudRequestRejected(CloudHTTPError):
    """The endpoint answered 500 with a body that says the request itself is bad."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


def is_request_fault(message: str, code: str | None) -> bool:
    """Whether an error body (its message, its OpenAI `code`) says the request itself is bad."""
    if code is not None:
        if code.isdigit() and 400 <= int(code) < 500 and code != "429":
            return True
        if code.lower() in REQUEST_FAULT_CODES:
            return True
    return LLAMA_CPP_JSON_ERROR in message


def _http_error(status: int, message: str, code: str | None) -> RouterError:
    # Every status, a 400 included, is the endpoint's failure to answer: the engine may fall back.
    if status == 429:
        return CloudRateLimited(message, upstream_status=status)
    if status == 500 and is_request_fault(message, code):
        return CloudRequestRejected(message, upstream_status=status)
    return CloudHTTPError(message, upstream_status=status)


class CloudEndpointClient(ChatBackend):
    """Answers chat completions on the configured OpenAI-compatible endpoint."""

    target: Target = "cloud"

    def __init__(
        self,
        config: CloudConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.model_id = config.model
        self.context_window = config.context_window
        self.breaker = CircuitBreaker.from_config(config.breaker, clock=clock)
        #: The active probe of the endpoint; the local server starts it, Lambda does not.
        self.endpoint_probe = CloudProbe(config, transport=transport)
        self._clock = clock
        # Calls waiting for a half-open breaker's probe; woken at each reported outcome.
        self._probe_waiters: set[asyncio.Future[None]] = set()
        t = config.timeouts
        self._http = OpenAIHTTPClient(
            base_url=config.url,
            name="cloud endpoint",
            timeouts=HTTPTimeouts(connect=t.connect, read=t.read, total=t.total),
            retry=RetryPolicy.from_config(config.retries, statuses=GPU_RETRY_STATUSES),
            pool=HTTPPool(
                max_connections=config.pool.max_connections,
                max_keepalive_connections=config.pool.max_keepalive_connections,
                keepalive_expiry=config.pool.keepalive_expiry_s,
            ),
            api_key=lambda: config.api_key,  # read at call time: a rotated key applies at once
            status_error=_http_error,
            default_model=config.model,
            admit=self._admit,
            on_outcome=self._record_outcome,
            on_started=self._stream_started,
            transport=transport,
            sleep=sleep,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
        )

    def health(self) -> BackendHealth:
        """Unavailable when no URL is configured or the breaker is open; no I/O."""
        if self.config.url is None:
            return BackendHealth(available=False, detail="not configured")
        retry_at = self.breaker.retry_at
        if self.breaker.state is BreakerState.OPEN and retry_at is not None and self._clock() < retry_at:
            return BackendHealth(available=False, detail="circuit open")
        return BackendHealth(available=True)

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        """One non-streamed completion; raises `CloudBackendError` (or a subclass) on any failure."""
        return await self._http.complete(self._body(request, max_tokens, stream=False))

    def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of a streamed completion; every failure to start surfaces on the first `__anext__()`."""
        return self._http.stream(self._body(request, max_tokens, stream=True))

    async def aclose(self) -> None:
        """Stop the probe; close the HTTP client and its connections."""
        await self.endpoint_probe.aclose()
        await self._http.aclose()

    # -- internals -------------------------------------------------------------------------------

    def _body(self, request: ChatCompletionRequest, max_tokens: int, *, stream: bool) -> dict[str, Any]:
        return chat_body(request, model=self.config.model, stream=stream, max_tokens=max_tokens)

    async def _admit(self) -> None:
        """Let a call go; while the probe is out, wait for its outcome (within the call's deadline,
        which the HTTP client runs this in); refuse with `CloudUnavailable`, without any network,
        while the breaker is open."""
        while (admission := self.breaker.admit()) is Admission.WAIT:
            waiter = asyncio.get_running_loop().create_future()
            self._probe_waiters.add(waiter)
            try:
                await waiter
            finally:
                self._probe_waiters.discard(waiter)
        if admission is Admission.REFUSE:
            retry_at = self.breaker.retry_at
            wait = "" if retry_at is None else f"; retry in {max(0.0, retry_at - self._clock()):.1f}s"
            raise CloudUnavailable(
                f"circuit breaker for {self.config.url} is {self.breaker.state.value}{wait}"
            )

    def _record_outcome(self, error: BaseException | None) -> None:
        """Tell the breaker what the call says about the endpoint (see the module docstring), once per
        call (retries included; a stream's when it ends whole or breaks); then wake calls waiting on a
        probe."""
        if error is None:
            self.breaker.record_success()
        elif isinstance(error, CloudHTTPError):
            if error.upstream_status in UNHEALTHY_STATUSES:
                self.breaker.record_failure()
            elif error.upstream_status >= 500 or error.upstream_status == 429:
                self.breaker.release()  # a 500 may be the request's doing; a 429 is an endpoint that is up
            else:
                self.breaker.record_success()  # a 4xx: the endpoint is up and judged the request
        elif isinstance(error, CloudBackendError):
            self.breaker.record_failure()
        else:
            self.breaker.release()  # cancelled: says nothing about the endpoint
        self._wake_probe_waiters()

    def _stream_started(self) -> None:
        """A stream's first chunk: the endpoint answers, so a half-open breaker's probe has passed and
        the calls waiting on it go. A closed breaker's count of failures stays until the answer ends
        whole: a stream cut after its first chunk is then one failure, not a success that wipes the
        count and a failure after it (an endpoint that cuts every stream would never open the breaker)."""
        if self.breaker.state is BreakerState.HALF_OPEN:
            self.breaker.record_success()
        self._wake_probe_waiters()

    def _wake_probe_waiters(self) -> None:
        for waiter in list(self._probe_waiters):
            if not waiter.done():
                with contextlib.suppress(RuntimeError):  # a waiter of an event loop since closed
                    waiter.set_result(None)
