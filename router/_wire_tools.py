"""The wire types of tools and structured output: `tools`, `tool_choice`, `tool_calls`, `response_format`.

Held to OpenAI's schemas as the rest of a request is (`hyrouter.router._wire`): a fault in these members gets
a 400 here instead of being passed on to the cloud unchecked. Strict scalars, no coercion; members
the schemas do not declare are kept, as elsewhere, so that newer clients keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_Str = Annotated[str, Field(strict=True)]
_OptionalBool = Annotated[bool | None, Field(strict=True)]


class _Open(BaseModel):
    """A member object of the spec: the declared members typed, undeclared ones kept."""

    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    """A member object the spec closes (`additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid")


class FunctionDefinition(_Open):
    """A function the model may call: its name and the JSON Schema of its arguments."""

    name: _Str
    description: _Str | None = None
    parameters: dict[str, Any] | None = None
    strict: _OptionalBool = None


class FunctionTool(_Open):
    """`{"type": "function", "function": {...}}`."""

    type: Literal["function"]
    function: FunctionDefinition


class TextFormat(_Closed):
    """A custom tool's free-text input."""

    type: Literal["text"]


class Grammar(_Open):
    """The grammar a custom tool's input follows."""

    definition: _Str
    syntax: Literal["lark", "regex"]


class GrammarFormat(_Closed):
    """A custom tool's input constrained by a grammar."""

    type: Literal["grammar"]
    grammar: Grammar


class CustomDefinition(_Open):
    """A custom tool: a name and the format of its input."""

    name: _Str
    description: _Str | None = None
    format: Annotated[TextFormat | GrammarFormat, Field(discriminator="type")] | None = None


class CustomTool(_Open):
    """`{"type": "custom", "custom": {...}}`."""

    type: Literal["custom"]
    custom: CustomDefinition


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class _Named(_Open):
    name: _Str


class NamedToolChoice(_Open):
    """Call this function: `{"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"]
    function: _Named


class NamedCustomToolChoice(_Open):
    """Call this custom tool: `{"type": "custom", "custom": {"name": ...}}`."""

    type: Literal["custom"]
    custom: _Named


class AllowedTools(_Open):
    """A subset of the tools, and whether one must be called."""

    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Open):
    """`{"type": "allowed_tools", "allowed_tools": {...}}`."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[NamedToolChoice | NamedCustomToolChoice | AllowedToolsChoice, Field(discriminator="type")]
)


class FunctionCall(_Open):
    """The function an assistant called, with its arguments as a JSON text."""

    name: _Str
    arguments: _Str


class FunctionToolCall(_Open):
    """A function call in an assistant message."""

    id: _Str
    type: Literal["function"]
    function: FunctionCall


class CustomCall(_Open):
    """The custom tool an assistant called, with its input."""

    name: _Str
    input: _Str


class CustomToolCall(_Open):
    """A custom tool call in an assistant message."""

    id: _Str
    type: Literal["custom"]
    custom: CustomCall


ToolCall = Annotated[FunctionToolCall | CustomToolCall, Field(discriminator="type")]


class TextResponse(_Open):
    """`{"type": "text"}`: no constraint on the answer."""

    type: Literal["text"]


class JsonObjectResponse(_Open):
    """`{"type": "json_object"}`: the answer is a JSON object."""

    type: Literal["json_object"]


class JsonSchema(_Open):
    """The JSON Schema an answer follows, and its name."""

    name: _Str
    description: _Str | None = None
    #: `schema` shadows a pydantic attribute: held as `json_schema`, named `schema` on the wire
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: _OptionalBool = None

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)


class JsonSchemaResponse(_Open):
    """`{"type": "json_schema", "json_schema": {...}}`: the answer follows a JSON Schema."""

    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[
    TextResponse | JsonObjectResponse | JsonSchemaResponse, Field(discriminator="type")
]
