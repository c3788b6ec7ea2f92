"""The cloud router, seen from a device, as one of the engine's backends.

`EscalationClient` speaks HTTP; this adapter gives it the `ChatBackend` shape the engine runs, and
keeps the device's link state current as a side effect of every escalation: a call that reaches the
cloud router marks the link up, one the network did not carry marks it down. A stream that breaks
after content was handed on cannot fall back any more (the caller has seen part of an answer): it
raises `EscalationInterrupted`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from hyrouter.edge._errors import CloudUnreachable, EscalationInterrupted
from hyrouter.edge._escalation import EscalationClient
from hyrouter.edge._link import LinkMonitor
from hyrouter.edge._sdk_config import CloudLink
from hyrouter.router._backend import BackendHealth, ChatBackend
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse


class EscalationBackend(ChatBackend):
    """The cloud router as the engine's "cloud" backend, recording the link's state as it goes.

    The request is forwarded as the caller sent it (`max_tokens` included): the cloud router applies
    its own tier's caps, so the engine's `max_tokens` is not imposed on it.
    """

    target = "cloud"

    def __init__(self, client: EscalationClient, link: LinkMonitor, config: CloudLink) -> None:
        """Escalate through `client`, reporting reachability to `link`."""
        self.client = client
        self.link = link
        self.model_id = config.model
        self.context_window = config.context_window

    def health(self) -> BackendHealth:
        """Available when configured; whether the link is up is the device policy's call."""
        if self.client.configured:
            return BackendHealth(available=True)
        return BackendHealth(available=False, detail="not configured")

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        """One escalated answer; its `route` is the cloud router's own."""
        try:
            response = await self.client.complete(request)
        except CloudUnreachable as exc:
            self.link.record_failure(exc.message)
            raise
        self.link.record_success()
        return response

    async def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The escalated stream; a break after its first content raises `EscalationInterrupted`."""
        chunks = self.client.stream(request)
        content_sent = False
        try:
            async for chunk in chunks:
                if not content_sent and chunk.starts_answer:
                    content_sent = True
                    self.link.record_success()
                yield chunk
            if not content_sent:  # a clean end with nothing to say: the link still carried it
                self.link.record_success()
        except CloudUnreachable as exc:
            self.link.record_failure(exc.message)
            if not content_sent:
                raise  # nothing reached the caller: the engine can still answer locally
            raise EscalationInterrupted(
                f"the link to the cloud router broke mid-answer ({exc.message}); the device is now "
                "offline and answers locally until the link returns"
            ) from exc
        finally:
            await chunks.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()
