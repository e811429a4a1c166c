"""Small generated GGUF files: tensor types, architectures and RoPE variants SmolLM2 lacks.

Each is converted, loaded with mlx-lm and compared with the NumPy forward over the raw file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm import load
from tests.gguf.numpy_reference import ReferenceModel
from tests.gguf.tiny_gguf import ByteVocab, TinyModel

import mlx_serving.gguf.weights as weights_module
from gguf import GGMLQuantizationType as Q
from mlx_serving.gguf import import_gguf
from mlx_serving.gguf.fallback import read_with_gguf_package
from mlx_serving.gguf.reader import QuantizedTensor, read_gguf
from mlx_serving.gguf.rope import llama3_factors

TOKENS = [5, 70, 260, 33, 100, 200, 7, 9, 11, 250]


@dataclass(frozen=True)
class Case:
    model: TinyModel
    # Max |logit difference| relative to the largest logit. Q4/Q8 blocks and F32 convert
    # exactly (observed ~1e-6); types MLX cannot hold are dequantized to float16 and carry
    # its rounding (observed 3e-4 for Q6_K through mx.load, 6e-4 for Q5/K-quants/BF16).
    tolerance: float


CASES = {
    # Q4_0/Q4_1/Q8_0 as MLX triplets, F16 widened, Q6_K dequantized by mx.load; untied head.
    "llama-mlx-load": Case(
        TinyModel(
            types={
                "token_embd": Q.Q8_0,
                "attn_q": Q.Q4_0,
                "attn_k": Q.Q4_1,
                "attn_v": Q.F16,
                "ffn_down": Q.Q6_K,
                "output": Q.Q8_0,
            }
        ),
        tolerance=1e-3,
    ),
    # Q5_0 makes mx.load refuse the file: everything goes through the gguf package.
    "llama-gguf-package": Case(
        TinyModel(
            types={
                "token_embd": Q.Q8_0,
                "attn_q": Q.Q5_0,
                "attn_k": Q.Q4_0,
                "ffn_up": Q.Q5_1,
                "attn_output": Q.BF16,
                "ffn_down": Q.Q4_K,
            },
            tied=True,
        ),
        tolerance=2e-3,
    ),
    # NEOX RoPE (no Q/K permutation) and Q/K/V biases.
    "qwen2": Case(
        TinyModel(arch="qwen2", theta=1e6, types={"attn_q": Q.Q4_0, "attn_k": Q.Q8_0}),
        tolerance=1e-4,
    ),
    # Llama 3 RoPE scaling, stored by llama.cpp as a rope_freqs tensor of factors
    # (dropping it from config.json was measured to cost 1e-2 here: the test sees it).
    "llama3-rope": Case(
        TinyModel(
            theta=500000.0,
            context_length=131072,
            rope_freqs=llama3_factors(500000.0, 16, 8.0, 1.0, 4.0, 8192),
        ),
        tolerance=1e-4,
    ),
}


def convert(case: Case, root: Path) -> tuple[Path, Path]:
    gguf_path = case.model.write(root / "model.gguf", ByteVocab())
    return gguf_path, import_gguf(gguf_path, root / "converted")


def logits(model_dir: Path) -> np.ndarray[Any, Any]:
    model, _ = load(str(model_dir))
    return np.array(model(mx.array([TOKENS]))[0].astype(mx.float32))


@pytest.mark.parametrize("name", CASES)
def test_logits_match_numpy_forward(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    gguf_path, model_dir = convert(case, tmp_path)
    ours = logits(model_dir)
    expected = ReferenceModel(gguf_path).logits(TOKENS)
    assert len(set(expected.argmax(axis=-1))) > len(TOKENS) // 2  # not a degenerate model
    np.testing.assert_array_equal(ours.argmax(axis=-1), expected.argmax(axis=-1))
    assert np.abs(ours - expected).max() < case.tolerance * np.abs(expected).max()


def test_the_comparison_catches_a_missing_unpermutation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the test above: without un-permuting Q/K the logits must disagree."""
    monkeypatch.setattr(weights_module, "_unpermute", lambda tensor, heads: tensor)
    gguf_path, model_dir = convert(CASES["llama-mlx-load"], tmp_path)
    error = np.abs(logits(model_dir) - ReferenceModel(gguf_path).logits(TOKENS)).max()
    assert error > 0.05


def test_llama3_rope_scaling_in_config(tmp_path: Path) -> None:
    _, model_dir = convert(CASES["llama3-rope"], tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def test_per_module_quantization(tmp_path: Path) -> None:
    _, model_dir = convert(CASES["llama-mlx-load"], tmp_path)
    quantization = json.loads((model_dir / "config.json").read_text())["quantization"]
    # Per layer: Q (Q4_0) and K (Q4_1) are 4-bit, the most common setting.
    assert (quantization["group_size"], quantization["bits"]) == (32, 4)
    assert quantization["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert quantization["lm_head"] == {"group_size": 32, "bits": 8}
    assert quantization["model.layers.0.self_attn.v_proj"] is False  # F16: stays float
    model, _ = load(str(model_dir))
    layer = model.model.layers[1]
    assert isinstance(layer.self_attn.q_proj, nn.QuantizedLinear)
    assert layer.self_attn.q_proj.bits == 4
    assert isinstance(model.lm_head, nn.QuantizedLinear) and model.lm_head.bits == 8
    assert type(layer.self_attn.v_proj) is nn.Linear
    assert type(layer.mlp.down_proj) is nn.Linear  # Q6_K, dequantized


def test_mlx_load_and_gguf_package_read_the_same_blocks(tmp_path: Path) -> None:
    types = {"token_embd": Q.Q8_0, "attn_q": Q.Q4_0, "attn_k": Q.Q4_1, "ffn_up": Q.Q8_0}
    path = TinyModel(types=types).write(tmp_path / "blocks.gguf", ByteVocab())
    fast, slow = read_gguf(path), read_with_gguf_package(path, "test")
    assert fast.tensors.keys() == slow.tensors.keys()
    assert fast.metadata == slow.metadata
    quantized = 0
    for name, ours in fast.tensors.items():
        theirs = slow.tensors[name]
        if isinstance(ours, QuantizedTensor):
            assert isinstance(theirs, QuantizedTensor)
            quantized += 1
            for part in ("weight", "scales", "biases"):
                assert mx.array_equal(getattr(ours, part), getattr(theirs, part)), (name, part)
        else:
            assert not isinstance(theirs, QuantizedTensor)
            assert mx.array_equal(ours, theirs), name
    assert quantized == 1 + 3 * 2  # embedding + three matrices in each of two layers
