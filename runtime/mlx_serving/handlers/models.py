"""load_model, unload_model, check_draft, batch_check_draft."""

from __future__ import annotations

import time

from ..dispatch import Method
from ..protocol.methods import (
    BatchCheckDraftParams,
    BatchResult,
    CheckDraftParams,
    CheckDraftResult,
    LoadModelParams,
    LoadModelResult,
    Success,
    UnloadModelParams,
)
from ..protocol.notifications import LoadStage, ModelLoadedEvent, RuntimeProgress
from .batch import run_each
from .context import RuntimeContext
from .load_policy import LoadPolicy


def model_methods(context: RuntimeContext) -> dict[str, Method]:
    engine = context.engine
    policy = LoadPolicy(context.settings)
    telemetry = context.telemetry

    def load_model(params: LoadModelParams) -> LoadModelResult:
        def report(stage: LoadStage, done: int, total: int) -> None:
            progress = RuntimeProgress(
                task="load",
                model_id=params.model_id,
                done=done,
                total=total,
                unit="stages",
                stage=stage,
            )
            context.notify([("runtime.progress", progress)])

        with policy.admit(params, (m.model_id for m in engine.models)) as admitted:
            replacing = _is_loaded(params.model_id)
            started = time.perf_counter()
            result = engine.load(admitted, on_stage=report)
        if replacing:
            telemetry.model_unloaded(params.model_id, "replaced")
        telemetry.model_loaded(
            ModelLoadedEvent(
                timestamp=time.time(),
                model_id=result.model_id,
                load_time=time.perf_counter() - started,
                context_length=result.context_length,
                parameter_count=result.parameter_count,
                dtype=result.dtype,
                draft=result.draft,
            )
        )
        return result

    def unload_model(params: UnloadModelParams) -> Success:
        # Checked before, so that unloading an absent model (idempotent) is no event; two
        # concurrent unloads of one model may both report it.
        was_loaded = _is_loaded(params.model_id)
        engine.unload(params.model_id)
        if was_loaded:
            telemetry.model_unloaded(params.model_id, "unloaded")
        return Success()

    def _is_loaded(model_id: str) -> bool:
        return any(m.model_id == model_id for m in engine.models)

    def check_draft(params: CheckDraftParams) -> CheckDraftResult:
        return engine.check_draft(params.primary_id, params.draft_id)

    def batch_check_draft(params: BatchCheckDraftParams) -> BatchResult:
        return BatchResult(results=run_each(params.requests, check_draft))

    return {
        "load_model": Method(LoadModelParams, load_model),
        "unload_model": Method(UnloadModelParams, unload_model),
        "check_draft": Method(CheckDraftParams, check_draft),
        "batch_check_draft": Method(BatchCheckDraftParams, batch_check_draft),
    }
