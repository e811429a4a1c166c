"""The RoPE scaling entry of config.json, including Llama 3's, which GGUF stores as data.

llama.cpp's converter does not write Llama 3's `rope_scaling` parameters into the metadata;
it writes the per-frequency factors they produce as a `rope_freqs.weight` tensor. mlx-lm
wants the parameters, so we find the published parameter set that reproduces the tensor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import GGUFImportError
from .hparams import HParams

# (low_freq_factor, high_freq_factor, original_max_position_embeddings) of the Llama 3.x
# releases; the scaling factor itself is the largest entry of the tensor.
_LLAMA3_CANDIDATES = ((1.0, 4.0, 8192),)


def rope_scaling_config(
    path: Path, hparams: HParams, rope_freqs: npt.NDArray[np.float32] | None
) -> dict[str, Any] | None:
    if rope_freqs is not None:
        return _llama3_from_factors(path, hparams, rope_freqs)
    if hparams.rope_scaling_type == "linear" and hparams.rope_scaling_factor != 1.0:
        return {"type": "linear", "factor": hparams.rope_scaling_factor}
    return None


def llama3_factors(
    theta: float, head_dim: int, factor: float, low: float, high: float, original: int
) -> npt.NDArray[np.float32]:
    """The factors llama.cpp's converter writes for Llama 3 RoPE scaling."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    factors = np.where(
        wavelen < original / high,
        1.0,
        np.where(wavelen > original / low, factor, 1 / ((1 - smooth) / factor + smooth)),
    )
    return factors.astype(np.float32)


def _llama3_from_factors(
    path: Path, hparams: HParams, factors: npt.NDArray[np.float32]
) -> dict[str, Any]:
    factor = float(factors.max())
    for low, high, original in _LLAMA3_CANDIDATES:
        expected = llama3_factors(hparams.rope_theta, hparams.head_dim, factor, low, high, original)
        if expected.shape == factors.shape and np.allclose(expected, factors, rtol=1e-4):
            return {
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": original,
            }
    raise GGUFImportError(
        f"{path}: its rope_freqs tensor matches no known Llama 3 RoPE scaling "
        "parameters, so the scaled RoPE cannot be expressed in config.json"
    )
