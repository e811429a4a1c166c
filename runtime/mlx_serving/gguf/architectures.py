"""Which GGUF architectures map onto which mlx-lm model, and how their tensors differ."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GGUFImportError


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # `general.architecture`, also the prefix of its hyperparameter keys
    model_type: str  # mlx-lm module under mlx_lm.models
    # llama.cpp's converter reorders the rows of Q and K for its interleaved ("normal")
    # RoPE on llama-family models; mlx-lm rotates the two halves of each head instead.
    permute_qk: bool
    # mlx-lm's qwen2 always has Q/K/V biases; its llama has none by default.
    qkv_bias: bool


_SPECS = {
    spec.gguf_arch: spec
    for spec in (
        ArchSpec("llama", "llama", permute_qk=True, qkv_bias=False),
        # Mistral GGUFs are written as "llama"; a few converters say "mistral".
        ArchSpec("mistral", "llama", permute_qk=True, qkv_bias=False),
        # Qwen2 uses llama.cpp's NEOX RoPE, which is mlx-lm's layout: no reordering.
        ArchSpec("qwen2", "qwen2", permute_qk=False, qkv_bias=True),
    )
}

SUPPORTED_ARCHITECTURES = tuple(_SPECS)


def arch_spec(gguf_arch: str) -> ArchSpec:
    spec = _SPECS.get(gguf_arch)
    if spec is None:
        raise GGUFImportError(
            f"unsupported GGUF architecture {gguf_arch!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return spec
