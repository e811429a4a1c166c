"""load_model, unload_model, check_draft, batch_check_draft."""

from __future__ import annotations

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
from .batch import run_each
from .context import RuntimeContext
from .model_loads import ModelLoads


def model_methods(context: RuntimeContext, loads: ModelLoads) -> dict[str, Method]:
    engine = context.engine

    def load_model(params: LoadModelParams) -> LoadModelResult:
        return loads.load(params, "text")

    def unload_model(params: UnloadModelParams) -> Success:
        loads.unload(params.model_id)
        return Success()

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
