"""config.json for mlx-lm from the GGUF hyperparameters and the converted weights."""

from __future__ import annotations

from typing import Any

from .architectures import ArchSpec
from .hparams import HParams
from .weights import ConvertedWeights, quantization_config


def model_config(
    spec: ArchSpec,
    hparams: HParams,
    weights: ConvertedWeights,
    rope_scaling: dict[str, Any] | None,
    stop_ids: list[int],
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model_type": spec.model_type,
        "hidden_size": hparams.hidden,
        "num_hidden_layers": hparams.n_layer,
        "intermediate_size": hparams.ffn,
        "num_attention_heads": hparams.n_head,
        "num_key_value_heads": hparams.n_head_kv,
        "rms_norm_eps": hparams.rms_eps,
        "vocab_size": weights.vocab_size,
        "rope_theta": hparams.rope_theta,
        "rope_traditional": False,  # true after un-permuting Q/K (see weights.py)
        "max_position_embeddings": hparams.context_length,
        "tie_word_embeddings": weights.tied_embeddings,
    }
    if hparams.head_dim != hparams.hidden // hparams.n_head:
        config["head_dim"] = hparams.head_dim
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    if stop_ids:
        # mlx-lm stops generation on any of these (llama.cpp's eos, eot and eom).
        config["eos_token_id"] = stop_ids
    quantization = quantization_config(weights)
    if quantization is not None:
        # mlx-lm writes both keys; tools that read either find the same settings.
        config["quantization"] = quantization
        config["quantization_config"] = quantization
    return config
