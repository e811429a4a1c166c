"""The settings of one runtime process as one Struct: every section of `runtime.yaml`, its
keys, defaults and bounds (config.py reads a file and the environment into it).

Every section forbids unknown keys, so a typo fails the start with the key's path instead
of being ignored. docs/CONFIG.md describes the keys; protocol/schemas/runtime_config.json
is generated from these Structs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

MiB = 1024 * 1024

# Bounds of float fields are floats (gt=0.0, not gt=0): typing caches Annotated types by
# equality, Meta(gt=0) == Meta(gt=0.0), so an int bound would leak into the schema of every
# float field sharing it, in whichever form was read first.
Positive = Annotated[int, Meta(ge=1)]
Bytes = Annotated[int, Meta(ge=1024)]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class PythonRuntimeConfig(_Section):
    """`python_runtime`: the runtime process itself."""

    # OpenBLAS bridge for MLX's CPU GEMMs: "auto" turns it on for Linux CPU builds. A bool
    # too, because YAML reads a bare `on`/`off` as true/false. MLX_SERVING_BLAS still wins.
    blas: bool | Literal["auto"] = "auto"
    # How often to check that the parent process is still alive (it may die without
    # closing our stdin when it handed its pipe to another process).
    parent_watch_interval_s: Annotated[float, Meta(gt=0.0, le=60.0)] = 0.25


class JsonRpcLimits(_Section):
    """`json_rpc`: framing and request limits (`Settings.limits`)."""

    # 16 MiB lets a 10 MiB image through base64-encoded.
    max_frame_bytes: Bytes = 16 * MiB
    # Results (large tokenize answers) may be long; our TS client accepts up to this.
    max_output_line_bytes: Bytes = 16 * MiB
    max_tokens: Positive = 4096
    max_temperature: Annotated[float, Meta(ge=0.0)] = 2.0
    max_prompt_bytes: Positive = 1 * MiB
    max_active_streams: Positive = 64
    # Threads running the methods that are not answered inline (load_model, generate …).
    request_workers: Positive = 8
    # Bytes of frames waiting for stdout; a client that stops reading pauses generation
    # (and answers) here instead of growing memory.
    outbound_queue_bytes: Bytes = 8 * MiB


# The name existing callers import.
Limits = JsonRpcLimits


class StreamRegistryConfig(_Section):
    """`stream_registry`: how stream output is framed."""

    # compat clients expect `cumulative_text` in every chunk; it costs O(n^2) bytes.
    compat_cumulative_text: bool = False


class SchedulerConfig(_Section):
    """`scheduler`: the continuous batch of each loaded model (engine/scheduler.py)."""

    # Streams decoded together in one step.
    max_batch_size: Positive = 32
    # Prompts are prefilled one at a time, oldest first, in chunks sized so that one engine
    # step (a token for every decoding stream plus a chunk) takes about this long: the gap
    # between a decoding stream's tokens while long prompts arrive (engine/step_budget.py).
    max_step_ms: Annotated[float, Meta(gt=0.0)] = 50.0
    # The largest prefill chunk, in tokens.
    prefill_chunk_tokens: Positive = 2048
    # A fixed prefill budget in tokens per step instead of the one measured against
    # max_step_ms; null: measured.
    prefill_token_budget: Positive | None = None
    # KV caches kept per model for later prompts sharing a prefix; 0 disables. Counted in
    # the memory budget as part of each resident model, and at most a tenth of the budget.
    prompt_cache_bytes: Annotated[int, Meta(ge=0)] = 1 << 30
    prompt_cache_entries: Annotated[int, Meta(ge=0)] = 64
    # Where prompt KV caches are also kept on disk, as 256-token blocks that outlive the
    # process and are shared by every runtime pointed at the folder; null: `prompt-cache`
    # inside models.cache_dir; "" turns the disk tier off (engine/kv_disk/). The RAM tier
    # is its front: prompt_cache_bytes 0 turns both off.
    prompt_cache_dir: str | None = None
    # Bytes of blocks the folder may hold; the least recently used go first. 0: off.
    prompt_cache_disk_bytes: Annotated[int, Meta(ge=0)] = 8 << 30
    # A stream reserves its KV cache (prompt + max_tokens) in the memory budget before it is
    # acknowledged; one that does not fit waits first come, first served this long, then is
    # refused -32006 with retry_after_ms (engine/memory/ledger.py).
    admission_timeout_s: Annotated[float, Meta(ge=0.0, le=600.0)] = 10.0


class DistributedConfig(_Section):
    """`distributed`: one model served by several processes or hosts (docs/DISTRIBUTED.md)."""

    # mlx.launch / mlx.distributed_config JSON hostfile. When set this process is rank 0:
    # it starts the other ranks and alone speaks the protocol. `--hostfile` sets it too.
    hostfile: str | None = None
    # ring, nccl, jaccl or jaccl-ring; null: the hostfile's `backend`, else nccl with
    # CUDA, else ring. (mpi is left out: mpirun starts every rank itself.)
    backend: Literal["ring", "nccl", "jaccl", "jaccl-ring"] | None = None
    # The ring's first TCP port (one per rank and IP), or the NCCL/JACCL coordinator's.
    port: Annotated[int, Meta(ge=1024, le=65535)] = 32323
    # Interpreter of the other ranks; null: this process's own.
    python: str | None = None
    # Seconds for every rank to start and connect.
    start_timeout_s: Annotated[float, Meta(gt=0.0)] = 120.0
    # Longest one collective step (sharing a decision, a decode step, a prefill chunk) may
    # take before rank 0 gives the group up; a dead rank is noticed at once.
    step_timeout_s: Annotated[float, Meta(gt=0.0)] = 30.0
    # The same bound for load_model, which reads weights on every rank.
    load_timeout_s: Annotated[float, Meta(gt=0.0)] = 900.0
    # An idle rank 0 sends an empty step this often, and the other ranks sleep in between:
    # waiting inside a collective costs a core (MLX's ring backend polls its sockets), and a
    # request reaching an idle runtime waits at most this long for them.
    idle_tick_s: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.05
    # After a rank failed, rank 0 answers requests with an error this long, then exits
    # with status 3 so that a supervisor restarts the group; null: it never exits.
    exit_after_failure_s: Annotated[float, Meta(ge=0.0)] | None = 10.0


def default_cache_dir() -> str:
    return str(Path.home() / ".cache" / "mlx-serving")


class ModelsConfig(_Section):
    """`models`: defaults of load_model and bounds on what is resident."""

    # Runtime-owned files (GGUF imports under `gguf/`).
    cache_dir: str = msgspec.field(default_factory=default_cache_dir)
    # Context length of a load_model that names none (capped at the model's own); null
    # uses the model's.
    default_context_length: Positive | None = None
    # load_model of a new model_id fails while this many are loaded or loading; null: no
    # bound. The count is never made room for by eviction (the memory budget is).
    max_loaded_models: Positive | None = None
    # Bytes the weights of resident models and the KV caches of streams may take together
    # (docs/MEMORY.md). A load that does not fit evicts idle unpinned models, least recently
    # used first; null: memory_budget_fraction of the device's memory (RAM on CPU, the
    # recommended working set on Metal, device memory on CUDA; a cgroup limit if lower).
    memory_budget_bytes: Bytes | None = None
    memory_budget_fraction: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.75
    # Seconds a model may stay unused before it is evicted, for load_model calls that give
    # no keep_alive_s; null (or negative): until evicted for room or unloaded.
    keep_alive_s: Annotated[float, Meta(ge=-1.0)] | None = None
    # generate and tokenize naming an evicted or expired model load it again with the
    # parameters it was loaded with (the request waits); false: -32005 instead.
    reload_on_demand: bool = True
    # Seconds with no stream running and no request in flight before the memory freed by
    # streams and requests goes back to the system; until then it is kept for the next
    # burst, which would otherwise take it all again from fresh pages and miss MLX's buffer
    # cache on every batch shape it grows through: 32 streams sent 1 s after the last ones
    # ended ran 25-35% slower with a 0.2 s wait than with none (five bursts each, a 2-core
    # CPU; docs/MEMORY.md).
    idle_release_s: Annotated[float, Meta(ge=0.0)] = 10.0


def _default_allow_patterns() -> list[str]:
    # What mlx-lm reads: config and weights, tokenizer files, chat templates. No *.py: code
    # from a repository is never fetched unless asked for.
    return [
        "*.json",
        "model*.safetensors",
        "tokenizer.model",
        "*.tiktoken",
        "tiktoken.model",
        "*.txt",
        "*.jinja",
    ]


class DownloadConfig(_Section):
    """`download`: download_model and mlx-serving-download."""

    # Hugging Face cache layout; null: the Hub's default cache (HF_HUB_CACHE), where
    # load_model also looks up repo ids.
    cache_dir: str | None = None
    allow_patterns: list[str] = msgspec.field(default_factory=_default_allow_patterns)
    # Files fetched in parallel.
    max_workers: Annotated[int, Meta(ge=1, le=64)] = 8
    # Least seconds between two runtime.progress notifications of one download.
    progress_interval_s: Annotated[float, Meta(ge=0.0)] = 0.25


class TelemetryConfig(_Section):
    """`telemetry`: what the runtime measures and announces."""

    # Counters and latency histograms served by runtime/metrics.
    enabled: bool = True
    # Event notifications (model loaded/unloaded, generation started/completed, errors).
    events: bool = True


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingConfig(_Section):
    """`logging`: the runtime logs to stderr only; stdout is the protocol's."""

    level: LogLevel = "INFO"
    format: str = "[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"


class SecurityConfig(_Section):
    """`security`: what a request may make the runtime read or run."""

    # When non-empty, load_model accepts only model files that resolve (symlinks followed)
    # to a path under one of these folders. Include the download cache to load downloads.
    allowed_model_roots: list[str] = []
    # load_model's trust_remote_code runs Python shipped with a model; refused unless set.
    allow_trust_remote_code: bool = False


class VisionConfig(_Section):
    """`vision`: the images of vision requests (generate_with_image, image message parts)."""

    # Decoded bytes of one image. Its base64 text is 4/3 of that: json_rpc.max_frame_bytes
    # must hold it.
    max_image_bytes: Bytes = 10 * MiB
    # Width x height of one image, read from its header before any pixel is decoded (a
    # small file can declare a huge image). 32 Mi pixels: a 48-megapixel photo is refused.
    max_image_pixels: Positive = 32 * 1024 * 1024
    max_images_per_request: Annotated[int, Meta(ge=1, le=64)] = 8
    # Pixels of all the images of one request, from their headers; over it: -32602. Decoding
    # and the model's processor hold about 9 bytes a pixel at the peak (Qwen2-VL), so 128 Mi
    # pixels (four images at max_image_pixels) is about 1.1 GiB.
    max_request_pixels: Positive = 128 * 1024 * 1024
    # Pixels that image work of all requests together may hold at once. A request that does
    # not fit waits for room in arrival order, up to pixel_wait_ms, then gets -32006 with
    # retry_after_ms. One larger than this runs when no other image work is in flight.
    max_pixels_in_flight: Positive = 128 * 1024 * 1024
    pixel_wait_ms: Annotated[int, Meta(ge=0, le=60_000)] = 1000


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """runtime.yaml: the settings of one runtime process."""

    # The environments entry applied (from MLX_SERVING_ENV, else this key).
    environment: str | None = None
    python_runtime: PythonRuntimeConfig = msgspec.field(default_factory=PythonRuntimeConfig)
    limits: JsonRpcLimits = msgspec.field(default_factory=JsonRpcLimits, name="json_rpc")
    stream_registry: StreamRegistryConfig = msgspec.field(default_factory=StreamRegistryConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    models: ModelsConfig = msgspec.field(default_factory=ModelsConfig)
    download: DownloadConfig = msgspec.field(default_factory=DownloadConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    distributed: DistributedConfig = msgspec.field(default_factory=DistributedConfig)
    vision: VisionConfig = msgspec.field(default_factory=VisionConfig)
    # Partial settings per deployment (`production`, `test` …) laid over the rest of the
    # file. Empty in the effective settings, which already include the one applied.
    environments: dict[str, Settings] = {}

    def __post_init__(self) -> None:
        # Runtime-owned files live under models.cache_dir unless placed elsewhere.
        if self.scheduler.prompt_cache_dir is None:
            self.scheduler.prompt_cache_dir = str(Path(self.models.cache_dir) / "prompt-cache")

    @property
    def cache_dir(self) -> Path:
        return Path(self.models.cache_dir)

    @property
    def compat_cumulative_text(self) -> bool:
        return self.stream_registry.compat_cumulative_text


class ConfigError(Exception):
    """A config file or override that does not validate; the message names where."""
