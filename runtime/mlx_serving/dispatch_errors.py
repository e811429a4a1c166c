"""What the dispatcher answers when a request cannot be served as asked: the error frames
of unusable requests, and the JSON-RPC error a handler's exception becomes."""

from __future__ import annotations

from typing import Any

import msgspec

from . import json_scan
from .protocol.envelope import NULL_ID, ErrorFrame, valid_id
from .protocol.errors import (
    INVALID_REQUEST,
    ErrorObject,
    InvalidParams,
    RpcError,
    invalid_params_from_msgspec,
)

_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def encode_error(request_id: msgspec.Raw, code: int, message: str, data: Any = None) -> bytes:
    return _encoder.encode(
        ErrorFrame(id=request_id, error=ErrorObject(code=code, message=message, data=data))
    )


def client_error(exc: Exception) -> ErrorObject | None:
    """The error a handler's exception means for the client: its own RpcError, -32602 for
    params msgspec refused or nested too deeply; None for anything else (a fault of the
    runtime, answered -32603 without its message)."""
    if isinstance(exc, msgspec.ValidationError):
        exc = invalid_params_from_msgspec(exc)
    elif isinstance(exc, RecursionError):
        exc = InvalidParams("params", "nested too deeply")
    return exc.to_object() if isinstance(exc, RpcError) else None


def invalid_request(raw: bytes) -> bytes:
    """-32600, echoing the id when the malformed request still had a usable one."""
    return encode_error(_readable_id(raw), INVALID_REQUEST, "Invalid Request")


def too_deep(raw: bytes) -> bytes:
    # Nested beyond what the decoder recurses into (anywhere, even in a member nobody
    # reads): not a usable request, but its id may well be readable.
    return encode_error(_readable_id(raw), INVALID_REQUEST, "Invalid Request: nested too deeply")


def _readable_id(raw: bytes) -> msgspec.Raw:
    """The id of a request that cannot be served, when it has a usable one (JSON-RPC 2.0
    wants it echoed; null only when it cannot be read)."""
    try:
        value = _any_decoder.decode(raw)
    except msgspec.DecodeError:
        return NULL_ID
    except RecursionError:
        # The top level alone: the id is a scalar, wherever the deep nesting is.
        member = json_scan.member(raw, "id")
        if member is None:
            return NULL_ID
        try:
            value = {"id": _any_decoder.decode(member)}
        except (msgspec.DecodeError, RecursionError):
            return NULL_ID
    if not isinstance(value, dict) or "id" not in value or isinstance(value["id"], bool):
        return NULL_ID
    candidate = msgspec.Raw(_encoder.encode(value["id"]))
    return candidate if valid_id(candidate) else NULL_ID
