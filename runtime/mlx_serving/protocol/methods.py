"""Params and results of every method: the one declaration of the wire's request side,
one module per area, and the method table that names them.

Params Structs ignore unknown fields on purpose (compat clients send extras such as
`streaming` or `draft`); wrong types and out-of-range values of known fields are errors.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .method_types.common import (
    UNSET,
    BatchItemResult,
    BatchResult,
    Empty,
    NonEmptyStr,
    Success,
    TokenId,
)
from .method_types.embed import (
    EmbedParams,
    EmbedResult,
    EmbedText,
    Pooling,
)
from .method_types.generate import (
    BatchGenerateParams,
    CancelParams,
    CancelResult,
    ChatMessage,
    ChatRole,
    FunctionCall,
    FunctionDefinition,
    GenerateParams,
    GenerateResult,
    GenerateWithImageParams,
    GrammarGuidance,
    Guidance,
    ImagePart,
    JsonSchemaGuidance,
    NamedToolChoice,
    Penalty,
    RegexGuidance,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
    ToolDefinition,
    ToolName,
    Unit,
)
from .method_types.models import (
    BatchCheckDraftParams,
    CheckDraftParams,
    CheckDraftResult,
    DistributedLoad,
    DownloadModelParams,
    DownloadModelResult,
    DraftDetails,
    DraftModelSummary,
    DraftPerformanceEstimate,
    LoadModelParams,
    LoadModelResult,
    LoadVisionModelResult,
    ShardStrategy,
    UnloadModelParams,
)
from .method_types.runtime import (
    DistributedStatus,
    Limits,
    LoadedModelState,
    MemoryInfo,
    MemoryState,
    PromptCacheInfo,
    RankStatus,
    RuntimeInfo,
    RuntimeState,
)
from .method_types.tokenize import (
    BatchTokenizeParams,
    DetokenizeParams,
    DetokenizeResult,
    TokenizeParams,
    TokenizeResult,
)
from .metrics import RuntimeMetrics


class MethodSpec(msgspec.Struct, frozen=True):
    params: type
    result: type
    origin: Literal["compat", "new"] = "compat"


class NotServed(msgspec.Struct, kw_only=True):
    """Placeholder result of methods the protocol names but this build does not serve."""


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
    "batch_tokenize": MethodSpec(BatchTokenizeParams, BatchResult),
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

__all__ = [
    "BatchCheckDraftParams",
    "BatchGenerateParams",
    "BatchItemResult",
    "BatchResult",
    "BatchTokenizeParams",
    "CancelParams",
    "CancelResult",
    "ChatMessage",
    "ChatRole",
    "CheckDraftParams",
    "CheckDraftResult",
    "DetokenizeParams",
    "DetokenizeResult",
    "DistributedLoad",
    "DistributedStatus",
    "DownloadModelParams",
    "DownloadModelResult",
    "DraftDetails",
    "DraftModelSummary",
    "DraftPerformanceEstimate",
    "EmbedParams",
    "EmbedResult",
    "EmbedText",
    "Empty",
    "FunctionCall",
    "FunctionDefinition",
    "GenerateParams",
    "GenerateResult",
    "GenerateWithImageParams",
    "GrammarGuidance",
    "Guidance",
    "ImagePart",
    "JsonSchemaGuidance",
    "Limits",
    "LoadModelParams",
    "LoadModelResult",
    "LoadVisionModelResult",
    "LoadedModelState",
    "METHODS",
    "MemoryInfo",
    "MemoryState",
    "MethodSpec",
    "NamedToolChoice",
    "NonEmptyStr",
    "NotServed",
    "Penalty",
    "Pooling",
    "PromptCacheInfo",
    "RankStatus",
    "RegexGuidance",
    "RuntimeInfo",
    "RuntimeState",
    "ShardStrategy",
    "Success",
    "TextPart",
    "TokenId",
    "TokenizeParams",
    "TokenizeResult",
    "ToolCall",
    "ToolChoice",
    "ToolChoiceFunction",
    "ToolDefinition",
    "ToolName",
    "UNSET",
    "Unit",
    "UnloadModelParams",
]
