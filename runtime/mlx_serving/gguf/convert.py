"""One GGUF file -> one mlx-lm model directory, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .architectures import arch_spec
from .config import model_config
from .errors import GGUFImportError
from .hparams import read_hparams
from .reader import QuantizedTensor, read_gguf
from .rope import rope_scaling_config
from .tokenizer import read_vocabulary, write_tokenizer
from .weights import ROPE_FREQS, convert_weights

# Bump when the output for the same GGUF file changes, so cached conversions are redone.
CONVERTER_VERSION = 1
PROVENANCE_FILE = "gguf_import.json"
# Scales, biases and norms are stored as float32: GGUF's float16 block scales widen
# exactly, dequantized values then equal llama.cpp's, and MLX's CPU backend computes in
# the scales' dtype: SmolLM2-135M Q4_1 decoded at 10.3 tok/s with float32 scales and
# 0.3 tok/s with float16 ones on a 2-core x86 CPU.
FLOAT_DTYPE = mx.float32


def import_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert `gguf_path` into a new mlx-lm model directory `out_dir` and return it.

    The output appears whole or not at all: it is written into a temporary directory beside
    `out_dir` and renamed into place. Raises GGUFImportError for a file that cannot be
    converted and FileExistsError if `out_dir` already exists.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    try:
        _convert_into(gguf_path, staging)
        try:
            os.rename(staging, out_dir)
        except OSError as exc:  # another writer got there first
            raise FileExistsError(f"{out_dir} appeared while converting") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _convert_into(gguf_path: Path, out_dir: Path) -> None:
    contents = read_gguf(gguf_path)
    spec = arch_spec(contents.architecture)
    hparams = read_hparams(contents, spec)
    vocab = read_vocabulary(gguf_path, contents.metadata)
    rope_scaling = rope_scaling_config(gguf_path, hparams, _rope_freqs(contents.tensors))
    weights = convert_weights(contents, spec, hparams, FLOAT_DTYPE)
    if len(vocab.tokens) > weights.vocab_size:
        raise GGUFImportError(
            f"{gguf_path}: {len(vocab.tokens)} tokens but an embedding of {weights.vocab_size} rows"
        )
    write_tokenizer(gguf_path, vocab, hparams.context_length, out_dir)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights.arrays, {"format": "mlx"})
    config = model_config(spec, hparams, weights, rope_scaling, vocab.stop_ids)
    _write_json(out_dir / "config.json", config)
    _write_json(
        out_dir / PROVENANCE_FILE,
        {
            "source": str(gguf_path),
            "source_bytes": gguf_path.stat().st_size,
            "gguf_architecture": spec.gguf_arch,
            "converter_version": CONVERTER_VERSION,
        },
    )


def _rope_freqs(tensors: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    tensor = tensors.get(ROPE_FREQS)
    if tensor is None or isinstance(tensor, QuantizedTensor):
        return None
    return np.array(tensor.astype(mx.float32))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")
