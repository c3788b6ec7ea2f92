"""The HTTPS client that escalates a request to the cloud router (`POST /v1/chat/completions`).

The device's API key travels as a bearer token; the cloud router maps it to the tier (the device
never claims one). Retries: connect failures (nothing was sent) and 429/502/503/504, with backoff and
full jitter, `Retry-After` honoured, all inside one deadline. A stall or a reset is not retried: it
is a link failure (`CloudUnreachable`), which the SDK answers locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pydantic

from edge._errors import CloudUnreachable
from edge._sdk_config import CloudLink
from router._errors import (
    AuthenticationError,
    CloudBackendError,
    CloudTimeout,
    CloudUnavailable,
    ContextLengthExceeded,
    ModelNotFound,
    PayloadTooLarge,
    RequestError,
    RouterError,
)
from router._openai_http import error_body_message, next_sse_event, retry_after_seconds, retry_delay
from router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
#: httpx errors that mean the network, not the cloud router, failed.
LINK_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError,)


class CloudRouterClient:
    """Calls the cloud router's OpenAI API with the device's key."""

    def __init__(
        self,
        link: CloudLink,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.link = link
        self._api_key = api_key
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def configured(self) -> bool:
        """Whether a cloud router URL is set."""
        return self.link.url is not None

    def _headers(self) -> dict[str, str]:
        key = self._api_key or self.link.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _http(self) -> httpx.AsyncClient:
        # An httpx client's connections belong to the loop that opened them; an SDK object may
        # outlive a loop (a CLI calling asyncio.run per prompt), so each loop gets its own client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            if self._client is not None and not self._client_loop_closed():
                with contextlib.suppress(RuntimeError):
                    await self._client.aclose()
            if self.link.url is None:
                raise CloudUnavailable("no cloud router is configured (cloud.url)")
            t = self.link
            self._client = httpx.AsyncClient(
                base_url=self.link.url.rstrip("/") + "/",
                timeout=httpx.Timeout(
                    connect=t.connect_timeout_s, read=t.read_timeout_s, write=t.read_timeout_s, pool=1.0
                ),
                transport=self._transport,
                headers={"User-Agent": "hybrid-router-edge-sdk"},
            )
            self._client_loop = loop
        return self._client

    def _client_loop_closed(self) -> bool:
        return self._client_loop is None or self._client_loop.is_closed()

    async def probe(self) -> float:
        """Round trip of `GET /v1/models` in ms; raises `CloudUnreachable` when the network fails."""
        client = await self._http()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.link.probe_timeout_s):
                await client.get("models", headers=self._headers())
        except TimeoutError:
            raise CloudUnreachable(
                self._err(f"did not answer a probe within {self.link.probe_timeout_s:g}s")
            ) from None
        except LINK_ERRORS as exc:
            raise CloudUnreachable(self._err(f"is unreachable: {exc!r}")) from None
        # Any answer, even an error status, shows that the network carries calls.
        return (time.perf_counter() - started) * 1000.0

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """The cloud router's answer (its own `route` included); raises a `RouterError` on failure."""
        client = await self._http()
        body = self._body(request, stream=False)
        async with self._deadline():
            response = await self._send(client, body)
            try:
                await response.aread()
            except LINK_ERRORS as exc:
                raise CloudUnreachable(self._err(f"broke off its response: {exc!r}")) from None
            finally:
                await response.aclose()
        try:
            return ChatCompletionResponse.model_validate(response.json())
        except (ValueError, pydantic.ValidationError) as exc:
            raise CloudBackendError(self._err(f"sent an invalid response: {exc}")) from None

    async def stream(self, request: ChatCompletionRequest) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Chunks of the cloud router's streamed answer; a failure to start raises on the first chunk.

        The deadline covers the call until the first chunk; later chunks each wait at most the read
        timeout. A link failure mid-stream raises `CloudUnreachable`.
        """
        client = await self._http()
        body = self._body(request, stream=True)
        response: httpx.Response | None = None
        try:
            async with self._deadline():
                response = await self._send(client, body)
                lines = response.aiter_lines()
                chunk = await self._next_chunk(lines)
                if chunk is None:
                    raise CloudBackendError(self._err("ended the stream before any chunk"))
            while chunk is not None:
                yield chunk
                chunk = await self._next_chunk(lines)
        finally:
            if response is not None:
                await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (when its loop still runs)."""
        client, self._client = self._client, None
        if client is not None and not self._client_loop_closed():
            with contextlib.suppress(RuntimeError):
                await client.aclose()

    # -- internals -------------------------------------------------------------------------------

    def _body(self, request: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        body = request.model_dump(mode="json", exclude_none=True)
        body.update(model=self.link.model, stream=stream)
        if not stream:
            body.pop("stream_options", None)
        return body

    def _err(self, what: str) -> str:
        # Names the URL, never the key (which only travels in a header).
        return f"cloud router {self.link.url} {what}"

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.link.deadline_s):
                yield
        except TimeoutError:
            raise CloudUnreachable(self._err(f"did not answer within {self.link.deadline_s:g}s")) from None

    async def _send(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        """POST with retries; an unread 2xx response that the caller closes."""
        retries = self.link.retries
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                req = client.build_request("POST", "chat/completions", json=body, headers=self._headers())
                response = await client.send(req, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure: RouterError = CloudUnreachable(self._err(f"is unreachable: {exc!r}"))
            except LINK_ERRORS as exc:  # a stall or a reset after the request went out: not retried
                raise CloudUnreachable(self._err(f"failed in the network: {exc!r}")) from None
            else:
                if response.is_success:
                    return response
                try:
                    await response.aread()
                except LINK_ERRORS:
                    pass  # the status says enough
                finally:
                    await response.aclose()
                failure = error_from_response(response, self._err(f"answered {response.status_code}"))
                if response.status_code not in RETRYABLE_STATUS:
                    raise failure
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= retries.max_attempts:
                raise failure
            wait = retry_delay(attempt, retry_after, retries, self._rng)
            if self._clock() - started + wait > self.link.deadline_s:
                raise failure
            await self._sleep(wait)

    async def _next_chunk(self, lines: AsyncIterator[str]) -> ChatCompletionChunk | None:
        try:
            event = await next_sse_event(lines, describe=self._err)
        except LINK_ERRORS as exc:
            raise CloudUnreachable(self._err(f"broke off the stream: {exc!r}")) from None
        if event is None:
            # The cloud router ends every stream with [DONE], errors included: a body that just stops
            # was cut in the network.
            raise CloudUnreachable(self._err("cut the stream off before data: [DONE]"))
        return event if isinstance(event, ChatCompletionChunk) else None


def error_from_response(response: httpx.Response, prefix: str) -> RouterError:
    """The router error for an error answer of the cloud router, with its OpenAI message and code."""
    message, code = None, None
    with contextlib.suppress(ValueError):
        message, code = error_body_message(response.json())
    text = f"{prefix}: {message or response.text[:200] or response.reason_phrase}"
    status = response.status_code
    if status == 401:
        return AuthenticationError(f"{text} (check the device's API key)")
    if status == 404:
        return ModelNotFound(text)
    if status == 413:
        return PayloadTooLarge(text)
    if 400 <= status < 500 and status != 429:
        return ContextLengthExceeded(text) if code == "context_length_exceeded" else RequestError(text)
    if status == 504:
        return CloudTimeout(text)
    if status == 503:
        return CloudUnavailable(text)
    return CloudBackendError(text)
