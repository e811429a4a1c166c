"""generate and its aliases, batch_generate and cancel: the request of a stream."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .common import NonEmptyStr, TokenId

Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]


class TextPart(msgspec.Struct, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImagePart(msgspec.Struct, kw_only=True, tag="image", tag_field="type"):
    # base64 or a `data:image/…;base64,` URI; only models loaded by load_vision_model.
    image: str


# The roles of the chat format that models' chat templates are written for. An unknown role
# is refused (-32602 naming messages[i].role): a template may render it silently, or drop
# the message, and either way the model would not see what the client meant.
ChatRole = Literal["system", "developer", "user", "assistant", "tool"]


class FunctionCall(msgspec.Struct, kw_only=True):
    name: NonEmptyStr
    # JSON text of an object, as the OpenAI API sends it.
    arguments: str


class ToolCall(msgspec.Struct, kw_only=True):
    """A call the assistant made, in the history sent back with its result."""

    id: Annotated[str, Meta(max_length=256)] = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    role: ChatRole
    # null or absent only in an assistant message that carries tool_calls.
    content: str | list[TextPart | ImagePart] | None = None
    # assistant: the calls it made; tool: the id of the call this message answers.
    tool_calls: Annotated[list[ToolCall], Meta(max_length=128)] | None = None
    tool_call_id: Annotated[str, Meta(max_length=256)] | None = None


class JsonSchemaGuidance(msgspec.Struct, kw_only=True, tag="json_schema", tag_field="mode"):
    schema: dict[str, Any]


class RegexGuidance(msgspec.Struct, kw_only=True, tag="regex", tag_field="mode"):
    pattern: str


class GrammarGuidance(msgspec.Struct, kw_only=True, tag="grammar", tag_field="mode"):
    grammar: str


Guidance = JsonSchemaGuidance | RegexGuidance | GrammarGuidance

# The characters OpenAI allows in a function name; a name is also what the model writes.
ToolName = Annotated[str, Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$")]


class FunctionDefinition(msgspec.Struct, kw_only=True):
    name: ToolName
    description: str | None = None
    # A JSON Schema of the arguments object; absent: a function without arguments.
    parameters: dict[str, Any] | None = None


class ToolDefinition(msgspec.Struct, kw_only=True):
    """An OpenAI function definition."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(msgspec.Struct, kw_only=True):
    name: ToolName


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """Call this function (forced with guidance, so the arguments match its schema)."""

    type: Literal["function"] = "function"
    function: ToolChoiceFunction


# auto: the model decides; none: tools are not offered; required: one call of any tool,
# forced with guidance as a named choice is.
ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class GenerateParams(msgspec.Struct, kw_only=True):
    """A generation request. Exactly one of prompt / prompt_tokens / messages is non-empty;
    upper bounds that depend on configuration (max_tokens, temperature, the prompt's bytes)
    are checked by the handler against the runtime's limits. `image` and `images` belong to
    generate_with_image: generate refuses them (-32602) rather than run without them; its
    images go in `messages` as image parts."""

    model_id: NonEmptyStr
    # At most json_rpc.max_prompt_bytes of UTF-8 (runtime/info `limits`); so are messages.
    prompt: str = ""
    prompt_tokens: list[TokenId] | None = None
    messages: list[ChatMessage] | None = None
    stream_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] = 512
    temperature: Annotated[float, Meta(ge=0.0)] = 0.7
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Meta(ge=0)] = 0
    min_p: Unit = 0.0
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    repetition_context_size: Annotated[int, Meta(ge=1, le=1_000_000)] = 20
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None
    stop_sequences: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=100)]], Meta(max_length=10)
    ] = []
    stop_token_ids: Annotated[list[TokenId], Meta(max_length=100)] = []
    logit_bias: dict[TokenId, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] = 0
    guidance: Guidance | None = None
    # Functions the model may call (with `messages` only): calls come as `stream.tool_call`.
    tools: Annotated[list[ToolDefinition], Meta(max_length=128)] | None = None
    # null: "auto" when tools are given.
    tool_choice: ToolChoice | None = None
    # separate: a thinking model's reasoning comes as chunks with `reasoning: true`;
    # inline: as ordinary text, markers included.
    reasoning: Literal["inline", "separate"] = "inline"
    draft_model: str | None = None
    num_draft_tokens: Annotated[int, Meta(ge=1, le=64)] = 3
    include_cumulative_text: bool = False
    # Declared here, not only on generate_with_image, so that generate sees them to refuse.
    image: str | None = None
    images: Annotated[list[str], Meta(max_length=64)] = []


class GenerateWithImageParams(GenerateParams, kw_only=True):
    """generate on a vision model with images beside the prompt. Each image is base64 or
    a `data:image/…;base64,` URI; `image` (compat: one image) comes before `images`. The
    prompt is rendered with the model's chat template and one placeholder per image, as
    mlx-vlm's CLI does, unless `raw_prompt` (the prompt then carries its placeholders, one
    per image)."""

    raw_prompt: bool = False


class GenerateResult(msgspec.Struct, kw_only=True):
    stream_id: str
    started_at: float


class BatchGenerateParams(msgspec.Struct, kw_only=True):
    requests: Annotated[list[GenerateParams], Meta(max_length=1024)]


class CancelParams(msgspec.Struct, kw_only=True):
    stream_id: Annotated[str, Meta(min_length=1, max_length=256)]


class CancelResult(msgspec.Struct, kw_only=True):
    stream_id: str
    cancelled: bool
