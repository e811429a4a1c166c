"""The real demo model (SmolLM2-135M-Instruct, Q4_1 GGUF) through import and mlx-lm."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from tests.gguf.numpy_reference import ReferenceModel

import mlx_serving.gguf.cache as cache_module
from mlx_serving.gguf import cached_import
from mlx_serving.gguf.cli import convert_main

pytestmark = pytest.mark.slow

# Observed on this model: |mlx - numpy| <= 1.2e-4 on logits up to ~36 in magnitude,
# because both use the very same dequantized float32 weights; 2e-3 leaves a margin for
# other BLAS/accumulation orders without hiding a real error (a wrong layout costs >1).
LOGIT_TOLERANCE = 2e-3


def test_greedy_chat_answers_paris(smollm2: tuple[Any, Any]) -> None:
    from mlx_lm import stream_generate

    model, tokenizer = smollm2
    messages = [
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=24))
    assert "Paris" in text, text


@pytest.mark.parametrize(
    "text",
    ["The capital of France is", "def fibonacci(n):\n", "Once upon a time, there was"],
)
def test_logits_match_numpy_forward_over_the_gguf(
    smollm2: tuple[Any, Any], smollm2_reference: ReferenceModel, text: str
) -> None:
    model, tokenizer = smollm2
    tokens = tokenizer.encode(text)
    assert 5 <= len(tokens) <= 10
    ours = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
    expected = smollm2_reference.logits(tokens)
    np.testing.assert_array_equal(ours.argmax(axis=-1), expected.argmax(axis=-1))
    assert np.abs(ours - expected).max() < LOGIT_TOLERANCE


def test_weights_stay_quantized_bit_for_bit(
    smollm2: tuple[Any, Any], smollm2_dir: Path, smollm2_reference: ReferenceModel
) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert config["tie_word_embeddings"] is True

    model, _ = smollm2
    embed, q_proj = model.model.embed_tokens, model.model.layers[3].self_attn.q_proj
    assert isinstance(embed, nn.QuantizedEmbedding) and embed.bits == 8
    assert isinstance(q_proj, nn.QuantizedLinear) and q_proj.bits == 4

    # The reference holds gguf.quants.dequantize's float32 values of the raw tensors.
    dequantized = smollm2_reference.w.__getitem__

    def ours(layer: Any) -> np.ndarray[Any, Any]:
        values = mx.dequantize(
            layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits
        )
        return np.array(values)

    np.testing.assert_array_equal(ours(embed), dequantized("token_embd.weight"))
    # llama.cpp's Q rows, un-permuted here independently of the importer.
    q = dequantized("blk.3.attn_q.weight")
    heads = 9
    q = q.reshape(heads, q.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(q.shape)
    np.testing.assert_array_equal(ours(q_proj), q)


def test_cached_import_reuses_the_directory(
    smollm2_dir: Path, smollm2_gguf: Path, smollm2_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def no_conversion(*args: object) -> Path:
        raise AssertionError("cached_import converted again")

    monkeypatch.setattr(cache_module, "import_gguf", no_conversion)
    assert cached_import(smollm2_gguf, smollm2_cache) == smollm2_dir
    assert weights.stat().st_mtime_ns == before
    assert smollm2_dir.name == smollm2_dir.name.lower() and len(smollm2_dir.name) == 64


def test_cached_import_uses_the_hash_index(
    smollm2_dir: Path, smollm2_gguf: Path, smollm2_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(*args: object) -> object:
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(cache_module, "hashlib", SimpleNamespace(sha256=no_hashing))
    assert cached_import(smollm2_gguf, smollm2_cache) == smollm2_dir


def test_convert_cli(smollm2_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "smollm2"
    assert convert_main([str(smollm2_gguf), str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert convert_main([str(smollm2_gguf), str(out)]) == 1  # exists already
