"""Resolve a model reference to a directory and load it through mlx-lm's own `load()`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.errors import ModelLoadError


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


def resolve_model_dir(model_id: str, local_path: str | None, revision: str | None) -> Path:
    """A local directory wins; otherwise a Hugging Face repo id is looked up in the local
    HF cache only (downloading is the downloader's job, never a side effect of loading)."""
    candidate = Path(local_path or model_id).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
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


def _context_length(config: dict[str, Any], requested: int | None) -> int:
    native = next(
        (
            int(config[key])
            for key in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length")
            if isinstance(config.get(key), int)
        ),
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


def load_model(
    model_id: str,
    model_dir: Path,
    *,
    context_length: int | None,
    trust_remote_code: bool,
    draft: bool,
) -> LoadedModel:
    from mlx_lm.utils import get_total_parameters, load

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"no config.json in {model_dir}", model_id=model_id)
    try:
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
    return LoadedModel(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        path=model_dir,
        config=config,
        context_length=_context_length(config, context_length),
        parameter_count=int(get_total_parameters(model)),
        dtype=_dtype_of(model),
        draft=draft,
    )
