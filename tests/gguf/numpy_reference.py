"""An independent float32 NumPy forward pass over a raw llama/qwen2 GGUF file.

It shares nothing with the importer: weights come from `gguf.GGUFReader` and
`gguf.quants.dequantize`, and Q/K stay in llama.cpp's layout. For llama that layout is
meant for llama.cpp's "normal" RoPE, which rotates adjacent pairs (x[2i], x[2i+1]); for
qwen2 it is the NEOX RoPE, which rotates (x[i], x[i + d/2]). If the importer's
un-permutation is wrong, the two paths disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import gguf

Array = np.ndarray[Any, np.dtype[np.float32]]


class ReferenceModel:
    def __init__(self, path: Path) -> None:
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields
        self.arch = str(fields["general.architecture"].contents())

        def meta(key: str, default: Any = None) -> Any:
            field = fields.get(f"{self.arch}.{key}")
            return default if field is None else field.contents()

        self.n_layer = int(meta("block_count"))
        self.n_head = int(meta("attention.head_count"))
        self.n_kv = int(meta("attention.head_count_kv", self.n_head))
        self.eps = float(meta("attention.layer_norm_rms_epsilon"))
        self.theta = float(meta("rope.freq_base", 10000.0))
        self.w: dict[str, Array] = {
            t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            for t in reader.tensors
        }
        self.head_dim = self.w["blk.0.attn_q.weight"].shape[0] // self.n_head

    def logits(self, tokens: list[int]) -> Array:
        w = self.w
        x = w["token_embd.weight"][tokens]
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._norm(x, w[p + "attn_norm.weight"])
            x = x + self._attention(h, p) @ w[p + "attn_output.weight"].T
            h = self._norm(x, w[p + "ffn_norm.weight"])
            gate = h @ w[p + "ffn_gate.weight"].T
            up = h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        x = self._norm(x, w["output_norm.weight"])
        head = w.get("output.weight", w["token_embd.weight"])
        logits: Array = x @ head.T
        return logits

    def _norm(self, x: Array, weight: Array) -> Array:
        scale = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps)
        out: Array = x * scale * weight
        return out

    def _project(self, h: Array, name: str, heads: int) -> Array:
        out = h @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        if bias is not None:
            out = out + bias
        return out.reshape(len(h), heads, self.head_dim)

    def _rope(self, x: Array) -> Array:
        half = self.head_dim // 2
        freqs = self.theta ** (-np.arange(half, dtype=np.float64) * 2 / self.head_dim)
        if "rope_freqs.weight" in self.w:  # Llama 3 scaling factors divide the frequencies
            freqs = freqs / self.w["rope_freqs.weight"]
        angles = np.arange(len(x))[:, None] * freqs[None, :]
        cos = np.cos(angles)[:, None, :].astype(np.float32)
        sin = np.sin(angles)[:, None, :].astype(np.float32)
        out = np.empty_like(x)
        if self.arch == "qwen2":  # NEOX: first half pairs with second half
            a, b = x[..., :half], x[..., half:]
            out[..., :half], out[..., half:] = a * cos - b * sin, a * sin + b * cos
        else:  # llama.cpp "normal": adjacent pairs
            a, b = x[..., 0::2], x[..., 1::2]
            out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    def _attention(self, h: Array, prefix: str) -> Array:
        q = self._rope(self._project(h, prefix + "attn_q", self.n_head))
        k = self._rope(self._project(h, prefix + "attn_k", self.n_kv))
        v = self._project(h, prefix + "attn_v", self.n_kv)
        group = self.n_head // self.n_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.head_dim)
        length = len(h)
        scores = np.where(np.tril(np.ones((length, length), dtype=bool)), scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores = scores / scores.sum(axis=-1, keepdims=True)
        out: Array = np.einsum("hqk,khd->qhd", scores, v).reshape(length, -1)
        return out
