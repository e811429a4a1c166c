"""Dedicated embedding models (BERT-style encoders: BERT, XLM-RoBERTa, ModernBERT, and the
other architectures mlx-embeddings ports), loaded through mlx-embeddings' own `load()` (the
`embeddings` extra). They only embed: `embed` serves them, generation refuses them
(engine/refusals.py).

An encoder attends in both directions, so a padded batch needs the attention mask (the
model's own), and a long text cannot be run a chunk at a time: it runs whole, in one piece
(encoders' contexts are short, 512 tokens for BERT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.errors import ModelLoadError, NotAvailable
from ..protocol.methods import LoadModelParams, LoadModelResult
from .loader import LoadedModel, _context_length, _dtype_of, resolve_model_dir
from .registry import ModelRegistry

EXTRA_HINT = "pip install 'mlx-serving[embeddings]'"


@dataclass(frozen=True)
class LoadedEncoder(LoadedModel):
    """A model that embeds and does not generate. `tokenizer` is mlx-lm's wrapper around
    the model's Hugging Face tokenizer, as for text models, so tokenize works the same."""


def encoders_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlx_embeddings") is not None


def require_mlx_embeddings() -> None:
    """Import mlx-embeddings, or say which extra installs it."""
    try:
        import mlx_embeddings  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(
            f"embedding models need mlx-embeddings, which is not installed or does not import "
            f"({type(exc).__name__}: {exc}); {EXTRA_HINT}"
        ) from exc


def load_embedding_model(
    params: LoadModelParams, cache_dir: Path, models: ModelRegistry
) -> LoadModelResult:
    """load_embedding_model, once the load policy and the memory budget admitted it."""
    require_mlx_embeddings()  # before touching the model: without it, name the extra
    if params.quantization or params.draft:
        raise ModelLoadError(
            "an embedding model loads as it is: no quantization, not as a draft",
            model_id=params.model_id,
        )
    model_dir = resolve_model_dir(
        params.model_id, params.local_path, params.revision, cache_dir / "gguf"
    )
    loaded = load_encoder(params.model_id, model_dir, context_length=params.context_length)
    models.put(loaded)  # a model it replaces is retired by the registry
    return loaded.load_result()


def load_encoder(model_id: str, model_dir: Path, *, context_length: int | None) -> LoadedEncoder:
    require_mlx_embeddings()
    from mlx_embeddings.utils import load
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from mlx_lm.utils import get_total_parameters

    try:
        config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        model, wrapper = load(str(model_dir))
    except Exception as exc:
        raise ModelLoadError(
            f"failed to load embedding model '{model_id}': {type(exc).__name__}: {exc}",
            model_id=model_id,
        ) from exc
    # mlx-embeddings wraps the Hugging Face tokenizer its own way; tokenize and the
    # embed path expect mlx-lm's wrapper, as every other model has.
    tokenizer = TokenizerWrapper(getattr(wrapper, "_tokenizer", wrapper), eos_token_ids=[])
    return LoadedEncoder(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        path=model_dir,
        config=config,
        context_length=_context_length(config, context_length),
        parameter_count=int(get_total_parameters(model)),
        dtype=_dtype_of(model),
        draft=False,
    )
