"""One OpenAI-compatible HTTP client for every caller of one: the GPU endpoint client (`cloud/`) and
the on-device SDK's escalation to the cloud router (`edge/`).

A call POSTs `chat/completions`, retries per `RetryPolicy` (exponential backoff with full jitter,
`Retry-After` honoured up to a cap), all inside one total deadline (`HTTPTimeouts.total`), and returns
a `ChatCompletionResponse`, or streams `ChatCompletionChunk`s from the SSE body. A stream's first chunk
is inside the deadline (until then the caller can still fall back); later chunks each wait at most the
read timeout, since a long answer may outlast the deadline.

Retried, each within `max_attempts` and the deadline:

- a connect error or connect timeout: nothing reached the server;
- a connection dropped before any response (`RemoteProtocolError`): no status came back, so nothing
  was delivered (the official openai client and LiteLLM retry it too);
- a status in `RetryPolicy.statuses`, by default 429, 502, 503 and 504: overload and gateway errors,
  short-lived by nature.

Not retried: a read, write or pool timeout (the server took the request and hangs; another attempt would
most likely hang too and spend the deadline the caller's fallback needs), and every other status. A 500
is not retried by default: it is not evidence that the server is down (often the request provoked it),
so retrying it only multiplies load; a caller may add it to `statuses`.

What differs between callers is passed in, not copied: `retry`; `status_error` (the error for an error
status, by default the router's error tree, `error_for_status`); `network_error` (one error class for
every failure of the network instead of the default classes: the device's `CloudUnreachable`, which
marks it offline); `admit` and `on_outcome` (an admission check before a call and the report of its
outcome: the GPU client's circuit breaker; the device has none); `on_started` (a stream's first chunk:
the endpoint answers; a caller that sets it hears the stream's success only when its answer ends whole,
at its `finish_reason`, so that a stream cut after its first chunk is one failure and nothing else;
without it the first chunk reports the success); `require_done` (whether a stream that
ends without `data: [DONE]` was cut even after its `finish_reason`). A stream that ends with neither a
`finish_reason` nor `[DONE]` was cut for every caller: `CloudStreamCut`, reported as the call's failure.
`admit` may wait (a half-open breaker's probe): the wait is part of the call's deadline, and a call that
never got past it is not reported.

An error status's `Retry-After` travels on in the error's `headers` (`retry-after`), so a caller that
cannot fall back can pass it on with the status.

httpx and httpx-sse are imported at the top of this module, so `router/__init__` must not import it
(cold start).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydantic
from httpx_sse import EventSource, ServerSentEvent

from hyrouter.router._config import CloudRetries
from hyrouter.router._errors import (
    AuthenticationError,
    CloudBackendError,
    CloudStreamCut,
    CloudTimeout,
    CloudUnavailable,
    ContextLengthExceeded,
    ModelNotFound,
    OutcomeNotFound,
    PayloadTooLarge,
    RequestError,
    RouterError,
)
from hyrouter.router._openai_http import error_body_message, next_sse_event, retry_after_seconds
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

CHAT_PATH = "chat/completions"
#: Statuses retried by default: overload (429) and gateway errors (502, 503, 504), usually short-lived.
RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
#: Failures of the network that are retried: nothing reached the server, or no answer came back.
RETRIED_NETWORK_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)

#: The error for an error status: `(status, message, OpenAI error code or None)` → a router error.
StatusError = Callable[[int, str, str | None], RouterError]
#: Told each call's outcome: None on success, else the exception that ended it (a cancellation too).
OutcomeHook = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures get another attempt, and how long to wait before it.

    Waits are exponential (`backoff_base_s` × 2^(attempt−1), capped at `backoff_max_s`) with full
    jitter, unless the server sends `Retry-After`: that is honoured, up to `retry_after_max_s`.
    """

    max_attempts: int = 3
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0
    statuses: frozenset[int] = RETRY_STATUSES
    retry_after_max_s: float = 60.0

    @classmethod
    def from_config(cls, retries: CloudRetries, *, statuses: frozenset[int] = RETRY_STATUSES) -> RetryPolicy:
        """The policy of a `retries` config section, retrying `statuses`."""
        return cls(retries.max_attempts, retries.backoff_base_s, retries.backoff_max_s, statuses)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before attempt `attempt + 1`: `Retry-After` (capped) when sent, else jittered backoff."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        return rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class HTTPTimeouts:
    """Seconds: to connect, to wait for the next bytes, and the deadline of a whole call, retries included."""

    connect: float = 2.0
    read: float = 30.0
    total: float = 60.0

    def for_httpx(self) -> httpx.Timeout:
        """Per-operation timeouts (a write is bounded like a read, the pool like a connect)."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.read, pool=self.connect)


@dataclass(frozen=True, slots=True)
class HTTPPool:
    """The connections kept to the server: open at once, idle kept open, and for how long (seconds).

    The defaults are httpx's own.
    """

    max_connections: int = 100
    max_keepalive_connections: int = 20
    keepalive_expiry: float = 5.0

    def for_httpx(self) -> httpx.Limits:
        """The pool as httpx's limits."""
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry,
        )


def error_for_status(status: int, message: str, code: str | None) -> RouterError:
    """The router error for an OpenAI-compatible server's error status, keeping its message and code."""
    if status == 401:
        return AuthenticationError(message)
    if status == 404:
        return OutcomeNotFound(message) if code == OutcomeNotFound.code else ModelNotFound(message)
    if status == 413:
        return PayloadTooLarge(message)
    if 400 <= status < 500 and status != 429:
        return ContextLengthExceeded(message) if code == "context_length_exceeded" else RequestError(message)
    if status == 504:
        return CloudTimeout(message)
    if status == 503:
        return CloudUnavailable(message)
    return CloudBackendError(message)


def chat_body(
    request: ChatCompletionRequest, *, model: str, stream: bool, max_tokens: int | None = None
) -> dict[str, Any]:
    """The JSON body for `request`, sent as `model`; `max_tokens`, when given, replaces the request's."""
    body = request.model_dump(mode="json", exclude_none=True)
    if max_tokens is not None:
        body.pop("max_completion_tokens", None)
        body["max_tokens"] = max_tokens
    body.update(model=model, stream=stream)
    if not stream:
        body.pop("stream_options", None)
    return body


@dataclass(kw_only=True, eq=False)
class OpenAIHTTPClient:
    """Chat completions from one OpenAI-compatible server (see the module docstring for the rules).

    Messages name `name` and `base_url`, never the API key, which only travels in a header and is read
    from `api_key()` at each call (so a rotated key applies at once). Each event loop gets its own
    httpx client: its connections belong to the loop that opened them, and an SDK object may outlive a
    loop (a CLI calling `asyncio.run` per prompt).
    """

    base_url: str | None
    name: str
    timeouts: HTTPTimeouts = field(default_factory=HTTPTimeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pool: HTTPPool = field(default_factory=HTTPPool)
    api_key: Callable[[], str | None] = lambda: None
    headers: Mapping[str, str] = field(default_factory=dict)
    status_error: StatusError = error_for_status
    network_error: type[CloudBackendError] | None = None
    require_done: bool = False
    #: send an `Idempotency-Key` per call, the same on each retry, so that a server that honours it
    #: (the router's Lambda) answers a retried call once, even when a dropped connection hid the answer
    idempotency_key: bool = False
    default_model: str | None = None
    admit: Callable[[], Awaitable[None]] | None = None
    on_outcome: OutcomeHook | None = None
    on_started: Callable[[], None] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _client_loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The httpx client of the last call, if one is open."""
        return self._client

    def describe(self, what: str) -> str:
        """A message about this server: its name and URL, then `what`."""
        return f"{self.name} {self.base_url} {what}"

    async def complete(self, body: dict[str, Any]) -> ChatCompletionResponse:
        """One non-streamed completion of `body` (see `chat_body`); raises a `RouterError` on failure."""
        client = await self._http()
        admitted = False
        try:
            async with self._deadline():
                await self._admit()
                admitted = True
                response = await self._read(await self._send(client, body))
            answer = self._parse(response)
        except BaseException as exc:
            if admitted:
                self._report(exc)
            raise
        self._report(None)
        return answer

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The chunks of a streamed completion of `body`; a failure to start raises on the first chunk."""
        client = await self._http()
        admitted = False
        response: httpx.Response | None = None
        events: AsyncGenerator[ServerSentEvent, None] | None = None
        try:
            try:
                async with self._deadline():
                    await self._admit()
                    admitted = True
                    response = await self._send(client, body)
                    events = self._events(response)
                    chunk = await self._next_chunk(events, finished=True)  # nothing cut yet
                    if chunk is None:
                        raise CloudBackendError(self.describe("ended the stream before any chunk"))
            except BaseException as exc:
                if admitted:
                    self._report(exc)
                raise
            if self.on_started is not None:
                self.on_started()
            else:
                self._report(None)
            finished = False
            while chunk is not None:
                if not finished and any(c.finish_reason for c in chunk.choices):
                    finished = True
                    if self.on_started is not None:
                        self._report(None)  # the answer is whole: the call succeeded
                yield chunk
                try:
                    chunk = await self._next_chunk(events, finished=finished)
                except RouterError as exc:  # reported again: the stream failed after it started
                    self._report(exc)
                    raise
        finally:
            if events is not None:
                await events.aclose()
            if response is not None:
                await response.aclose()

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` to `path` (not a chat call: no breaker), retried as one; its JSON answer."""
        client = await self._http()
        async with self._deadline():
            response = await self._read(await self._send(client, body, path=path))
        try:
            return response.json()
        except ValueError:
            raise CloudBackendError(self.describe(f"sent an invalid answer to {path}")) from None

    async def probe(self, path: str = "models", *, timeout_s: float) -> float:
        """Round trip of `GET path` in ms; any status counts (the network carried the call)."""
        client = await self._http()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                await client.get(path, headers=self._auth())
        except TimeoutError:
            raise self._network(CloudTimeout, f"did not answer a probe within {timeout_s:g}s") from None
        except httpx.TransportError as exc:
            raise self._failure(exc, "on a probe") from None
        return (time.perf_counter() - started) * 1000.0

    async def aclose(self) -> None:
        """Close the httpx client (when its loop still runs); idempotent."""
        client, self._client = self._client, None
        if client is not None and not self._loop_closed():
            with contextlib.suppress(RuntimeError):
                await client.aclose()

    # -- internals -------------------------------------------------------------------------------

    async def _http(self) -> httpx.AsyncClient:
        if self.base_url is None:
            raise CloudUnavailable(f"{self.name} is not configured")
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            await self.aclose()
            self._client = httpx.AsyncClient(
                base_url=self.base_url.rstrip("/") + "/",
                timeout=self.timeouts.for_httpx(),
                limits=self.pool.for_httpx(),
                transport=self.transport,
                headers=dict(self.headers),
            )
            self._client_loop = loop
        return self._client

    def _loop_closed(self) -> bool:
        return self._client_loop is None or self._client_loop.is_closed()

    async def _admit(self) -> None:
        # Inside the deadline, so that a wait for admission is bounded by it; a call is reported
        # from the moment it is admitted (a breaker's probe always is), never before.
        if self.admit is not None:
            await self.admit()

    def _report(self, error: BaseException | None) -> None:
        if self.on_outcome is not None:
            self.on_outcome(error)

    def _auth(self) -> dict[str, str]:
        key = self.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _failure(self, exc: httpx.HTTPError, when: str) -> CloudBackendError:
        """The router error for an httpx error raised `when` ("mid-stream", ...)."""
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return self._network(CloudUnavailable, f"is unreachable: {exc!r}")
        if isinstance(exc, httpx.TimeoutException):
            return self._network(CloudTimeout, f"timed out {when}")
        if isinstance(exc, httpx.TransportError):
            return self._network(CloudBackendError, f"broke off {when}: {exc!r}")
        return CloudBackendError(self.describe(f"failed {when}: {exc!r}"))  # not the network: a bad body

    def _network(self, default: type[CloudBackendError], what: str) -> CloudBackendError:
        """A failure of the network: `network_error` when the caller set one, else `default`."""
        return (self.network_error or default)(self.describe(what))

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        total = self.timeouts.total
        try:
            async with asyncio.timeout(total):
                yield
        except TimeoutError:
            raise self._network(CloudTimeout, f"did not answer within {total:g}s") from None

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any], *, path: str = CHAT_PATH
    ) -> httpx.Response:
        """POST with retries; returns an unread 2xx response that the caller must close."""
        started = self.clock()
        attempt = 0
        headers = self._auth()
        if self.idempotency_key:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                request = client.build_request("POST", path, json=body, headers=headers)
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                failure: RouterError = self._failure(exc, "before answering")
                if not isinstance(exc, RETRIED_NETWORK_ERRORS):
                    raise failure from None
            else:
                if response.is_success:
                    return response
                failure = await self._status_failure(response)
                if response.status_code not in self.retry.statuses:
                    raise failure
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= self.retry.max_attempts:
                raise _after(failure, attempt)
            wait = self.retry.delay(attempt, retry_after, self.rng)
            if self.clock() - started + wait > self.timeouts.total:
                raise _after(failure, attempt)  # the wait alone would pass the deadline
            await self.sleep(wait)

    async def _read(self, response: httpx.Response) -> httpx.Response:
        """`response` with its body read and its connection released; a body cut off is a failure."""
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise self._failure(exc, "while sending its response") from None
        finally:
            await response.aclose()
        return response

    async def _status_failure(self, response: httpx.Response) -> RouterError:
        try:
            await response.aread()
        except httpx.HTTPError:
            pass  # the status says enough
        finally:
            await response.aclose()
        message, code = None, None
        with contextlib.suppress(ValueError):
            message, code = error_body_message(response.json())
        text = message or response.text[:200] or response.reason_phrase
        error = self.status_error(
            response.status_code, self.describe(f"answered {response.status_code}: {text}"), code
        )
        # A 4xx-like error is passed on with its text (it says what to fix), never with our URL.
        error.public_message = f"The {self.name} answered {response.status_code}: {text}"
        retry_after = response.headers.get("retry-after")
        if retry_after is not None and retry_after_seconds(retry_after) is not None:
            error.headers["retry-after"] = retry_after.strip()
        return error

    def _parse(self, response: httpx.Response) -> ChatCompletionResponse:
        try:
            data = response.json()
            if isinstance(data, dict) and self.default_model is not None:
                data.setdefault("model", self.default_model)
            return ChatCompletionResponse.model_validate(data)
        except (ValueError, pydantic.ValidationError) as exc:
            raise CloudBackendError(self.describe(f"sent an invalid response: {exc}")) from None

    def _events(self, response: httpx.Response) -> AsyncGenerator[ServerSentEvent, None]:
        """The server-sent events of a streamed answer (httpx-sse: multi-line `data:`, `event:`, `id:`).

        httpx-sse refuses a body whose content type is not `text/event-stream`; we asked for a stream,
        so a body labelled otherwise is read as one all the same (what it lacks shows as no chunk).
        """
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.headers["content-type"] = "text/event-stream"
        return EventSource(response).aiter_sse()

    async def _next_chunk(
        self, events: AsyncIterator[ServerSentEvent], *, finished: bool = False
    ) -> ChatCompletionChunk | None:
        """The next chunk of the SSE body, or None at `data: [DONE]` (or at the body's end, if allowed).

        A body that ends without `[DONE]` is a cut stream unless a `finish_reason` came (`finished`),
        and always where `require_done` (a server that ends every stream with [DONE], errors included).
        """
        try:
            event = await next_sse_event(events, describe=self.describe, default_model=self.default_model)
        except httpx.HTTPError as exc:
            raise self._failure(exc, "mid-stream") from None
        if event is None and (self.require_done or not finished):
            raise self._network(CloudStreamCut, "cut the stream off before data: [DONE]")
        return event if isinstance(event, ChatCompletionChunk) else None


def _after(failure: RouterError, attempts: int) -> RouterError:
    """`failure`, its message saying how many attempts it took when there was more than one."""
    if attempts > 1:
        failure.message = f"{failure.message} (after {attempts} attempts)"
        failure.args = (failure.message,)
    return failure
