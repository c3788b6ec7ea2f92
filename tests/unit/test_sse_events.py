"""`cloud.routes.sse_events` closes the routed stream however the caller stops reading: the backend's
stream and the budget reservation are released (the route used to drop the `RoutedStream`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from hyrouter.cloud.routes import sse_events
from hyrouter.router import ChatCompletionChunk, ChunkChoice, Delta, RoutedStream, RouteInfo

pytestmark = pytest.mark.anyio
ROUTE = RouteInfo(
    target="cloud", reason="tier_forces_cloud", score=0.5, tier="t", tenant="a", model="m", estimator="h"
)


async def _chunks() -> AsyncGenerator[ChatCompletionChunk, None]:
    for word in ("Paris", " is", " lovely"):
        yield ChatCompletionChunk(id="c", model="m", choices=[ChunkChoice(delta=Delta(content=word))])


async def test_a_caller_that_goes_away_releases_the_stream() -> None:
    released: list[bool] = []

    async def release() -> None:
        released.append(True)

    events = sse_events(RoutedStream(ROUTE, _chunks(), release=release))
    assert b"Paris" in await anext(events)
    await events.aclose()  # the client disconnected after the first event
    assert released == [True]


async def test_a_stream_read_to_the_end_is_closed_once() -> None:
    released: list[bool] = []

    async def release() -> None:
        released.append(True)

    events = [e async for e in sse_events(RoutedStream(ROUTE, _chunks(), release=release))]
    assert events[-1] == b"data: [DONE]\n\n" and released == [True]
