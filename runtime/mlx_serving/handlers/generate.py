"""generate, batch_generate, cancel (and the compat aliases continuous_generate and
generate_with_image)."""

from __future__ import annotations

import time

from ..dispatch import Deferred, Method
from ..engine.stream import StreamRequest
from ..engine.vision import require_mlx_vlm
from ..protocol.errors import InvalidParams, RpcError
from ..protocol.methods import (
    BatchGenerateParams,
    BatchItemResult,
    BatchResult,
    CancelParams,
    CancelResult,
    GenerateParams,
    GenerateResult,
    GenerateWithImageParams,
)
from .batch import failed
from .context import RuntimeContext
from .input_limits import require_prompt_within


def generate_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine
    telemetry = context.telemetry
    max_prompt_bytes = context.settings.limits.max_prompt_bytes

    def prepare(params: GenerateParams) -> StreamRequest:
        require_prompt_within(params, max_prompt_bytes)
        return engine.prepare_stream(params)

    def start(request: StreamRequest) -> None:
        telemetry.stream_started(
            request.stream_id,
            request.model.model_id,
            len(request.prompt_tokens),
            request.max_tokens,
        )
        engine.start(request)

    def generate(params: GenerateParams) -> Deferred:
        request = prepare(params)
        return Deferred(
            GenerateResult(stream_id=request.stream_id, started_at=time.time()),
            after_sent=lambda: start(request),
            on_dropped=lambda: engine.release(request.stream_id),
        )

    def generate_with_image(params: GenerateWithImageParams) -> Deferred:
        require_mlx_vlm()  # before the model lookup: without mlx-vlm, name the extra
        return generate(params)

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
                request = prepare(item)
            except RpcError as exc:
                results.append(failed(exc))
                continue
            started.append(request)
            result = GenerateResult(stream_id=request.stream_id, started_at=time.time())
            results.append(BatchItemResult(success=True, result=result))

        def start_all() -> None:
            for request in started:
                start(request)

        def release_all() -> None:
            for request in started:
                engine.release(request.stream_id)

        return Deferred(BatchResult(results=results), after_sent=start_all, on_dropped=release_all)

    def cancel(params: CancelParams) -> CancelResult:
        return CancelResult(stream_id=params.stream_id, cancelled=engine.cancel(params.stream_id))

    return {
        "generate": Method(GenerateParams, generate),
        # Every generate joins the model's scheduler, so the compat name is the same method.
        "continuous_generate": Method(GenerateParams, generate),
        "batch_generate": Method(BatchGenerateParams, batch_generate),
        # The same method with images beside the prompt (vision models, engine/vision/).
        "generate_with_image": Method(GenerateWithImageParams, generate_with_image),
        "cancel": Method(CancelParams, cancel, inline=True),
    }
