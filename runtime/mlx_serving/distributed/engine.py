"""The engine of rank 0 in a distributed runtime.

Tokenizing, validation and the stream protocol stay rank 0's alone, as in one process.
What every rank must do at once goes through the scheduler's lockstep (lockstep.py): loads
and unloads run on its engine thread, between batch steps, after every rank has been told,
and each request's sampling seed is drawn here so that every rank draws the same tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import msgspec

from ..config import Settings
from ..engine import Engine
from ..engine.loader import LoadedModel
from ..engine.stream import StreamRequest, StreamSink
from ..protocol.errors import GroupFailed, ModelLoadError
from ..protocol.methods import (
    DistributedLoad,
    DistributedStatus,
    GenerateParams,
    LoadModelParams,
    LoadModelResult,
    ShardStrategy,
)
from .group import Group
from .loading import load_on_all_ranks
from .lockstep import GroupLockstep, failure_message
from .ops import Load, Unload

STRATEGIES: dict[str | None, ShardStrategy] = {"pipeline": "pipeline", "tensor": "tensor"}


class DistributedEngine(Engine):
    distributed = True

    def __init__(self, settings: Settings, sink: StreamSink, group: Group) -> None:
        self.group = group
        self.lockstep = GroupLockstep(group, settings.distributed)
        super().__init__(settings, sink, lockstep=self.lockstep)

    def distributed_status(self) -> DistributedStatus:
        models = {m.model_id: STRATEGIES[m.sharding] for m in self.models if m.sharding}
        return msgspec.structs.replace(self.group.status(), models=models)

    def load(
        self, params: LoadModelParams, on_stage: Callable[..., None] | None = None
    ) -> LoadModelResult:
        self._refuse_if_failed()
        if params.quantization:
            raise ModelLoadError(
                "on-the-fly quantization is not supported; load a quantized model directory",
                model_id=params.model_id,
            )
        op = Load(
            model_id=params.model_id,
            local_path=params.local_path,
            revision=params.revision,
            context_length=params.context_length,
            trust_remote_code=params.trust_remote_code,
            draft=params.draft,
            dtype=params.dtype,
            strategy=params.distributed.strategy if params.distributed else None,
        )

        def load_everywhere() -> LoadedModel:
            loaded = load_on_all_ranks(self.group.channel, op, self.settings.cache_dir)
            self.models.put(loaded)  # a model it replaces is retired by the registry
            return loaded

        loaded = self.lockstep.run_task(op, load_everywhere)
        return loaded.load_result(distributed=DistributedLoad(strategy=STRATEGIES[loaded.sharding]))

    def unload(self, model_id: str, reason: str | None = None) -> None:
        self._refuse_if_failed()

        def unload_everywhere() -> None:
            super(DistributedEngine, self).unload(model_id, reason)

        self.lockstep.run_task(Unload(model_id), unload_everywhere)

    def prepare_stream(self, params: GenerateParams) -> StreamRequest:
        """What a distributed runtime cannot serve is refused in engine/refusals.py."""
        self._refuse_if_failed()
        if params.seed is None:
            params = msgspec.structs.replace(params, seed=secrets.randbits(32))
        return super().prepare_stream(params)

    def shutdown(self) -> None:
        super().shutdown()
        self.group.close()

    def _refuse_if_failed(self) -> None:
        if self.group.failure is not None:
            raise GroupFailed(failure_message(self.group.failure))
