"""Error codes of the wire protocol and the exceptions that map onto them.

Handlers raise these; the dispatcher turns them into JSON-RPC error objects. Anything
else raised by a handler becomes -32603 without leaking its message.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..msgspec_errors import FailureKind, read_failure

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MODEL_LOAD_ERROR = -32001
GENERATION_ERROR = -32002
TOKENIZER_ERROR = -32003
GUIDANCE_ERROR = -32004
MODEL_NOT_LOADED = -32005
OVERLOADED = -32006
CANCELLED = -32007
RUNTIME_ERROR = -32099

# The name of each code, as clients show it (exported to protocol/schemas/envelope.json;
# the TS client's RPC_CODE_NAMES is generated from it).
ERROR_CODE_NAMES: dict[int, str] = {
    PARSE_ERROR: "ParseError",
    INVALID_REQUEST: "InvalidRequest",
    METHOD_NOT_FOUND: "MethodNotFound",
    INVALID_PARAMS: "InvalidParams",
    INTERNAL_ERROR: "InternalError",
    MODEL_LOAD_ERROR: "ModelLoadError",
    GENERATION_ERROR: "GenerationError",
    TOKENIZER_ERROR: "TokenizerError",
    GUIDANCE_ERROR: "GuidanceError",
    MODEL_NOT_LOADED: "ModelNotLoaded",
    OVERLOADED: "Overloaded",
    CANCELLED: "Cancelled",
    RUNTIME_ERROR: "RuntimeError",
}


class ValidationIssue(msgspec.Struct, kw_only=True):
    path: str
    message: str
    code: str


class ValidationErrorData(msgspec.Struct, kw_only=True, tag="ValidationError", tag_field="type"):
    """`error.data` of -32602: `field` is the dotted path of the first offending field."""

    field: str
    issues: list[ValidationIssue]


class MemoryHolder(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A share of the memory budget: a resident model's weights (with its prompt cache),
    the KV caches streams reserved, or a load in flight."""

    kind: Literal["model", "kv_cache", "loading"]
    bytes: int
    model_id: str | None = None
    # Models only: why it could not be evicted.
    pinned: bool = False
    busy: bool = False


class ModelErrorData(
    msgspec.Struct, kw_only=True, omit_defaults=True, tag="ApplicationError", tag_field="type"
):
    """`error.data` of the application errors (-32001 … -32099). `retry_after_ms`: for
    -32006, about how long to wait before sending the request again, where known.
    `budget_bytes`, `needed_bytes` and `holders`: a load the memory budget cannot make room
    for (-32001), with what holds the budget."""

    model_id: str | None = None
    stream_id: str | None = None
    detail: str | None = None
    retry_after_ms: int | None = None
    budget_bytes: int | None = None
    needed_bytes: int | None = None
    holders: list[MemoryHolder] | None = None


class ErrorObject(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: int
    message: str
    data: ValidationErrorData | ModelErrorData | None = None


class RpcError(Exception):
    """An error that reaches the client as a JSON-RPC error object."""

    code = RUNTIME_ERROR

    def __init__(self, message: str, *, data: Any = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    def to_object(self) -> ErrorObject:
        return ErrorObject(code=self.code, message=self.message, data=self.data)


class InvalidParams(RpcError):
    code = INVALID_PARAMS

    def __init__(self, field: str, message: str, issue_code: str = "invalid") -> None:
        data = ValidationErrorData(
            field=field,
            issues=[ValidationIssue(path=field, message=message, code=issue_code)],
        )
        super().__init__(f"Invalid params: {field}: {message}", data=data)
        self.field = field


class AppError(RpcError):
    """An application error (-32001 … -32099) carrying `{model_id, stream_id}` as data."""

    def __init__(
        self, message: str, *, model_id: str | None = None, stream_id: str | None = None
    ) -> None:
        super().__init__(message, data=ModelErrorData(model_id=model_id, stream_id=stream_id))


class ModelLoadError(AppError):
    code = MODEL_LOAD_ERROR


class MemoryBudgetExceeded(ModelLoadError):
    """A load that does not fit the memory budget even with every idle unpinned model
    evicted; nothing was evicted and nothing loaded."""

    def __init__(
        self, message: str, *, model_id: str, budget: int, needed: int, holders: list[MemoryHolder]
    ) -> None:
        super().__init__(message, model_id=model_id)
        self.data = ModelErrorData(
            model_id=model_id, budget_bytes=budget, needed_bytes=needed, holders=holders
        )


class GenerationError(AppError):
    code = GENERATION_ERROR


class TokenizerError(AppError):
    code = TOKENIZER_ERROR


class GuidanceError(AppError):
    code = GUIDANCE_ERROR


class ModelNotLoaded(AppError):
    code = MODEL_NOT_LOADED


class Overloaded(AppError):
    code = OVERLOADED

    def __init__(
        self,
        message: str,
        *,
        model_id: str | None = None,
        stream_id: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message, model_id=model_id, stream_id=stream_id)
        self.data = ModelErrorData(
            model_id=model_id, stream_id=stream_id, retry_after_ms=retry_after_ms
        )


class GroupFailed(AppError):
    """A distributed runtime lost a rank: it serves nothing more until restarted."""

    code = RUNTIME_ERROR


class NotAvailable(AppError):
    """A method of the protocol that this build does not serve yet."""

    code = RUNTIME_ERROR


# How msgspec's failures become the issue codes of -32602's data.
_ISSUE_CODES: dict[FailureKind, str] = {
    "missing_field": "missing",
    "out_of_range": "out_of_range",
    "wrong_type": "invalid_type",
    "unknown_field": "invalid",
    "invalid": "invalid",
}


def invalid_params_from_msgspec(exc: msgspec.ValidationError) -> InvalidParams:
    """Turn msgspec's "<message> - at `$.a.b[0]`" into a -32602 naming the field."""
    failure = read_failure(exc)
    message = f"{failure.message} (in a key)" if failure.in_key else failure.message
    return InvalidParams(failure.path or "params", message, _ISSUE_CODES[failure.kind])
