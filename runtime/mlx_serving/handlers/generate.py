"""generate, batch_generate, cancel (and the compat alias continuous_generate)."""

from __future__ import annotations

import time

from ..dispatch import Deferred, Method
from ..engine.stream import StreamRequest
from ..protocol.errors import InvalidParams, RpcError
from ..protocol.methods import (
    BatchGenerateParams,
    BatchItemResult,
    BatchResult,
    CancelParams,
    CancelResult,
    GenerateParams,
    GenerateResult,
)
from .batch import failed
from .context import RuntimeContext


def generate_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine
    scheduler = engine.scheduler

    def generate(params: GenerateParams) -> Deferred:
        request = engine.prepare_stream(params)
        return Deferred(
            GenerateResult(stream_id=request.stream_id, started_at=time.time()),
            after_sent=lambda: scheduler.start(request),
            on_dropped=lambda: scheduler.release(request.stream_id),
        )

    def batch_generate(params: BatchGenerateParams) -> Deferred:
        seen: set[str] = set()
        for index, item in enumerate(params.requests):
            if item.stream_id is None:
                raise InvalidParams(f"requests[{index}].stream_id", "required in batch_generate")
            if item.stream_id in seen:
                raise InvalidParams(f"requests[{index}].stream_id", "duplicate stream_id")
            seen.add(item.stream_id)
        started: list[StreamRequest] = []
        results: list[BatchItemResult] = []
        for item in params.requests:
            try:
                request = engine.prepare_stream(item)
            except RpcError as exc:
                results.append(failed(exc))
                continue
            started.append(request)
            result = GenerateResult(stream_id=request.stream_id, started_at=time.time())
            results.append(BatchItemResult(success=True, result=result))

        def start_all() -> None:
            for request in started:
                scheduler.start(request)

        def release_all() -> None:
            for request in started:
                scheduler.release(request.stream_id)

        return Deferred(BatchResult(results=results), after_sent=start_all, on_dropped=release_all)

    def cancel(params: CancelParams) -> CancelResult:
        return CancelResult(
            stream_id=params.stream_id, cancelled=scheduler.cancel(params.stream_id)
        )

    return {
        "generate": Method(GenerateParams, generate),
        # Every generate joins the model's scheduler, so the compat name is the same method.
        "continuous_generate": Method(GenerateParams, generate),
        "batch_generate": Method(BatchGenerateParams, batch_generate),
        "cancel": Method(CancelParams, cancel, inline=True),
    }
