"""The engine's response cache: a repeat answered before it is planned, and whole answers kept.

`ResponseCaching` is the part of `RoutingEngine` that talks to its `ResponseCache` (router/_cache.py):
the lookup before a plan, the answer from a hit (recorded as a decision of target "cache", its saving
counted as the cloud's price), and keeping a whole answer. A cache that fails is logged and the
request is routed as if it had missed; only a shared store or an embedding goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hyrouter.router._cache import CachedAnswer, CacheLookup, ResponseCache, cached_response
from hyrouter.router._plan import RoutePlan, Tenant
from hyrouter.router._policy import Decision, RouteReason
from hyrouter.router._recording import OutcomeRecording
from hyrouter.router._wire import ChatCompletionRequest, ChatCompletionResponse, RouteInfo, new_completion_id

logger = logging.getLogger("hybrid_router")


class ResponseCaching(OutcomeRecording):
    """The response cache, for `RoutingEngine` (which sets `cache` with the recording's attributes)."""

    cache: ResponseCache

    def _cache_namespace(self) -> str:
        """What answers here, in every cache key: a changed model does not serve its predecessor's answers."""
        models = ",".join(f"{name}={backend.model_id}" for name, backend in sorted(self.backends.items()))
        return f"{self.config.served_model_name}|{models}"

    async def _cache_lookup(self, request: ChatCompletionRequest, tenant: Tenant) -> CacheLookup | None:
        """The tier's cache lookup for `request` (off the event loop); None when it is not cached.

        A cache that fails is logged and the request is routed as if it had missed.
        """
        if request.model != self.config.served_model_name:
            return None  # `plan` refuses it
        settings = self.policy.tier(tenant.tier).cache
        if not settings.enabled:
            return None
        try:
            if not self.cache.blocks(settings):  # a dictionary read: cheaper than a thread hop
                return self.cache.lookup(request, tenant, settings, self._cache_namespace())
            return await asyncio.to_thread(
                self.cache.lookup, request, tenant, settings, self._cache_namespace()
            )
        except Exception:
            logger.exception("response cache %r failed; routing the request", self.cache)
            return None

    async def _remember(self, lookup: CacheLookup, answer: CachedAnswer | None) -> None:
        """Keep a whole answer (None: not one to keep); a store that fails is logged, the answer stands."""
        if answer is None:
            return
        try:
            if self.cache.in_process:
                self.cache.remember(lookup, answer)
            else:
                await asyncio.to_thread(self.cache.remember, lookup, answer)
        except Exception:
            logger.exception("response cache %r failed to keep an answer", self.cache)

    async def _answer_from_cache(
        self, lookup: CacheLookup, request: ChatCompletionRequest, tenant: Tenant, *, stream: bool
    ) -> tuple[ChatCompletionResponse, RouteInfo]:
        """A hit as a response and its route, recorded as a decision of target "cache"."""
        hit = lookup.hit
        assert hit is not None
        tier = self.policy.tier(tenant.tier)
        decision = Decision(
            target="cache",
            reason=RouteReason.SEMANTIC_CACHE_HIT if hit.semantic else RouteReason.CACHE_HIT,
            score=hit.similarity if hit.similarity is not None else 1.0,
            threshold=tier.cache.semantic_threshold if hit.semantic else None,
            tier=tenant.tier,
            tenant=tenant.name,
            estimator="",
        )
        # The answer's own id and the request, so that its outcome record can be rated and joined.
        plan = RoutePlan(decision, hit.answer.prompt_tokens, None, 0.0, request=request)
        completion_id = new_completion_id()
        route = await self._record(
            plan,
            decision,
            time.perf_counter(),
            status=200,
            stream=stream,
            usage=hit.answer.usage,
            model=hit.answer.model,
            completion_id=completion_id,
        )
        return cached_response(hit.answer, route, completion_id=completion_id), route
