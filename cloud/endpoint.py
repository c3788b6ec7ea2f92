"""The GPU-backed OpenAI-compatible endpoint (vLLM, SageMaker LMI, llama.cpp server) as a `ChatBackend`.

Calls are retried on connect errors, 429 and 5xx with exponential backoff and full jitter, bounded
by one total deadline, and guarded by a circuit breaker so that a dead endpoint fails fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NoReturn

import httpx
import pydantic

from cloud.breaker import BreakerState, CircuitBreaker
from router._backend import BackendHealth, ChatBackend, Target
from router._config import CloudConfig
from router._errors import CloudBackendError, CloudTimeout, CloudUnavailable
from router._openai_http import error_body_message, next_sse_event, retry_after_seconds, retry_delay
from router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

#: Statuses worth another attempt: overload and gateway errors, which are usually short-lived.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class CloudHTTPError(CloudBackendError):
    """The endpoint answered with an error status; `upstream_status` is that status."""

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


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
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._client: httpx.AsyncClient | None = None
        self._url = f"{config.url.rstrip('/')}/chat/completions" if config.url else "<not configured>"

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
        body = self._body(request, max_tokens, stream=False)
        client = self._admit()  # last before `_outcome`: a half-open probe must always be reported
        with self._outcome():
            async with self._deadline():
                response = await self._send(client, body, started=self._clock())
                try:
                    await response.aread()
                except httpx.TimeoutException:
                    raise CloudTimeout(self._err("stopped sending its response")) from None
                except httpx.HTTPError as exc:
                    raise CloudBackendError(self._err(f"response broke off: {exc!r}")) from None
                finally:
                    await response.aclose()
            try:
                data = response.json()
                if isinstance(data, dict):
                    data.setdefault("model", self.config.model)
                return ChatCompletionResponse.model_validate(data)
            except (ValueError, pydantic.ValidationError) as exc:
                raise CloudBackendError(self._err(f"sent an invalid response: {exc}")) from None

    async def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of a streamed completion; every failure to start surfaces on the first `__anext__()`."""
        body = self._body(request, max_tokens, stream=True)
        client = self._admit()
        response: httpx.Response | None = None
        try:
            # Until the first chunk the call can still fall back, so the total deadline applies.
            with self._outcome():
                async with self._deadline():
                    response = await self._send(client, body, started=self._clock())
                    lines = response.aiter_lines()
                    chunk = await self._next_chunk(lines)
                    if chunk is None:
                        raise CloudBackendError(self._err("ended the stream before any chunk"))
            # After it only the read timeout applies: a long answer may take longer than `total`.
            while chunk is not None:
                yield chunk
                try:
                    chunk = await self._next_chunk(lines)
                except CloudBackendError:
                    self.breaker.record_failure()
                    raise
        finally:
            if response is not None:
                await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- internals -------------------------------------------------------------------------------

    def _admit(self) -> httpx.AsyncClient:
        """The client, if a call may go out now; else `CloudUnavailable` without any network."""
        if self.config.url is None:
            raise CloudUnavailable("cloud endpoint is not configured")
        if not self.breaker.allow():
            retry_at = self.breaker.retry_at
            wait = "" if retry_at is None else f"; retry in {max(0.0, retry_at - self._clock()):.1f}s"
            raise CloudUnavailable(f"circuit breaker for {self._url} is {self.breaker.state.value}{wait}")
        if self._client is None:
            t = self.config.timeouts
            self._client = httpx.AsyncClient(
                base_url=self.config.url,
                timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect),
                transport=self._transport,
            )
        return self._client

    def _body(self, request: ChatCompletionRequest, max_tokens: int, *, stream: bool) -> dict[str, Any]:
        body = request.model_dump(mode="json", exclude_none=True)
        body.pop("max_completion_tokens", None)
        body.update(model=self.config.model, max_tokens=max_tokens, stream=stream)
        if not stream:
            body.pop("stream_options", None)
        return body

    @contextlib.contextmanager
    def _outcome(self) -> Iterator[None]:
        """Report the call's outcome to the breaker: one failure per failed call, retries included."""
        try:
            yield
        except CloudHTTPError as exc:
            # A 4xx other than 429 is the request's fault: the endpoint is up and answering.
            if exc.upstream_status == 429 or exc.upstream_status >= 500:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            raise
        except CloudBackendError:
            self.breaker.record_failure()
            raise
        except BaseException:
            self.breaker.release()  # cancelled: says nothing about the endpoint
            raise
        else:
            self.breaker.record_success()

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        total = self.config.timeouts.total
        try:
            async with asyncio.timeout(total):
                yield
        except TimeoutError:
            raise CloudTimeout(self._err(f"did not answer within {total:g}s")) from None

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any], *, started: float
    ) -> httpx.Response:
        """POST with retries; returns an unread 2xx response that the caller must close."""
        retries = self.config.retries
        headers = {"Authorization": f"Bearer {key}"} if (key := self.config.api_key) else {}
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                request = client.build_request("POST", "chat/completions", json=body, headers=headers)
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Retried, as is a dropped connection: no response yet, so nothing generated twice.
                failure: CloudBackendError = CloudUnavailable(self._err(f"unreachable: {exc!r}"))
            except httpx.RemoteProtocolError as exc:
                failure = CloudBackendError(self._err(f"dropped the connection: {exc!r}"))
            except httpx.TimeoutException:
                # The endpoint accepted the request and then hung; a retry would likely hang too.
                raise CloudTimeout(self._err("timed out waiting for a response")) from None
            except httpx.HTTPError as exc:
                raise CloudBackendError(self._err(f"request failed: {exc!r}")) from None
            else:
                if response.is_success:
                    return response
                try:
                    await response.aread()
                except httpx.HTTPError:
                    pass  # the status says enough
                finally:
                    await response.aclose()
                failure = CloudHTTPError(
                    self._err(f"answered {response.status_code}: {_error_message(response)}"),
                    upstream_status=response.status_code,
                )
                if response.status_code not in RETRYABLE_STATUS:
                    raise failure
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= retries.max_attempts:
                self._give_up(failure, attempt)
            retry_after = retry_delay(attempt, retry_after, retries, self._rng)
            if self._clock() - started + retry_after > self.config.timeouts.total:
                self._give_up(failure, attempt)  # the wait alone would pass the deadline
            await self._sleep(retry_after)

    def _err(self, what: str) -> str:
        """An error message that names the URL (never the API key, which only travels in a header)."""
        return f"cloud endpoint {self._url} {what}"

    @staticmethod
    def _give_up(failure: CloudBackendError, attempts: int) -> NoReturn:
        if attempts > 1:
            failure.message = f"{failure.message} (after {attempts} attempts)"
            failure.args = (failure.message,)
        raise failure

    async def _next_chunk(self, lines: AsyncIterator[str]) -> ChatCompletionChunk | None:
        """The next chunk of the SSE body, or None at `data: [DONE]` or the end of the body."""
        try:
            event = await next_sse_event(lines, describe=self._err, default_model=self.config.model)
        except httpx.TimeoutException:
            raise CloudTimeout(self._err("stalled mid-stream")) from None
        except httpx.HTTPError as exc:
            raise CloudBackendError(self._err(f"broke off the stream: {exc!r}")) from None
        return event if isinstance(event, ChatCompletionChunk) else None


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI error body (`{"error": {"message": ...}}`), else the body's start."""
    try:
        message, _ = error_body_message(response.json())
    except ValueError:
        message = None
    return message or response.text[:200] or response.reason_phrase
