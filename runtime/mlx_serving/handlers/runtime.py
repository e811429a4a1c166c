"""runtime/info, runtime/state, runtime/metrics, shutdown, and the methods later issues
will serve."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata

import msgspec

from .. import __version__
from ..dispatch import Deferred, Method
from ..engine import kv_disk
from ..engine.vision import LoadedVisionModel
from ..process_memory import process_memory
from ..protocol.errors import NotAvailable
from ..protocol.methods import (
    METHODS,
    Empty,
    Limits,
    MemoryState,
    PromptCacheInfo,
    RuntimeInfo,
    RuntimeState,
    Success,
)
from ..protocol.metrics import GaugeFamily, RuntimeMetrics
from ..telemetry.registry import gauge, labelled_gauge
from .context import RuntimeContext

# Methods that exist in the protocol but are not served by this build yet: they answer a
# clear error and are not advertised in capabilities.
NOT_YET_SERVED = ("runtime/telemetry",)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _backend() -> str:
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        return "cpu"
    return "metal" if sys.platform == "darwin" else "cuda"


def _prompt_cache_info(context: RuntimeContext) -> PromptCacheInfo:
    settings = context.settings.scheduler
    on = kv_disk.disk_tier_on(settings)
    distributed = context.engine.distributed_status() is not msgspec.UNSET
    persisted, refused = [], {}
    for model in context.engine.models:
        reason = kv_disk.persistence(model, settings)
        if distributed and on:
            reason = "a distributed runtime keeps prompt caches in RAM"
        elif isinstance(model, LoadedVisionModel) and on:
            reason = "a vision model's prompts hold image features, not tokens alone"
        if reason is None:
            persisted.append(model.model_id)
        else:
            refused[model.model_id] = reason
    return PromptCacheInfo(
        directory=settings.prompt_cache_dir if on else None,
        max_disk_bytes=settings.prompt_cache_disk_bytes if on else 0,
        persisted_models=persisted,
        not_persisted=refused,
    )


def _budget_gauges(memory: MemoryState) -> list[GaugeFamily]:
    """The memory budget and what holds it (docs/MEMORY.md)."""
    return [
        gauge(
            "mlx_serving_memory_budget_bytes",
            "Bytes resident models and stream KV caches may hold (models.memory_budget_bytes).",
            memory.budget_bytes,
        ),
        gauge(
            "mlx_serving_memory_used_bytes",
            "Bytes of the budget held: weights, prompt cache shares, KV reserved, loads.",
            memory.used_bytes,
        ),
        gauge(
            "mlx_serving_memory_weights_bytes",
            "Bytes of the budget held by resident models (weights and prompt cache share).",
            memory.weights_bytes,
        ),
        gauge(
            "mlx_serving_kv_reserved_bytes",
            "Bytes of KV cache reserved by admitted streams (prompt + max_tokens each).",
            memory.kv_reserved_bytes,
        ),
        gauge(
            "mlx_serving_streams_waiting_for_memory",
            "Streams waiting for room in the memory budget before they are acknowledged.",
            memory.streams_waiting,
        ),
    ]


def _engine_gauges(context: RuntimeContext) -> list[GaugeFamily]:
    """What the engine holds right now; the telemetry adds its own gauges."""
    import mlx.core as mx

    engine = context.engine
    memory = process_memory()
    caches = sorted(engine.prompt_cache_stats().items())

    def per_model(key: str) -> list[tuple[str, float]]:
        return [(model_id, stats[key]) for model_id, stats in caches if key in stats]

    return [
        gauge(
            "mlx_serving_active_streams",
            "Streams accepted and not yet ended (queued ones included).",
            engine.active_streams(),
        ),
        gauge("mlx_serving_loaded_models", "Models resident in the runtime.", len(engine.models)),
        *_budget_gauges(engine.residency.memory()),
        gauge("mlx_serving_resident_memory_bytes", "Resident set size of the process.", memory.rss),
        gauge(
            "mlx_serving_virtual_memory_bytes", "Virtual memory size of the process.", memory.vms
        ),
        gauge(
            "mlx_serving_mlx_active_memory_bytes",
            "Memory MLX holds in arrays on its device (0 on the CPU backend).",
            mx.get_active_memory(),
        ),
        gauge(
            "mlx_serving_mlx_peak_memory_bytes",
            "Most memory MLX has held at once (0 on the CPU backend).",
            mx.get_peak_memory(),
        ),
        gauge(
            "mlx_serving_mlx_cache_memory_bytes",
            "Memory MLX keeps cached for reuse (0 on the CPU backend).",
            mx.get_cache_memory(),
        ),
        labelled_gauge(
            "mlx_serving_prompt_cache_bytes",
            "Bytes of KV cache kept for reuse, by model.",
            "model_id",
            per_model("bytes"),
        ),
        labelled_gauge(
            "mlx_serving_prompt_cache_entries",
            "Prompts whose KV cache is kept, by model.",
            "model_id",
            per_model("entries"),
        ),
        labelled_gauge(
            "mlx_serving_prompt_cache_hits",
            "Prompt cache lookups that reused a prefix, by model, since its batch began.",
            "model_id",
            per_model("hits"),
        ),
        labelled_gauge(
            "mlx_serving_prompt_cache_misses",
            "Prompt cache lookups that found nothing, by model, since its batch began.",
            "model_id",
            per_model("misses"),
        ),
        *_disk_gauges(per_model),
    ]


def _disk_gauges(per_model: Callable[[str], list[tuple[str, float]]]) -> list[GaugeFamily]:
    """The prompt cache's disk tier, by model, for the models whose caches persist."""
    return [
        labelled_gauge(f"mlx_serving_prompt_cache_{key}", help, "model_id", per_model(key))
        for key, help in (
            (
                "disk_hits",
                "Prompt cache lookups served from disk (of all hits), since its batch began.",
            ),
            ("disk_cached_tokens", "Prompt tokens restored from disk, since its batch began."),
            (
                "disk_restored_bytes",
                "Bytes of KV blocks read back from disk, since its batch began.",
            ),
            ("disk_restore_seconds", "Time spent reading and rebuilding caches from disk."),
            ("disk_blocks_written", "KV blocks this process wrote to disk for the model."),
            ("disk_bytes", "Bytes of the model's KV blocks in the prompt cache folder."),
            (
                "disk_save_seconds",
                "Engine thread time spent handing finished caches to the disk writer.",
            ),
            (
                "disk_write_cpu_seconds",
                "CPU time the disk writer thread spent on the model's blocks.",
            ),
            (
                "disk_skipped",
                "Disk reads and writes left out: this model prefills faster than that.",
            ),
        )
    ]


def runtime_methods(context: RuntimeContext) -> dict[str, Method]:
    limits = context.settings.limits

    def info(_: Empty) -> RuntimeInfo:
        return RuntimeInfo(
            version=__version__,
            mlx_version=_version("mlx"),
            mlx_lm_version=_version("mlx-lm"),
            protocol="json-rpc-2.0",
            capabilities=context.capabilities,
            mlx_supported=True,
            memory=process_memory(),
            backend=_backend(),  # type: ignore[arg-type]
            native=context.native.active,
            native_notes=context.native.notes,
            limits=Limits(
                max_frame_bytes=limits.max_frame_bytes,
                max_output_line_bytes=limits.max_output_line_bytes,
                max_tokens=limits.max_tokens,
                max_temperature=limits.max_temperature,
                max_prompt_bytes=limits.max_prompt_bytes,
                max_active_streams=limits.max_active_streams,
            ),
            config=context.settings,
            prompt_cache=_prompt_cache_info(context),
            distributed=context.engine.distributed_status(),
        )

    def state(_: Empty) -> RuntimeState:
        return RuntimeState(
            loaded_models=context.engine.residency.states(),
            active_streams=context.engine.active_streams(),
            restart_count=context.restart_count,
            memory=context.engine.residency.memory(),
            distributed=context.engine.distributed_status(),
        )

    def metrics(_: Empty) -> RuntimeMetrics:
        return context.telemetry.snapshot(_engine_gauges(context))

    def shutdown(_: Empty) -> Deferred:
        return Deferred(Success(), after_sent=context.request_shutdown)

    def not_yet(name: str) -> Method:
        def handler(_: object) -> None:
            raise NotAvailable(f"'{name}' is not available in this runtime version")

        return Method(METHODS[name].params, handler, inline=True)

    methods = {
        "runtime/info": Method(Empty, info, inline=True),
        "runtime/state": Method(Empty, state, inline=True),
        "shutdown": Method(Empty, shutdown, inline=True),
    }
    # Without telemetry the method is not served (-32601) and not advertised.
    if context.telemetry.enabled:
        methods["runtime/metrics"] = Method(Empty, metrics, inline=True)
    methods.update({name: not_yet(name) for name in NOT_YET_SERVED})
    return methods
