"""The SDK's answers: the server's OpenAI shapes, with a `route` that also says what only the device knows."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pydantic import Field

from hyrouter.router._plan import RoutedStream
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionResponse, RouteInfo


class EdgeRoute(RouteInfo):
    """The server's `route` facts, where `target` is `edge` (this device) or `cloud` (the cloud router).

    `offline` is the flag an app shows: the cloud router could not be reached. `upstream` is the
    cloud router's own route when the request was escalated (where in the cloud, and why).
    """

    offline: bool = False
    signals: list[str] = Field(default_factory=list)
    personal_data: list[str] = Field(default_factory=list)


class EdgeCompletion(ChatCompletionResponse):
    """A non-streamed answer with its `EdgeRoute`."""

    route: EdgeRoute | None = None


class EdgeChunk(ChatCompletionChunk):
    """One chunk of a streamed answer; the first one carries the `EdgeRoute`."""

    route: EdgeRoute | None = None


@dataclass
class EdgeStream:
    """A streamed answer whose route is known before the first chunk is handed over."""

    route: EdgeRoute
    chunks: AsyncGenerator[EdgeChunk, None]
    #: the engine's stream under `chunks`
    routed: RoutedStream | None = None

    async def aclose(self) -> None:
        """Stop the answer and free the model (or the connection) without reading it to the end."""
        await self.chunks.aclose()
        if self.routed is not None:
            await self.routed.aclose()
