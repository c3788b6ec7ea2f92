"""The confidence cascade's parts for the engine: the edge answers, its model's confidence decides.

Where a tier verifies edge answers (`TierConfig.verify`), an answer the policy sent to the edge (not a
fallback) is generated with its token signals (`ChatBackend.complete_with_signals` /
`stream_with_signals`), held back, and judged (`hyrouter.router._confidence`); below the tier's
`min_confidence` it is discarded and the cloud answers, reason `edge_unsure`. The engine owns the
running (`RoutingEngine._verified_answer`, `_verified_stream`); the rules are pure, here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from hyrouter.router._confidence import Calibration, TokenSignal, answer_confidence
from hyrouter.router._config import TierVerifyConfig
from hyrouter.router._policy import Decision, RequestFacts, RouteReason
from hyrouter.router._wire import ChatCompletionChunk, RouteInfo


@dataclass
class EdgeCheck:
    """One request's verification: the edge's token signals as they arrive, and what they cost."""

    settings: TierVerifyConfig
    signals: list[TokenSignal] = field(default_factory=list)
    started: float = 0.0
    #: set once the edge's answer (or its held-back head) is in and can be judged
    answered: bool = False
    #: the edge's completion tokens generated for the answer judged
    tokens: int = 0
    elapsed_ms: float = 0.0

    def start(self) -> None:
        """The edge starts generating now."""
        self.started = time.perf_counter()

    def finish(self, tokens: int) -> None:
        """The edge has given `tokens` completion tokens, all of what is judged."""
        self.answered, self.tokens = True, tokens
        self.elapsed_ms = (time.perf_counter() - self.started) * 1000.0

    def confidence(self, calibration: Calibration) -> float | None:
        """The edge model's confidence in what it gave; None when its backend reports no signals."""
        return answer_confidence(self.signals, calibration)


@dataclass(frozen=True)
class Verdict:
    """What verification found, for the route: the confidence, and the edge's work thrown away."""

    confidence: float | None
    discarded_tokens: int | None = None
    discarded_ms: float | None = None

    @classmethod
    def of(cls, route: RouteInfo) -> Verdict | None:
        """The verdict `annotate` put on `route`; None where the route was not verified."""
        if route.confidence is None and route.edge_tokens_discarded is None:
            return None
        return cls(route.confidence, route.edge_tokens_discarded, route.edge_ms_discarded)

    def annotate(self, route: RouteInfo) -> None:
        """Put the verdict on `route` (the `route` facts of the response)."""
        route.confidence = None if self.confidence is None else round(self.confidence, 4)
        route.edge_tokens_discarded = self.discarded_tokens
        route.edge_ms_discarded = None if self.discarded_ms is None else round(self.discarded_ms, 3)


def escalation(
    decision: Decision, cloud: str, settings: TierVerifyConfig, confidence: float | None, facts: RequestFacts
) -> Decision | None:
    """The cloud decision replacing an edge answer of `confidence`, or None when the answer stands.

    It stands when it is confident enough (or could not be judged), when the tier's `cloud` is
    "never", or when the cloud cannot take the request now (down, or its window too small).
    """
    if confidence is None or confidence >= settings.min_confidence or cloud == "never":
        return None
    fits = facts.prompt_tokens + facts.max_tokens <= facts.cloud_context_window
    if not (facts.cloud.available and fits):
        return None
    return replace(decision, target="cloud", reason=RouteReason.EDGE_UNSURE, original_reason=decision.reason)


def content_pieces(chunks: list[ChatCompletionChunk]) -> int:
    """The content pieces in `chunks` (about a token each)."""
    return sum(1 for chunk in chunks for choice in chunk.choices if choice.delta.content)


async def hold_back(
    chunks: AsyncIterator[ChatCompletionChunk], head: list[ChatCompletionChunk], limit: int | None
) -> None:
    """Read `chunks` into `head` until it holds `limit` content pieces (None: the whole answer) or the
    stream ends."""
    held = content_pieces(head)
    while limit is None or held < limit:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        head.append(chunk)
        held += sum(1 for choice in chunk.choices if choice.delta.content)
