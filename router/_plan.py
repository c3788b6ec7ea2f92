"""What the engine decides and hands back: who is calling (by API key), the plan for a request, and a
routed stream with the helpers that hold it together."""

from __future__ import annotations

import hmac
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from hyrouter.router._accounting import Reservation
from hyrouter.router._config import RouterConfig, TierConfig, hash_api_key
from hyrouter.router._errors import AuthenticationError
from hyrouter.router._policy import Decision, PolicyInput
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, RouteInfo


@dataclass(frozen=True)
class Tenant:
    """Who is calling: the tenant and tier an API key maps to."""

    name: str
    tier: str


class ApiKeys:
    """API keys to tenants, from a config: keys by their sha256, API Gateway keys by their id."""

    def __init__(self, config: RouterConfig) -> None:
        """Index the config's `api_keys` and `api_key_ids`."""
        self._by_digest = {entry.sha256: Tenant(entry.tenant, entry.tier) for entry in config.api_keys}
        self._by_id = {key_id: Tenant(e.tenant, e.tier) for key_id, e in config.api_key_ids.items()}
        self._admin_digests = [entry.sha256 for entry in config.admin_keys]

    def require_admin(self, api_key: str | None) -> None:
        """Refuse (401) a key that is not one of the config's `admin_keys` (compared in constant time)."""
        digest = hash_api_key(api_key) if api_key else ""
        if not any(hmac.compare_digest(digest, admin) for admin in self._admin_digests):
            raise AuthenticationError(
                "This route needs an admin key: send 'Authorization: Bearer <admin key>'."
            )

    def tenant(self, api_key: str | None) -> Tenant:
        """The tenant an API key belongs to; the tier comes from the config, never the request."""
        if not api_key:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
        tenant = self._by_digest.get(hash_api_key(api_key))
        if tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        return tenant

    def tenant_of_key_id(self, key_id: str | None, api_key: str | None) -> Tenant:
        """The tenant of an API Gateway key: by its id in `api_key_ids`, else by its sha256 in `api_keys`.

        API Gateway has checked that the key exists; its tier still comes from the config, never the request.
        """
        tenant = self._by_id.get(key_id) if key_id else None
        if tenant is None and api_key:
            tenant = self._by_digest.get(hash_api_key(api_key))
        if tenant is not None:
            return tenant
        if key_id or api_key:
            raise AuthenticationError(
                "This API key is not mapped to a tier; ask the platform team to add it."
            )
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )


@dataclass(frozen=True)
class RoutePlan:
    """A decision and the facts it was made from."""

    decision: Decision
    prompt_tokens: int
    requested_max_tokens: int | None
    estimator_ms: float
    #: what the request asks that the edge cannot give (`ChatBackend.cannot_honour`): no fallback there
    edge_lacks: str | None = None
    #: what the policy decided from, to decide again when the budget cannot pay for the decision
    given: PolicyInput | None = None
    #: the tenant's budget held for a cloud answer until it is settled (`Ledger.reserve`)
    reservation: Reservation | None = None
    #: the estimator's features, when outcome capture asked for them (`FeatureEstimator`)
    features: Sequence[float] | None = None
    #: the request planned for (outcome capture reads its text off the request path)
    request: ChatCompletionRequest | None = None
    #: `prompt_tokens` is the tokenizer's count; false: an upper-leaning estimate (a cloud decision)
    exact_tokens: bool = True


#: A stream's chunks up to its first content, held back until the route is sure.
StreamHead = list[ChatCompletionChunk]


@dataclass
class RoutedStream:
    """A streamed answer whose route is known before the first byte is sent.

    `route` gains its cost and savings when the stream has ended.
    """

    route: RouteInfo
    chunks: AsyncGenerator[ChatCompletionChunk, None]
    #: the backend's own stream, held open under `chunks` (closed by `aclose` even if never iterated)
    source: AsyncIterator[ChatCompletionChunk] | None = None
    #: what `aclose` calls last: the engine settles a reservation that `chunks`, never read, did not
    release: Callable[[], Awaitable[None]] | None = None

    async def aclose(self) -> None:
        """Release the stream and its backend (the edge model's turn) without reading it to the end."""
        await self.chunks.aclose()
        if self.source is not None:
            await aclose_stream(self.source)
        if self.release is not None:
            await self.release()


def cap_max_tokens(requested: int | None, tier: TierConfig) -> int | None:
    """The completion tokens a request may have: what it asks for, at most the tier's cap."""
    if requested is None or tier.max_tokens is None:
        return requested if requested is not None else tier.max_tokens
    return min(requested, tier.max_tokens)


async def chain_chunks(
    head: list[ChatCompletionChunk], rest: AsyncIterator[ChatCompletionChunk]
) -> AsyncIterator[ChatCompletionChunk]:
    """The held-back head of a stream, then the rest of it."""
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


async def aclose_stream(chunks: AsyncIterator[ChatCompletionChunk]) -> None:
    """Close a backend's stream if it can be closed (an async generator): its `finally` runs now."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
