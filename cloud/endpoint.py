"""The GPU-backed OpenAI-compatible endpoint (vLLM, SageMaker LMI, llama.cpp server) as a `ChatBackend`.

Calls go through the one OpenAI HTTP client (`router._openai_client`: retries with exponential
backoff and full jitter, `Retry-After`, one total deadline, SSE). What this module adds: a 500 is
retried too (`GPU_RETRY_STATUSES`), every error status is a `CloudHTTPError` (so the engine falls
back on it), and a circuit breaker, plugged into the client's admission check and outcome report,
makes a dead endpoint fail fast.

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

from cloud.breaker import Admission, BreakerState, CircuitBreaker
from router._backend import BackendHealth, ChatBackend, Target
from router._config import CloudConfig
from router._errors import CloudBackendError, CloudUnavailable, RouterError
from router._openai_client import RETRY_STATUSES, HTTPTimeouts, OpenAIHTTPClient, RetryPolicy, chat_body
from router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

#: Statuses worth another attempt: the shared defaults (429, 502, 503, 504) and 500, which this
#: client has always retried (a GPU server's 500 is often a transient engine failure) and tests pin.
GPU_RETRY_STATUSES = RETRY_STATUSES | {500}


class CloudHTTPError(CloudBackendError):
    """The endpoint answered with an error status; `upstream_status` is that status."""

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


def _http_error(status: int, message: str, code: str | None) -> RouterError:
    # Every status, a 400 included, is the endpoint's failure to answer: the engine may fall back.
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
        self._clock = clock
        # Calls waiting for a half-open breaker's probe; woken at each reported outcome.
        self._probe_waiters: set[asyncio.Future[None]] = set()
        t = config.timeouts
        self._http = OpenAIHTTPClient(
            base_url=config.url,
            name="cloud endpoint",
            timeouts=HTTPTimeouts(connect=t.connect, read=t.read, total=t.total),
            retry=RetryPolicy.from_config(config.retries, statuses=GPU_RETRY_STATUSES),
            api_key=lambda: config.api_key,  # read at call time: a rotated key applies at once
            status_error=_http_error,
            default_model=config.model,
            admit=self._admit,
            on_outcome=self._record_outcome,
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
        """Close the HTTP client and its connections."""
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
        """Tell the breaker: one failure per failed call (retries included), or a stream that broke;
        then wake calls waiting on a probe."""
        if error is None:
            self.breaker.record_success()
        elif isinstance(error, CloudHTTPError):
            # A 4xx other than 429 is the request's fault: the endpoint is up and answering.
            if error.upstream_status == 429 or error.upstream_status >= 500:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
        elif isinstance(error, CloudBackendError):
            self.breaker.record_failure()
        else:
            self.breaker.release()  # cancelled: says nothing about the endpoint
        self._wake_probe_waiters()

    def _wake_probe_waiters(self) -> None:
        for waiter in list(self._probe_waiters):
            if not waiter.done():
                with contextlib.suppress(RuntimeError):  # a waiter of an event loop since closed
                    waiter.set_result(None)
