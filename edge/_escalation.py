"""The HTTPS client that escalates a request to the cloud router (`POST /v1/chat/completions`).

The device's API key travels as a bearer token; the cloud router maps it to the tier (the device
never claims one). Calls go through the one OpenAI HTTP client (`hyrouter.router._openai_client`), with its
default retries: connect failures, a connection dropped before any answer, and 429/502/503/504, with
backoff and full jitter, `Retry-After` honoured, all inside one deadline. Every failure of the network
(a stall included, which is not retried) is `CloudUnreachable`, which the SDK answers locally; an error
status from a cloud router that answered is the router error it stands for.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import httpx

from hyrouter.edge._errors import CloudUnreachable
from hyrouter.edge._sdk_config import CloudLink
from hyrouter.router._errors import AuthenticationError, RouterError
from hyrouter.router._openai_client import (
    HTTPTimeouts,
    OpenAIHTTPClient,
    RetryPolicy,
    StatusError,
    chat_body,
    error_for_status,
)
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse


def _status_error_for(link: CloudLink, *, explicit_key: bool) -> StatusError:
    """The error of an error status; a 401 names the env var of the device's key, where it is fixed."""
    if explicit_key:
        refused = f"the API key given to the SDK (in place of the env var {link.api_key_env})"
    else:
        refused = f"the device's API key: set the env var {link.api_key_env} to a key the cloud router knows"

    def status_error(status: int, message: str, code: str | None) -> RouterError:
        if status == 401:
            return AuthenticationError(f"{message} (the cloud router refused {refused})")
        return error_for_status(status, message, code)

    return status_error


class EscalationClient:
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
        self._http = OpenAIHTTPClient(
            base_url=link.url,
            name="cloud router",
            timeouts=HTTPTimeouts(
                connect=link.connect_timeout_s, read=link.read_timeout_s, total=link.deadline_s
            ),
            retry=RetryPolicy.from_config(link.retries),
            api_key=lambda: api_key or link.api_key,  # the environment is read at call time
            headers={"User-Agent": "hybrid-router-edge-sdk"},
            status_error=_status_error_for(link, explicit_key=api_key is not None),
            network_error=CloudUnreachable,
            # The cloud router ends every stream with [DONE], errors included: a body that just stops
            # was cut in the network.
            require_done=True,
            idempotency_key=True,
            transport=transport,
            sleep=sleep,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
        )

    @property
    def configured(self) -> bool:
        """Whether a cloud router URL is set."""
        return self.link.url is not None

    async def probe(self) -> float:
        """Round trip of `GET /v1/models` in ms; raises `CloudUnreachable` when the network fails."""
        return await self._http.probe("models", timeout_s=self.link.probe_timeout_s)

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """The cloud router's answer (its own `route` included); raises a `RouterError` on failure."""
        return await self._http.complete(chat_body(request, model=self.link.model, stream=False))

    def stream(self, request: ChatCompletionRequest) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Chunks of the cloud router's streamed answer; a failure to start raises on the first chunk.

        The deadline covers the call until the first chunk; later chunks each wait at most the read
        timeout. A link failure mid-stream raises `CloudUnreachable`.
        """
        return self._http.stream(chat_body(request, model=self.link.model, stream=True))

    async def feedback(self, completion_id: str, rating: float, comment: str | None) -> None:
        """Rate one of the cloud router's answers (`POST /v1/feedback`); its 404 is `OutcomeNotFound`."""
        body: dict[str, object] = {"id": completion_id, "rating": rating}
        if comment is not None:
            body["comment"] = comment
        await self._http.post_json("feedback", body)

    async def aclose(self) -> None:
        """Close the HTTP client (when its loop still runs)."""
        await self._http.aclose()
