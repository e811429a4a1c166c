"""Model hyperparameters from GGUF metadata, checked for what mlx-lm can express."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architectures import ArchSpec
from .errors import GGUFImportError
from .reader import GGUFContents, MetadataValue


@dataclass(frozen=True)
class HParams:
    n_layer: int
    hidden: int
    ffn: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    context_length: int
    rope_scaling_type: str  # "none" or "linear"
    rope_scaling_factor: float


def read_hparams(contents: GGUFContents, spec: ArchSpec) -> HParams:
    meta = contents.metadata
    prefix = spec.gguf_arch

    def get(key: str, default: MetadataValue | None = None) -> MetadataValue:
        value = meta.get(f"{prefix}.{key}", default)
        if value is None:
            raise GGUFImportError(f"{contents.path}: GGUF metadata lacks {prefix}.{key}")
        return value

    def get_int(key: str, default: int | None = None) -> int:
        value = get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            # Per-layer lists (e.g. a head count per block) have no mlx-lm llama equivalent.
            raise GGUFImportError(
                f"{contents.path}: {prefix}.{key} is {value!r}, expected one integer"
            )
        # Every one of these is a size or a count: a 0 divides by zero below and a
        # negative one (an int32 field) builds nothing mlx-lm could load.
        if value < 1:
            raise GGUFImportError(f"{contents.path}: {prefix}.{key} is {value}, expected 1 or more")
        return value

    def get_float(key: str, default: float) -> float:
        value = get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GGUFImportError(
                f"{contents.path}: {prefix}.{key} is {value!r}, expected a number"
            )
        # GGUF floats are float32: keep the short decimal (1e-05, not 9.9999997e-06).
        return float(str(np.float32(value)))

    hidden = get_int("embedding_length")
    n_head = get_int("attention.head_count")
    if n_head > hidden:
        raise GGUFImportError(
            f"{contents.path}: {n_head} attention heads for an embedding of {hidden} values"
        )
    head_dim = get_int("attention.key_length", hidden // n_head)
    value_dim = get_int("attention.value_length", head_dim)
    rope_dim = get_int("rope.dimension_count", head_dim)
    if value_dim != head_dim or rope_dim != head_dim:
        raise GGUFImportError(
            f"{contents.path}: head size {head_dim}, value size {value_dim} and RoPE size "
            f"{rope_dim} differ; mlx-lm's {spec.model_type} needs them equal"
        )
    if spec.model_type == "qwen2" and head_dim != hidden // n_head:
        raise GGUFImportError(
            f"{contents.path}: head size {head_dim} is not hidden size / heads, which "
            "mlx-lm's qwen2 assumes"
        )
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise GGUFImportError(
            f"{contents.path}: RoPE scaling {scaling!r} is not supported (supported: none, linear)"
        )
    return HParams(
        n_layer=get_int("block_count"),
        hidden=hidden,
        ffn=get_int("feed_forward_length"),
        n_head=n_head,
        n_head_kv=get_int("attention.head_count_kv", n_head),
        head_dim=head_dim,
        rms_eps=get_float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=get_float("rope.freq_base", 10000.0),
        context_length=get_int("context_length", 4096),
        rope_scaling_type=str(scaling),
        rope_scaling_factor=get_float("rope.scaling.factor", 1.0),
    )
