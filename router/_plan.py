"""What the engine decides and hands back: who is calling, the plan for a request, a routed stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from router._config import TierConfig
from router._policy import Decision, RequestFacts
from router._wire import ChatCompletionChunk, RouteInfo


@dataclass(frozen=True)
class Tenant:
    """Who is calling: the tenant and tier an API key maps to."""

    name: str
    tier: str


@dataclass(frozen=True)
class RoutePlan:
    """A decision and the facts it was made from."""

    decision: Decision
    prompt_tokens: int
    requested_max_tokens: int | None
    estimator_ms: float
    facts: RequestFacts | None = None


@dataclass
class RoutedStream:
    """A streamed answer whose route is known before the first byte is sent.

    `route` gains its cost and savings when the stream has ended.
    """

    route: RouteInfo
    chunks: AsyncGenerator[ChatCompletionChunk, None]


def cap_max_tokens(requested: int | None, tier: TierConfig) -> int | None:
    """The completion tokens a request may have: what it asks for, at most the tier's cap."""
    if requested is None or tier.max_tokens is None:
        return requested if requested is not None else tier.max_tokens
    return min(requested, tier.max_tokens)
