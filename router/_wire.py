"""OpenAI Chat Completions wire types, shared by the server, the backends and the clients.

Requests are validated strictly where a wrong value would change the answer (roles, types,
ranges) and leniently elsewhere: unknown top-level fields are kept and ignored, as vLLM does,
so that newer OpenAI clients keep working.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


class TextPart(BaseModel):
    """One text part of a multi-part message content."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text, with multi-part content joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def to_plain(self) -> dict[str, str]:
        """The message as `{"role", "content"}` with string content, for a chat template."""
        return {"role": self.role, "content": self.text}


class StreamOptions(BaseModel):
    """`stream_options` of a streamed request."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of `POST /v1/chat/completions`."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0)] = None
    top_p: Annotated[float | None, Field(gt=0.0, le=1.0)] = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float | None, Field(ge=-2.0, le=2.0)] = None
    frequency_penalty: Annotated[float | None, Field(ge=-2.0, le=2.0)] = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @property
    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens` (the newer name) or else `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        """The stop sequences as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class Usage(BaseModel):
    """Token counts of one completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class DecisionFacts(Protocol):
    """What a routing decision says about a request (`router.Decision` is the one implementation)."""

    @property
    def target(self) -> str: ...
    @property
    def reason(self) -> object: ...
    @property
    def score(self) -> float: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def tier(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def estimator(self) -> str: ...
    @property
    def fallback(self) -> bool: ...


class RouteInfo(BaseModel):
    """Where a request was answered and why: the `route` object of every response."""

    target: str
    reason: str
    score: float
    threshold: float | None = None
    tier: str
    tenant: str
    model: str
    estimator: str
    fallback: bool = False
    cost_usd: float = 0.0
    cost_saved_usd: float = 0.0
    #: the route an upstream router reported, when the backend that answered is itself a router
    upstream: RouteInfo | None = None
    #: set on a stream's last chunk when the stream broke and `target` continued the answer: the
    #: content chunks (about one token each) the caller had from the first backend by then
    failover_at_tokens: int | None = None

    @classmethod
    def from_decision(
        cls,
        decision: DecisionFacts,
        *,
        model: str,
        cost_usd: float = 0.0,
        cost_saved_usd: float = 0.0,
        **extra: Any,
    ) -> Self:
        """The route of an answer decided by `decision` and given by `model`."""
        return cls(
            target=decision.target,
            reason=str(decision.reason),
            score=round(decision.score, 4),
            threshold=decision.threshold,
            tier=decision.tier,
            tenant=decision.tenant,
            model=model,
            estimator=decision.estimator,
            fallback=decision.fallback,
            cost_usd=round(cost_usd, 8),
            cost_saved_usd=round(cost_saved_usd, 8),
            **extra,
        )


class AssistantMessage(BaseModel):
    """The message of a choice in a non-streamed response."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(BaseModel):
    """One choice of a non-streamed response."""

    model_config = ConfigDict(extra="allow")

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"


def new_completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    """The body of a non-streamed chat completion."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    route: RouteInfo | None = None


class Delta(BaseModel):
    """The increment carried by a stream chunk."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """One choice of a stream chunk."""

    model_config = ConfigDict(extra="allow")

    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One `data: {...}` event of a streamed chat completion."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    route: RouteInfo | None = None

    @property
    def starts_answer(self) -> bool:
        """Whether this chunk carries content or a finish reason: what a caller sees as the answer.

        Up to the first such chunk a stream can still fall back without the caller noticing; after
        it, a failure is a broken answer.
        """
        return any(c.delta.content or c.finish_reason for c in self.choices)


class ErrorDetail(BaseModel):
    """The `error` member of an OpenAI error body."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """An OpenAI-style error body: `{"error": {...}}`."""

    error: ErrorDetail


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "hybrid-router"


class ModelList(BaseModel):
    """The body of `GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    """A wire model as JSON-ready data, without unset optional members."""
    return model.model_dump(mode="json", exclude_none=True)
