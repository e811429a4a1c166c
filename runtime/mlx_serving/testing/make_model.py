"""Write a small random-weight mlx-lm model directory that mlx-lm's own `load()` reads.

Random models with mlx-lm's default initialisation and tied embeddings decode greedily
into one repeated token, which lets a parity test pass even when a path is wrong. The
weights are therefore re-drawn with larger spread and the output head is untied (gemma
always ties: its embedding std is raised instead), which gives varied greedy sequences.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from .tokenizer import CHAT_TEMPLATE, write_tokenizer


def _base_config(model_type: str, hidden: int, layers: int, vocab: int) -> dict[str, Any]:
    heads = max(hidden // 32, 2)
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": max(heads // 2, 1),
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "eos_token_id": 2,
    }


def _llama(hidden: int, layers: int, vocab: int) -> dict[str, Any]:
    return _base_config("llama", hidden, layers, vocab)


def _qwen2(hidden: int, layers: int, vocab: int) -> dict[str, Any]:
    return _base_config("qwen2", hidden, layers, vocab)


def _phi3(hidden: int, layers: int, vocab: int) -> dict[str, Any]:
    config = _base_config("phi3", hidden, layers, vocab)
    config["num_key_value_heads"] = config["num_attention_heads"]
    return config


def _gemma(hidden: int, layers: int, vocab: int) -> dict[str, Any]:
    config = _base_config("gemma", hidden, layers, vocab)
    config["head_dim"] = hidden // config["num_attention_heads"]
    config["tie_word_embeddings"] = True
    return config


ARCHITECTURES = {"llama": _llama, "qwen2": _qwen2, "phi3": _phi3, "gemma": _gemma}


def _redraw_weights(model: Any, embedding_std: float, seed: int) -> None:
    mx.random.seed(seed)
    new_weights = []
    for name, value in tree_flatten(model.parameters()):
        if value.ndim != 2:
            new_weights.append((name, value))
        elif "embed" in name:
            new_weights.append((name, mx.random.normal(value.shape) * embedding_std))
        else:
            std = 1.5 / math.sqrt(value.shape[-1])
            new_weights.append((name, mx.random.normal(value.shape) * std))
    model.load_weights(new_weights)


def make_model(
    out_dir: str | Path,
    architecture: str = "llama",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
    dtype: str = "float32",
    extra_special_tokens: Sequence[str] = (),
    chat_template: str = CHAT_TEMPLATE,
) -> Path:
    """Build the model in a temporary directory beside `out_dir`, then move it in place,
    so a crashed build never leaves a directory that looks loadable. `extra_special_tokens`
    and `chat_template` make a model with tool calling or thinking (chat_templates.py)."""
    from mlx_lm.utils import _get_classes

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; one of {sorted(ARCHITECTURES)}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tokenizer = write_tokenizer(
            staging,
            vocab_size,
            extra_special_tokens=extra_special_tokens,
            chat_template=chat_template,
        )
        config = ARCHITECTURES[architecture](hidden_size, num_layers, vocab_size)
        config["eos_token_id"] = tokenizer.token_to_id("<|im_end|>")
        model_class, args_class = _get_classes(config)
        # Layers draw their initial biases from MLX's global generator: seed it first, or
        # a model's weights depend on what the process generated before.
        mx.random.seed(seed)
        model = model_class(args_class.from_dict(config))
        embedding_std = 0.3 if config["tie_word_embeddings"] else 1.0
        _redraw_weights(model, embedding_std, seed)
        weights = {k: v.astype(getattr(mx, dtype)) for k, v in tree_flatten(model.parameters())}
        mx.save_safetensors(str(staging / "model.safetensors"), weights, {"format": "mlx"})
        config["torch_dtype"] = dtype
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a small random-weight mlx-lm model.")
    parser.add_argument("out_dir")
    parser.add_argument("--arch", default="llama", choices=sorted(ARCHITECTURES))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_model(
        args.out_dir,
        args.arch,
        hidden_size=args.hidden,
        num_layers=args.layers,
        vocab_size=args.vocab,
        seed=args.seed,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
