"""OpenAI Chat Completions wire types, shared by the server, the backends and the clients.

Requests are held to OpenAI's OpenAPI document (`CreateChatCompletionRequest`) both ways: what it
allows is accepted, or refused with an `unsupported_value` error that names what this router cannot
do (`n > 1`, image, audio and file parts, the deprecated `function` role); what it
forbids is refused, with no coercion (`max_tokens: "8"`, `stream: "yes"`). Unknown top-level fields
are kept and passed on, as vLLM does, so that newer OpenAI clients keep working. Responses carry the
null members the spec requires (`logprobs`, `refusal`, a chunk's `finish_reason`): see `dump`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hyrouter.router._wire_tools import ResponseFormat, Tool, ToolCall, ToolChoice

Role = Literal["system", "developer", "user", "assistant", "tool"]
#: The error type of what OpenAI's API allows and this router does not serve (`UnsupportedFeature`).
UNSUPPORTED = "unsupported_value"
_WIRE = {"wire": True}  # the serialization context of `dump`


def _unsupported(message: str) -> PydanticCustomError:
    return PydanticCustomError(UNSUPPORTED, message)


class WireModel(BaseModel):
    """A wire type: `dump` leaves out its null members, except those OpenAI's schema requires."""

    #: members the spec requires even when null (`"logprobs": null`)
    required_nulls: ClassVar[frozenset[str]] = frozenset()
    #: members the spec forbids to be null: left out of every dump when unset, so that a dump
    #: validates again (`tools`)
    forbidden_nulls: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        if not (isinstance(info.context, dict) and info.context.get("wire")):
            return {k: v for k, v in data.items() if v is not None or k not in self.forbidden_nulls}
        return {k: v for k, v in data.items() if v is not None or k in self.required_nulls}


class TextPart(WireModel):
    """One text part of a multi-part message content."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class RefusalPart(WireModel):
    """A refusal part of an earlier assistant message's content; read as its text."""

    model_config = ConfigDict(extra="allow")

    type: Literal["refusal"]
    refusal: str

    @property
    def text(self) -> str:
        """The refusal, as the text of the turn."""
        return self.refusal


#: Part types OpenAI allows in a message and this router (text models) cannot read.
_MEDIA_PARTS = ("image_url", "input_audio", "file")
#: Part types this router reads.
_TEXT_PARTS = ("text", "refusal")
#: Roles whose messages the spec requires `content` of.
_CONTENT_REQUIRED = ("system", "developer", "user", "tool")


class ChatMessage(WireModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[TextPart | RefusalPart] | None = None
    #: a string for every role the spec gives a `name`; the tool role has none, so any value is an
    #: undeclared member there (see `_as_the_role_requires`)
    name: Any = None
    tool_call_id: str | None = None
    #: an assistant's earlier calls (null is taken as none: OpenAI's own client sends it back so)
    tool_calls: list[ToolCall] | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _function_role_unsupported(cls, value: Any) -> Any:
        if value == "function":
            raise _unsupported("role 'function' (deprecated by OpenAI) is not supported: send role 'tool'")
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("content must hold at least one part")
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in _MEDIA_PARTS:
                    raise _unsupported(
                        f"content parts of type '{kind}' are not supported: this router serves text only"
                    )
                if isinstance(kind, str) and kind not in _TEXT_PARTS:  # not OpenAI's: say so, not a dump
                    raise PydanticCustomError(
                        "unknown_content_part",
                        "content part type '{kind}' is not one of OpenAI's ({known}); this router serves "
                        "text only",
                        {"kind": kind, "known": ", ".join((*_TEXT_PARTS, *_MEDIA_PARTS))},
                    )
        return value

    @model_validator(mode="after")
    def _as_the_role_requires(self) -> Self:
        if self.content is None and self.role in _CONTENT_REQUIRED:
            raise ValueError(f"a '{self.role}' message needs content")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a 'tool' message needs tool_call_id")
        if self.role != "tool" and self.name is not None and not isinstance(self.name, str):
            raise ValueError("name must be a string")
        parts = self.content if isinstance(self.content, list) else []
        if self.role != "assistant" and any(isinstance(part, RefusalPart) for part in parts):
            raise ValueError("only an assistant message may hold a refusal part")
        return self

    @property
    def text(self) -> str:
        """The message's text, with multi-part content joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def to_plain(self) -> dict[str, str]:
        """The message as `{"role", "content"}` with string content, for a chat template; an
        assistant's tool calls follow its text as JSON, so that a model without tools still sees them."""
        text = self.text
        if self.tool_calls:
            calls = json.dumps([call.model_dump(mode="json", exclude_none=True) for call in self.tool_calls])
            text = f"{text}\n{calls}" if text else calls
        return {"role": self.role, "content": text}


def _not_null(value: Any) -> Any:
    """Refuse an explicit null for a member the spec allows to be absent but not null."""
    if value is None:
        raise ValueError("must not be null: leave the member out instead")
    return value


_NotNull = BeforeValidator(_not_null)


class StreamOptions(WireModel):
    """`stream_options` of a streamed request."""

    model_config = ConfigDict(extra="allow")

    forbidden_nulls = frozenset({"include_obfuscation"})

    include_usage: Annotated[bool, Field(strict=True)] = False
    #: OpenAI's padding of stream events; read only to hold it to the spec (no padding is sent)
    include_obfuscation: Annotated[bool | None, Field(strict=True), _NotNull] = None


def _integral_float_as_int(value: Any) -> Any:
    """`8.0` as `8`: JSON Schema's integer is any number without a fraction (the spec allows `"n": 1.0`)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Scalars are strict: the spec's integer is not "8" or true, its boolean not "yes" (no coercion); a
# number without a fraction is an integer, as JSON Schema has it.
_Integral = BeforeValidator(_integral_float_as_int)
_Int = Annotated[int | None, Field(ge=1, strict=True), _Integral]
_Penalty = Annotated[float | None, Field(ge=-2.0, le=2.0, strict=True)]


class ChatCompletionRequest(WireModel):
    """The body of `POST /v1/chat/completions`."""

    model_config = ConfigDict(extra="allow")
    forbidden_nulls = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format"})

    model: Annotated[str, Field(strict=True)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: _Int = None
    max_completion_tokens: _Int = None
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0, strict=True)] = None
    top_p: Annotated[float | None, Field(gt=0.0, le=1.0, strict=True)] = None
    n: Annotated[int | None, Field(ge=1, le=128, strict=True), _Integral] = 1
    stream: Annotated[bool | None, Field(strict=True)] = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    #: the spec's bounds, int64's as its document writes them (2**63 rounded)
    seed: Annotated[
        int | None, Field(ge=-9223372036854776000, le=9223372036854776000, strict=True), _Integral
    ] = None
    presence_penalty: _Penalty = None
    frequency_penalty: _Penalty = None
    #: answered where the backend can (`ChatBackend.cannot_honour`): else the request goes elsewhere
    logprobs: Annotated[bool | None, Field(strict=True)] = None
    top_logprobs: Annotated[int | None, Field(ge=0, le=20, strict=True), _Integral] = None
    user: Annotated[str | None, Field(strict=True)] = None
    store: Annotated[bool | None, Field(strict=True)] = None
    tools: Annotated[list[Tool] | None, _NotNull] = None
    tool_choice: Annotated[ToolChoice | None, _NotNull] = None
    parallel_tool_calls: Annotated[bool | None, Field(strict=True), _NotNull] = None
    response_format: Annotated[ResponseFormat | None, _NotNull] = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise _unsupported("n > 1 is not supported: this router answers with one choice")
        return value

    @property
    def calls_tools(self) -> bool:
        """Whether answering takes a model that calls tools: tools offered, and `tool_choice` is not
        "none". (Earlier calls in the conversation are shown to a chat template as text: `to_plain`.)"""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema `response_format` asks the answer to follow (`{"type": "object"}` for any JSON
        object); None for free text."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return {"type": "object"}
        return fmt.json_schema.json_schema or {"type": "object"}

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


class Usage(WireModel):
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


class RouteInfo(WireModel):
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
    #: the edge model's confidence in its answer, where the tier verifies edge answers (`verify`)
    confidence: float | None = None
    #: escalated for low confidence (reason "edge_unsure"): the edge tokens generated and thrown away,
    #: and the milliseconds they took
    edge_tokens_discarded: int | None = None
    edge_ms_discarded: float | None = None

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


class AssistantMessage(WireModel):
    """The message of a choice in a non-streamed response."""

    model_config = ConfigDict(extra="allow")
    required_nulls = frozenset({"content", "refusal"})

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class Choice(WireModel):
    """One choice of a non-streamed response."""

    model_config = ConfigDict(extra="allow")
    required_nulls = frozenset({"logprobs"})

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"
    logprobs: dict[str, Any] | None = None


def new_completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(WireModel):
    """The body of a non-streamed chat completion."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    route: RouteInfo | None = None


class Delta(WireModel):
    """The increment carried by a stream chunk."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(WireModel):
    """One choice of a stream chunk."""

    model_config = ConfigDict(extra="allow")
    required_nulls = frozenset({"finish_reason"})

    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None
    #: the log-probabilities of this chunk's tokens, when the request asked for `logprobs`
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(WireModel):
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


class ModelCard(WireModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "hybrid-router"


class ModelList(WireModel):
    """The body of `GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    """A wire model as JSON-ready data: without null members, except those the spec requires.

    (`"logprobs": null` in a choice, `"refusal": null` in its message, `"finish_reason": null` in a
    chunk; the `route` object leaves its null members out, as before.)
    """
    if not isinstance(model, WireModel):
        return model.model_dump(mode="json", exclude_none=True)
    data = model.model_dump(mode="json", context=_WIRE)
    assert isinstance(data, dict)
    return data
