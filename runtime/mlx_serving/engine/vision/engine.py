"""The vision side of the Engine: load_vision_model, and the streams of vision models.

Vision models live in the Engine's one model registry (so unload_model, runtime/state and
the loaded-model bound see them), and their streams go through the text scheduler's
`PendingStreams` (one id space, one active-stream limit, one way to cancel). What differs
is how a prompt becomes tokens (mlx-vlm's processor, images included) and where the
stream runs (`VisionLane`).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

from ...config import Settings
from ...protocol.errors import ModelLoadError, ModelNotLoaded
from ...protocol.methods import (
    GenerateParams,
    LoadModelParams,
    LoadVisionModelResult,
)
from ..loader import LoadedModel, resolve_model_dir
from ..registry import ModelRegistry
from ..scheduler import Scheduler
from ..stream import StreamRequest, StreamSink
from .budget import PixelBudget
from .inputs import VisionInputs, prepare_vision_inputs
from .lane import VisionLane
from .loader import LoadedVisionModel, load_vision_model, require_mlx_vlm

log = logging.getLogger(__name__)


def vision_installed() -> bool:
    """Whether mlx-vlm is installed, without importing it (that takes about a second)."""
    return importlib.util.find_spec("mlx_vlm") is not None


class VisionEngine:
    def __init__(
        self, settings: Settings, sink: StreamSink, models: ModelRegistry, scheduler: Scheduler
    ) -> None:
        self._settings = settings
        self._models = models
        self._lane = VisionLane(sink, scheduler.pending)
        limits = settings.vision
        self._pixels = PixelBudget(limits.max_pixels_in_flight, limits.pixel_wait_ms / 1000)
        self._lock = threading.Lock()
        # Prepared and acknowledged but not started yet: stream_id -> its inputs (under
        # _lock: request threads hold, start and forget them).
        self._prepared: dict[str, VisionInputs] = {}

    # -- models ----------------------------------------------------------------------------

    def load(self, params: LoadModelParams) -> LoadVisionModelResult:
        require_mlx_vlm()
        if params.quantization:
            raise ModelLoadError(
                "on-the-fly quantization is not supported; load a quantized model directory",
                model_id=params.model_id,
            )
        if Path(params.local_path or params.model_id).expanduser().is_file():
            raise ModelLoadError(
                "vision models load from a model directory (config.json, weights, "
                "processor files), not from a single file",
                model_id=params.model_id,
            )
        model_dir = resolve_model_dir(
            params.model_id, params.local_path, params.revision, self._settings.cache_dir / "gguf"
        )
        loaded = load_vision_model(
            params.model_id,
            model_dir,
            context_length=params.context_length,
            trust_remote_code=params.trust_remote_code,
            dtype=params.dtype,
        )
        self._models.put(loaded)  # a model it replaces is retired by the registry
        log.info("loaded vision model %s from %s", params.model_id, model_dir)
        return LoadVisionModelResult(
            model_id=loaded.model_id,
            state="ready",
            context_length=loaded.context_length,
            parameter_count=loaded.parameter_count,
            dtype=loaded.dtype,
            is_vision_model=True,
            cached_path=str(loaded.path),
            processor_type=loaded.processor_type,
            image_size=loaded.image_size,
        )

    def fail_model(self, model: LoadedModel, reason: str) -> None:
        """End the streams of a model the registry retired; those started later end when
        the lane admits them (`LoadedModel.retirement`)."""
        self._lane.fail_model(model, reason)

    # -- streams ---------------------------------------------------------------------------

    def prepare_inputs(self, loaded: LoadedModel, params: GenerateParams) -> VisionInputs | None:
        """The inputs of a request to a vision model; None for a text model's request. What
        a vision request may not ask for was refused before (engine/refusals.py)."""
        if not isinstance(loaded, LoadedVisionModel):
            return None
        inputs = prepare_vision_inputs(loaded, params, self._settings.vision, self._pixels)
        # Images take seconds to process, and the model may have been unloaded or replaced
        # meanwhile: refuse before a stream id is claimed, with the error of a request to a
        # model that is not loaded.
        current = self._models.get(loaded.model_id)
        if current is not loaded:
            raise ModelNotLoaded(
                f"model '{loaded.model_id}' was replaced while the request was prepared; "
                "send it again",
                model_id=loaded.model_id,
            )
        return inputs

    def hold(self, stream_id: str, inputs: VisionInputs) -> None:
        """Keep a prepared stream's inputs until the client has its stream id."""
        with self._lock:
            self._prepared[stream_id] = inputs

    def start(self, request: StreamRequest) -> bool:
        """Start a prepared vision stream; False when the request is not one. A cancel
        that came first waits for it in the shared `PendingStreams`."""
        with self._lock:
            inputs = self._prepared.pop(request.stream_id, None)
        if inputs is None:
            return False
        self._lane.start(request, inputs)
        return True

    def forget(self, stream_id: str) -> None:
        """The client never learnt of a prepared stream: drop its inputs."""
        with self._lock:
            self._prepared.pop(stream_id, None)

    def stop(self) -> None:
        self._lane.stop()
