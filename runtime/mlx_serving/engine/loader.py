"""Resolve a model reference to a directory and load it through mlx-lm's own `load()`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.errors import ModelLoadError
from ..protocol.methods import LoadModelResult
from ..protocol.notifications import LoadStage
from .config_sizes import CONTEXT_KEYS, check_config_sizes
from .kv_disk.identity import weights_fingerprint


class Retirement:
    """Why the registry let go of a model (replaced or unloaded); None while it serves.

    Written once by the registry before it tells the schedulers; read at admission on the
    engine threads, so a stream prepared on a model that was replaced meanwhile (and missed
    by fail_model, which only sees started streams) never runs on it."""

    def __init__(self) -> None:
        self.reason: str | None = None


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    path: Path
    config: dict[str, Any]
    context_length: int
    parameter_count: int
    dtype: str
    draft: bool
    # How the model is split over the ranks of a distributed runtime; None in one process.
    sharding: str | None = None
    # The weight files and config as they were when read (kv_disk/identity.py): what keys
    # its prompt caches on disk; empty keeps them in RAM.
    weights_fingerprint: str = ""
    retirement: Retirement = field(default_factory=Retirement, compare=False, repr=False)

    def load_result(self, **extra: Any) -> LoadModelResult:
        """The load_model answer describing this model (`extra`: fields beyond the core)."""
        return LoadModelResult(
            model_id=self.model_id,
            state="ready",
            context_length=self.context_length,
            parameter_count=self.parameter_count,
            dtype=self.dtype,
            is_vision_model=False,
            cached_path=str(self.path),
            draft=self.draft,
            **extra,
        )


@dataclass(frozen=True)
class ShardPlan:
    """Load through mlx-lm's `sharded_load`: `strategy` over `group`, weights read from
    `weights_dir` (the model's folder, or one that adds the index pipelining needs)."""

    strategy: str  # "pipeline" or "tensor"
    group: Any  # mx.distributed.Group
    weights_dir: Path
    parameter_count: int  # of the whole model; each rank holds a part


class LoadProgress:
    """The stages of one load, reported as each begins: (stage, its index, last index).
    A GGUF reference adds "converting_gguf"; "ready" is last, so done == total there."""

    def __init__(
        self,
        model_id: str,
        local_path: str | None,
        report: Callable[[LoadStage, int, int], None] | None,
    ) -> None:
        self.stages: list[LoadStage] = ["resolving", "loading_weights", "ready"]
        if _names_gguf(Path(local_path or model_id).expanduser()):
            self.stages.insert(1, "converting_gguf")
        self._report = report

    def reach(self, stage: LoadStage) -> None:
        if self._report is not None and stage in self.stages:
            self._report(stage, self.stages.index(stage), len(self.stages) - 1)


def _names_gguf(candidate: Path) -> bool:
    """Whether resolve_model_dir will import a GGUF file for this reference."""
    if candidate.is_file():
        return candidate.suffix.lower() == ".gguf"
    return (
        candidate.is_dir()
        and not (candidate / "config.json").is_file()
        and any(candidate.glob("*.gguf"))
    )


def resolve_model_dir(
    model_id: str,
    local_path: str | None,
    revision: str | None,
    gguf_cache: Path,
    on_import: Callable[[], None] = lambda: None,
) -> Path:
    """A local directory or GGUF file wins; otherwise a Hugging Face repo id is looked up in
    the local HF cache only (downloading is the downloader's job, never a side effect of
    loading). A GGUF file is converted once into `gguf_cache` and that directory is used;
    `on_import` is called before the conversion."""
    candidate = Path(local_path or model_id).expanduser()
    if candidate.is_file():
        return _import_gguf(model_id, candidate, gguf_cache, on_import)
    if candidate.is_dir():
        candidate = candidate.resolve()
        if (candidate / "config.json").is_file():
            return candidate
        ggufs = sorted(candidate.glob("*.gguf"))
        if len(ggufs) == 1:
            return _import_gguf(model_id, ggufs[0], gguf_cache, on_import)
        if len(ggufs) > 1:
            names = ", ".join(p.name for p in ggufs)
            raise ModelLoadError(
                f"{candidate} holds several GGUF files ({names}); pass one as local_path",
                model_id=model_id,
            )
        raise ModelLoadError(f"no config.json or .gguf file in {candidate}", model_id=model_id)
    if local_path:
        raise ModelLoadError(f"local_path does not exist: {local_path}", model_id=model_id)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError) as exc:
        raise ModelLoadError(
            f"model '{model_id}' is neither a local directory nor in the Hugging Face cache",
            model_id=model_id,
        ) from exc


def _import_gguf(
    model_id: str, path: Path, gguf_cache: Path, on_import: Callable[[], None]
) -> Path:
    if path.suffix.lower() != ".gguf":
        raise ModelLoadError(
            f"{path} is a file but not a .gguf file; pass a model directory or a GGUF file",
            model_id=model_id,
        )
    on_import()
    from ..gguf import GGUFImportError, cached_import

    try:
        return cached_import(path.resolve(), gguf_cache)
    except GGUFImportError as exc:
        raise ModelLoadError(f"cannot import GGUF: {exc}", model_id=model_id) from exc
    except ImportError as exc:  # the `gguf` package ships in the demo extra
        raise ModelLoadError(
            f"GGUF import needs the 'gguf' package ({exc}); pip install 'mlx-serving[demo]'",
            model_id=model_id,
        ) from exc


def _context_length(config: dict[str, Any], requested: int | None) -> int:
    native = next(
        (int(config[key]) for key in CONTEXT_KEYS if isinstance(config.get(key), int)),
        4096,
    )
    return min(requested, native) if requested else native


def _dtype_of(model: Any) -> str:
    """The compute dtype: the first floating parameter (quantized weights are uint32, their
    scales carry the float type)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    for _, value in tree_flatten(model.parameters()):
        if mx.issubdtype(value.dtype, mx.floating):
            return str(value.dtype).split(".")[-1]
    return "unknown"


def _cast(model: Any, config: dict[str, Any], dtype: str) -> Any:
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    if config.get("quantization"):
        model = dequantize_model(model)
        config.pop("quantization", None)
    model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    return model


def load_model(
    model_id: str,
    model_dir: Path,
    *,
    context_length: int | None,
    trust_remote_code: bool,
    draft: bool,
    dtype: str | None = None,
    shard: ShardPlan | None = None,
) -> LoadedModel:
    from mlx_lm.utils import get_total_parameters, load, sharded_load

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"no config.json in {model_dir}", model_id=model_id)
    check_config_sizes(model_id, model_dir)
    # Before the load: files replaced while it reads them give a fingerprint no later load
    # shares. A sharded model's ranks hold parts of the KV heads: nothing to persist.
    fingerprint = weights_fingerprint(model_dir) if shard is None else ""
    try:
        if shard is not None:
            model, tokenizer, config = sharded_load(
                str(shard.weights_dir),
                pipeline_group=shard.group if shard.strategy == "pipeline" else None,
                tensor_group=shard.group if shard.strategy == "tensor" else None,
                return_config=True,
                tokenizer_config={"trust_remote_code": trust_remote_code},
                trust_remote_code=trust_remote_code,
            )
        else:
            model, tokenizer, config = load(
                str(model_dir),
                tokenizer_config={"trust_remote_code": trust_remote_code},
                return_config=True,
                trust_remote_code=trust_remote_code,
            )
    except ModelLoadError:
        raise
    except Exception as exc:
        # Load failures are the user's files, not our internals: say what went wrong.
        raise ModelLoadError(
            f"failed to load model '{model_id}': {type(exc).__name__}: {exc}", model_id=model_id
        ) from exc
    if dtype is not None:
        model = _cast(model, config, dtype)
    return LoadedModel(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        path=model_dir,
        config=config,
        context_length=_context_length(config, context_length),
        parameter_count=shard.parameter_count if shard else int(get_total_parameters(model)),
        dtype=_dtype_of(model),
        draft=draft,
        sharding=shard.strategy if shard else None,
        weights_fingerprint=fingerprint,
    )
