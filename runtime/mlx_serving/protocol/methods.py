"""Params and results of every method: the one declaration of the wire's request side.

Params Structs ignore unknown fields on purpose (compat clients send extras such as
`streaming` or `draft`); wrong types and out-of-range values of known fields are errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..config import Settings
from .metrics import RuntimeMetrics

UNSET = msgspec.UNSET

NonEmptyStr = Annotated[str, Meta(min_length=1, max_length=1024)]
TokenId = Annotated[int, Meta(ge=0)]
Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]


class Empty(msgspec.Struct, kw_only=True):
    """Params of the methods that take none (a client may still send `{}` or `[]`)."""


# -- runtime -------------------------------------------------------------------------------


class MemoryInfo(msgspec.Struct, kw_only=True):
    rss: int
    vms: int


class Limits(msgspec.Struct, kw_only=True):
    max_frame_bytes: int
    max_output_line_bytes: int
    max_tokens: int
    max_temperature: float
    max_prompt_bytes: int
    max_active_streams: int


class RankStatus(msgspec.Struct, kw_only=True):
    rank: int
    host: str
    pid: int
    memory: MemoryInfo
    # MLX's allocator: bytes held now and at most since the rank started.
    mlx_active_bytes: int
    mlx_peak_bytes: int


ShardStrategy = Literal["pipeline", "tensor"]


class DistributedStatus(msgspec.Struct, kw_only=True):
    """A runtime serving across several ranks (`--hostfile`); rank 0 answers."""

    backend: str
    size: int
    state: Literal["ok", "failed"]
    error: str | None = None
    ranks: list[RankStatus]
    # Seconds since the ranks' figures were gathered (every 2 s).
    ranks_age_s: float
    # How each loaded model is split over the ranks.
    models: dict[str, ShardStrategy] = {}


class PromptCacheInfo(msgspec.Struct, kw_only=True):
    """Where prompt KV caches outlive the process, and for which loaded models."""

    # The disk tier's folder (scheduler.prompt_cache_dir); null: the disk tier is off.
    directory: str | None
    max_disk_bytes: int
    # Loaded models whose prompt caches also go to disk.
    persisted_models: list[str]
    # The other loaded models, each with why its caches stay in RAM (a sliding window or a
    # recurrent state mlx-lm cannot restore exactly, a distributed or vision model).
    not_persisted: dict[str, str]


class RuntimeInfo(msgspec.Struct, kw_only=True):
    version: str
    mlx_version: str
    mlx_lm_version: str
    protocol: str
    capabilities: list[str]
    mlx_supported: bool
    memory: MemoryInfo
    backend: Literal["metal", "cuda", "cpu"]
    native: dict[str, bool]
    native_notes: dict[str, str]
    limits: Limits
    # Extension: the effective runtime.yaml settings (file, environment and overrides).
    config: Settings
    # Extension: the prompt cache's disk tier.
    prompt_cache: PromptCacheInfo
    # Extension: the group of a distributed runtime; absent in a single process.
    distributed: DistributedStatus | msgspec.UnsetType = UNSET


class DistributedLoad(msgspec.Struct, kw_only=True):
    """How a model is split over the ranks of a distributed runtime."""

    # null: what the architecture supports (tensor when it can shard, else pipeline).
    strategy: ShardStrategy | None = None


class LoadedModelState(msgspec.Struct, kw_only=True):
    """A model the runtime knows: resident, or evicted (for room or after keep_alive_s)
    and loaded again on demand. unload_model forgets it."""

    model_id: str
    # "evicted": not resident; a generate or tokenize naming it loads it again.
    state: Literal["ready", "evicted"]
    # embedding: loaded with load_embedding_model; it serves embed only.
    type: Literal["text", "vision", "embedding"]
    resident: bool
    pinned: bool
    # Its weights: measured once loaded; before that, read from the weight files' headers.
    bytes: int
    # Unix time it was last loaded, used by a request, or left by its last stream.
    last_used: float
    # Evicted after this long unused; null: never.
    keep_alive_s: float | None


class MemoryState(msgspec.Struct, kw_only=True):
    """The memory budget (models.memory_budget_bytes) and what holds it."""

    budget_bytes: int
    # weights_bytes + kv_reserved_bytes + loading_bytes (the prompt caches included).
    used_bytes: int
    # Resident models' weights and their prompt caches' share.
    weights_bytes: int
    # What the running and admitted streams reserved for their KV caches.
    kv_reserved_bytes: int
    # Estimated weights of the loads in flight.
    loading_bytes: int
    # Streams waiting for room before they are acknowledged.
    streams_waiting: int


class RuntimeState(msgspec.Struct, kw_only=True):
    # Every known model, the evicted ones included (`resident`).
    loaded_models: list[LoadedModelState]
    active_streams: int
    restart_count: int
    memory: MemoryState
    # Extension: as in runtime/info.
    distributed: DistributedStatus | msgspec.UnsetType = UNSET


class Success(msgspec.Struct, kw_only=True):
    success: bool = True


# -- models --------------------------------------------------------------------------------


class LoadModelParams(msgspec.Struct, kw_only=True):
    model_id: NonEmptyStr
    local_path: str | None = None
    revision: str | None = None
    quantization: str | None = None
    context_length: Annotated[int, Meta(ge=1)] | None = None
    trust_remote_code: bool = False
    draft: bool = False
    # Extension: compute dtype. A quantized model is dequantized first; on Linux CPU float32
    # runs through the optimized BLAS and decodes about 2x faster than 4-bit weights.
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    # Extension: sharding over the ranks of a distributed runtime (which shards every
    # model; this picks how).
    distributed: DistributedLoad | None = None
    # Extension: never evicted for room nor after keep_alive_s (unload_model still unloads).
    pin: bool = False
    # Extension: seconds unused before the model is evicted (and loaded again on demand);
    # null or -1: never; absent: the config's models.keep_alive_s.
    keep_alive_s: Annotated[float, Meta(ge=-1.0)] | None | msgspec.UnsetType = UNSET


class LoadModelResult(msgspec.Struct, kw_only=True):
    model_id: str
    state: Literal["ready"]
    context_length: int
    parameter_count: int
    dtype: str
    is_vision_model: bool
    cached_path: str
    draft: bool = False
    # The strategy used; absent unless the runtime is distributed.
    distributed: DistributedLoad | msgspec.UnsetType = UNSET


class LoadVisionModelResult(LoadModelResult, kw_only=True):
    # The transformers processor class that prepares images and text.
    processor_type: str
    # The vision tower's input edge in pixels; null where the processor resizes images
    # dynamically (Qwen2-VL and others).
    image_size: int | None = None


class UnloadModelParams(msgspec.Struct, kw_only=True):
    model_id: NonEmptyStr


class DownloadModelParams(msgspec.Struct, kw_only=True):
    """Fetch a snapshot from the Hugging Face Hub into the local cache; progress comes as
    `runtime.progress` notifications with task "download" and model_id = repo_id."""

    repo_id: NonEmptyStr
    revision: NonEmptyStr | None = None
    # Globs of the files to fetch; null: the config's download.allow_patterns (MLX weights,
    # config and tokenizer files); [] or ["*"]: every file.
    allow_patterns: Annotated[list[NonEmptyStr], Meta(max_length=64)] | None = None
    # A Hugging Face cache folder; null: the config's download.cache_dir, else HF_HUB_CACHE.
    cache_dir: NonEmptyStr | None = None


class DownloadModelResult(msgspec.Struct, kw_only=True):
    repo_id: str
    revision: str
    commit: str
    # Pass as load_model's local_path.
    local_path: str
    files: int
    total_bytes: int


# -- tokenizer -----------------------------------------------------------------------------


class TokenizeParams(msgspec.Struct, kw_only=True):
    """Text of at most (json_rpc.max_output_line_bytes - 64 KiB) / 16 bytes, what one
    answer line holds in the worst case (1 MiB - 4 KiB by default); the texts of a
    batch_tokenize share that."""

    model_id: NonEmptyStr
    text: str
    add_special_tokens: bool = True


class TokenizeResult(msgspec.Struct, kw_only=True):
    tokens: list[int]
    token_strings: list[str]


class DetokenizeParams(msgspec.Struct, kw_only=True):
    model_id: NonEmptyStr
    tokens: list[TokenId]
    skip_special_tokens: bool = False


class DetokenizeResult(msgspec.Struct, kw_only=True):
    text: str


class BatchTokenizeParams(msgspec.Struct, kw_only=True):
    requests: Annotated[list[TokenizeParams], Meta(max_length=1024)]


class BatchItemResult(msgspec.Struct, kw_only=True):
    """One entry of a batch result: `error` is the message string (compat clients do
    `new Error(error)`); `error_code` and `error_data` carry the rest."""

    success: bool
    result: Any = None
    error: str | None = None
    error_code: int | None = None
    error_data: Any = None


class BatchResult(msgspec.Struct, kw_only=True):
    results: list[BatchItemResult]


# -- drafts --------------------------------------------------------------------------------


class CheckDraftParams(msgspec.Struct, kw_only=True):
    primary_id: NonEmptyStr
    draft_id: NonEmptyStr


class BatchCheckDraftParams(msgspec.Struct, kw_only=True):
    requests: Annotated[list[CheckDraftParams], Meta(max_length=1024)]


class DraftModelSummary(msgspec.Struct, kw_only=True):
    model_id: str
    vocab_size: int
    parameter_count: int
    model_type: str


class DraftPerformanceEstimate(msgspec.Struct, kw_only=True):
    # Draft parameters / primary parameters: speculation pays off when this is small.
    size_ratio: float
    recommended_num_draft_tokens: int


class DraftDetails(msgspec.Struct, kw_only=True):
    primary_model: DraftModelSummary
    draft_model: DraftModelSummary
    performance_estimate: DraftPerformanceEstimate


class CheckDraftResult(msgspec.Struct, kw_only=True):
    compatible: bool
    errors: list[str]
    warnings: list[str]
    details: DraftDetails


# -- generation ----------------------------------------------------------------------------


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


# -- embeddings ----------------------------------------------------------------------------

# mean: the average of every token's final hidden state (the default); last: the last
# token's (models trained that way, e.g. Qwen3-Embedding); cls: the first token's (encoders
# with a [CLS] token; on a causal model the first token sees only itself).
Pooling = Literal["mean", "last", "cls"]
EmbedText = Annotated[str, Meta(min_length=1)]


class EmbedParams(msgspec.Struct, kw_only=True):
    """One vector per text, in order. The texts' UTF-8 is at most json_rpc.max_prompt_bytes
    in all, and their vectors must fit one answer line (json_rpc.max_output_line_bytes).
    A text over the model's context length is refused (-32602 naming `input[i]`), or cut
    to it when `truncate` is true."""

    model_id: NonEmptyStr
    input: EmbedText | Annotated[list[EmbedText], Meta(min_length=1)]
    pooling: Pooling = "mean"
    normalize: bool = True
    truncate: bool = False


class EmbedResult(msgspec.Struct, kw_only=True):
    """`prompt_tokens`: the tokens embedded, all texts together (after any truncation)."""

    embeddings: list[list[float]]
    dimensions: int
    prompt_tokens: int


class MethodSpec(msgspec.Struct, frozen=True):
    params: type
    result: type
    origin: Literal["compat", "new"] = "compat"


class NotServed(msgspec.Struct, kw_only=True):
    """Placeholder result of methods the protocol names but this build does not serve."""


_batch_tokenize = MethodSpec(BatchTokenizeParams, BatchResult)

# The wire's method table: every name a client may call, with its params and result.
METHODS: dict[str, MethodSpec] = {
    "runtime/info": MethodSpec(Empty, RuntimeInfo),
    "runtime/state": MethodSpec(Empty, RuntimeState),
    "runtime/telemetry": MethodSpec(Empty, NotServed),
    "runtime/metrics": MethodSpec(Empty, RuntimeMetrics, "new"),
    "shutdown": MethodSpec(Empty, Success),
    "load_model": MethodSpec(LoadModelParams, LoadModelResult),
    "unload_model": MethodSpec(UnloadModelParams, Success),
    "download_model": MethodSpec(DownloadModelParams, DownloadModelResult, "new"),
    "tokenize": MethodSpec(TokenizeParams, TokenizeResult),
    "detokenize": MethodSpec(DetokenizeParams, DetokenizeResult, "new"),
    "batch_tokenize": _batch_tokenize,
    "check_draft": MethodSpec(CheckDraftParams, CheckDraftResult),
    "batch_check_draft": MethodSpec(BatchCheckDraftParams, BatchResult),
    "generate": MethodSpec(GenerateParams, GenerateResult),
    "continuous_generate": MethodSpec(GenerateParams, GenerateResult),
    "batch_generate": MethodSpec(BatchGenerateParams, BatchResult),
    "cancel": MethodSpec(CancelParams, CancelResult, "new"),
    "load_vision_model": MethodSpec(LoadModelParams, LoadVisionModelResult),
    "generate_with_image": MethodSpec(GenerateWithImageParams, GenerateResult),
    "embed": MethodSpec(EmbedParams, EmbedResult, "new"),
    "load_embedding_model": MethodSpec(LoadModelParams, LoadModelResult, "new"),
}
