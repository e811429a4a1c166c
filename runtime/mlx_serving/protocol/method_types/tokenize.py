"""tokenize, detokenize and batch_tokenize."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from .common import NonEmptyStr, TokenId


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
