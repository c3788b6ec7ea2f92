"""The interface every answering backend implements: the edge model and the cloud endpoint."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from hyrouter.router._confidence import TokenSignal
from hyrouter.router._errors import BackendError
from hyrouter.router._wire import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
)

#: The name of a backend in the engine: "edge" and "cloud" today; the policy decides between names.
Target = str

# Tokens a chat template adds around each message (ChatML: "<|im_start|>role\n ... <|im_end|>\n").
TOKENS_PER_MESSAGE = 4
# Tokens a template adds to open the assistant's turn.
TOKENS_PER_REPLY = 3


@dataclass(frozen=True)
class BackendHealth:
    """What the policy needs to know about a backend right now.

    `available` is false when the backend cannot answer at all (model not loaded, breaker open,
    endpoint not configured); `busy` is true when it could answer but would make the caller wait
    (edge queue at its bound); `configured` is false when the deployment has no such backend at all
    (edge disabled, no cloud URL): not a failure, a mode (edge-only, cloud-only).
    """

    available: bool
    busy: bool = False
    detail: str = ""
    configured: bool = True


def approximate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A fast upper-leaning token estimate (about 3.5 characters a token) for any tokenizer."""
    chars = sum(len(m.text) for m in messages)
    return int(chars / 3.5) + 1 + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY


def token_upper_bound(messages: Sequence[ChatMessage]) -> int:
    """A bound no byte-level tokenizer's count exceeds: a token is at least one UTF-8 byte.

    Looser than `approximate_tokens` (about four times a count of English), and as cheap; what
    decides that a prompt certainly fits a context window without tokenizing it.
    """
    size = sum(len(m.text.encode("utf-8", "replace")) for m in messages)
    return size + 1 + 2 * TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY


class ChatBackend(abc.ABC):
    """A place a chat completion can be answered: the CPU model here or the GPU endpoint.

    Implementations raise `router.BackendError` subclasses for every failure to answer, so that the
    engine can fall back; a streamed answer raises before its first chunk when it cannot start.
    """

    #: the name the engine knows this backend by: "edge" or "cloud"
    target: Target
    #: the model id reported in responses and `x-route-model`
    model_id: str
    #: the context window in tokens (prompt and completion together)
    context_window: int

    @abc.abstractmethod
    def health(self) -> BackendHealth:
        """The backend's state now; cheap, no I/O."""

    def cannot_honour(self, request: ChatCompletionRequest) -> str | None:
        """What `request` asks that this backend cannot give, or None when it can answer it all.

        One of "tools", "logprobs", "structured_output" (the policy routes such a request where it
        can be honoured, as `needs_<what>`, or refuses it); the default honours everything, as an
        OpenAI-compatible endpoint that is passed the request does.
        """
        return None

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens of `messages` with the chat template; exact where the backend can tell."""
        return approximate_tokens(messages)

    @abc.abstractmethod
    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        """Answer `request` in one response of at most `max_tokens` completion tokens."""

    @abc.abstractmethod
    def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Answer `request` as chunks; the first chunk carries `role`, the last `finish_reason`.

        When the request has `stream_options.include_usage`, a final chunk with empty `choices`
        carries the usage, as OpenAI does.
        """

    async def complete_with_signals(
        self, request: ChatCompletionRequest, *, max_tokens: int, signals: list[TokenSignal]
    ) -> ChatCompletionResponse:
        """`complete`, appending to `signals` what the model thought of each token of its answer.

        The engine's seam for verifying an answer (`TierConfig.verify`); the response is the one
        `complete` gives (no `logprobs` unless the request asks). The default is `complete` with no
        signals: a backend that cannot tell leaves `signals` empty, and its answer is not judged.
        """
        return await self.complete(request, max_tokens=max_tokens)

    def stream_with_signals(
        self, request: ChatCompletionRequest, *, max_tokens: int, signals: list[TokenSignal]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """`stream`, appending to `signals` the tokens behind each content chunk before it is yielded.

        The default is `stream` with no signals (see `complete_with_signals`).
        """
        return self.stream(request, max_tokens=max_tokens)

    def continue_stream(
        self, request: ChatCompletionRequest, partial: str, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Continue `partial`, an answer to `request` that another backend's stream broke off, as
        content chunks then one with `finish_reason` (no role chunk: the caller has had one).

        The engine's mid-stream failover calls it; a backend that cannot continue an answer (the
        default) raises a `BackendError`, and the broken stream ends with its error.
        """
        raise BackendError(f"the {self.target} backend cannot continue a partial answer")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, threads and the model."""
