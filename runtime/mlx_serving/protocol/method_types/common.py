"""What several methods share: the params of methods that take none, the shapes of
batch answers, and constrained scalars."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

UNSET = msgspec.UNSET

NonEmptyStr = Annotated[str, Meta(min_length=1, max_length=1024)]
TokenId = Annotated[int, Meta(ge=0)]


class Empty(msgspec.Struct, kw_only=True):
    """Params of the methods that take none (a client may still send `{}` or `[]`)."""


class Success(msgspec.Struct, kw_only=True):
    success: bool = True


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
