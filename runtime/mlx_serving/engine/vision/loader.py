"""Load a vision-language model through mlx-vlm's own `load()`: the model and its
transformers processor (image processor + tokenizer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...protocol.errors import ModelLoadError, NotAvailable
from ..loader import LoadedModel, _context_length, _dtype_of

EXTRA_HINT = "pip install 'mlx-serving[vision]'"


@dataclass(frozen=True)
class LoadedVisionModel(LoadedModel):
    """A LoadedModel whose `tokenizer` wraps the processor's tokenizer the way mlx-lm
    wraps its own (streaming detokenizer, eos ids), so tokenize, detokenize, guidance and
    the stream output code treat it like a text model's."""

    processor: Any = None
    processor_type: str = ""
    image_size: int | None = None


def require_mlx_vlm() -> None:
    """Import mlx-vlm, or say which extra installs it."""
    try:
        import mlx_vlm  # noqa: F401
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise NotAvailable(
            f"vision models need mlx-vlm, which is not installed or does not import "
            f"({type(exc).__name__}: {exc}); {EXTRA_HINT}"
        ) from exc
    # What mlx-vlm asks for through TRANSFORMERS_VERBOSITY, which only works before
    # transformers is first imported (here mlx-lm imports it earlier): without it every
    # request logs that mlx-vlm passes processor kwargs the legacy way.
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def load_vision_model(
    model_id: str,
    model_dir: Path,
    *,
    context_length: int | None,
    trust_remote_code: bool,
    dtype: str | None = None,
) -> LoadedVisionModel:
    require_mlx_vlm()
    import mlx.core as mx
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from mlx_lm.utils import get_total_parameters
    from mlx_vlm import load

    config = _read_config(model_id, model_dir)
    if config.get("model_file") and not trust_remote_code:
        # mlx-vlm would import this Python file from the model folder to build the model.
        raise ModelLoadError(
            f"model '{model_id}' builds its architecture from its own code "
            f"({config['model_file']!r}); that needs trust_remote_code",
            model_id=model_id,
        )
    try:
        # The explicit flag also reaches transformers' AutoProcessor and AutoTokenizer:
        # mlx-vlm's processor patches otherwise default it to True.
        model, processor = load(str(model_dir), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(
            f"failed to load vision model '{model_id}': {type(exc).__name__}: {exc}",
            model_id=model_id,
        ) from exc
    if getattr(processor, "image_processor", None) is None:
        # mlx-vlm also loads plain language models; here they would take no image.
        raise ModelLoadError(
            f"model '{model_id}' has no image processor: not a vision-language model "
            "(load text models with load_model)",
            model_id=model_id,
        )
    if dtype is not None:
        model.set_dtype(getattr(mx, dtype))
        mx.eval(model.parameters())
    hf_tokenizer = getattr(processor, "tokenizer", processor)
    stopping = getattr(hf_tokenizer, "stopping_criteria", None)
    eos_ids = list(getattr(stopping, "eos_token_ids", None) or [])
    # Streams get copies of mlx-vlm's own detokenizer, as its stream_generate does.
    tokenizer = TokenizerWrapper(
        hf_tokenizer,
        detokenizer_class=lambda _: processor.detokenizer,
        eos_token_ids=eos_ids,
    )
    text_config = config.get("text_config") or {}
    vision_config = config.get("vision_config") or {}
    if "vocab_size" not in config and isinstance(text_config.get("vocab_size"), int):
        config["vocab_size"] = text_config["vocab_size"]
    image_size = vision_config.get("image_size")
    return LoadedVisionModel(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        path=model_dir,
        config=config,
        context_length=_context_length({**text_config, **config}, context_length),
        parameter_count=int(get_total_parameters(model)),
        dtype=_dtype_of(model),
        draft=False,
        processor=processor,
        processor_type=type(processor).__name__,
        image_size=image_size if isinstance(image_size, int) else None,
    )


def _read_config(model_id: str, model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read {model_dir / 'config.json'}: {exc}", model_id=model_id
        ) from exc
    if not isinstance(config, dict):
        raise ModelLoadError("config.json is not a JSON object", model_id=model_id)
    return config
