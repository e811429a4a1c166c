"""The compat batch shape: one result entry per request, failures do not fail the call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..protocol.errors import RpcError
from ..protocol.methods import BatchItemResult

Params = TypeVar("Params")


def run_each(items: list[Params], handler: Callable[[Params], Any]) -> list[BatchItemResult]:
    results = []
    for item in items:
        try:
            results.append(BatchItemResult(success=True, result=handler(item)))
        except RpcError as exc:
            results.append(failed(exc))
    return results


def failed(exc: RpcError) -> BatchItemResult:
    return BatchItemResult(
        success=False, error=exc.message, error_code=exc.code, error_data=exc.data
    )
