"""Small GGUF files written with gguf.GGUFWriter, for cases the demo model does not cover.

Weights are random and stored as they would be in the GGUF (llama.cpp's layout), so a
converter and the NumPy reference each have to interpret them on their own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q

# Tensor types gguf.quants can only decode: written as random valid blocks instead.
_RAW_BLOCKS = {Q.Q4_K, Q.Q6_K}


def byte_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@dataclass
class ByteVocab:
    """A minimal byte-level BPE vocabulary: every byte, a few merges, three control tokens."""

    merges: Sequence[tuple[str, str]] = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"))
    specials: Sequence[str] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    tokens: list[str] = field(init=False)
    types: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = list(byte_unicode().values()) + [a + b for a, b in self.merges]
        self.types = [1] * len(self.tokens) + [3] * len(self.specials)
        self.tokens += list(self.specials)

    def write(self, writer: gguf.GGUFWriter, pre: str = "gpt-2") -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        writer.add_token_merges([f"{a} {b}" for a, b in self.merges])
        writer.add_bos_token_id(self.tokens.index("<|im_start|>"))
        writer.add_eos_token_id(self.tokens.index("<|im_end|>"))
        writer.add_add_bos_token(False)


@dataclass
class SpmVocab:
    """A SentencePiece vocabulary as llama.cpp's converter writes it (model "llama")."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int

    @classmethod
    def train(cls, text: str, vocab_size: int = 600) -> tuple[SpmVocab, Any]:
        """Train a small BPE SentencePiece model; returns the vocabulary and its processor.

        Normalization is off: llama.cpp does not apply SentencePiece's normalizer either.
        """
        import sentencepiece as spm

        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(text.splitlines()),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            character_coverage=1.0,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
        size = sp.get_piece_size()

        def kind(i: int) -> int:
            for check, value in ((sp.is_unknown, 2), (sp.is_control, 3), (sp.is_byte, 6)):
                if check(i):
                    return value
            return 5 if sp.is_unused(i) else 1

        vocab = cls(
            tokens=[sp.id_to_piece(i) for i in range(size)],
            scores=[sp.get_score(i) for i in range(size)],
            types=[kind(i) for i in range(size)],
            bos_id=sp.bos_id(),
            eos_id=sp.eos_id(),
            unk_id=sp.unk_id(),
        )
        return vocab, sp

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(self.tokens)
        writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        writer.add_bos_token_id(self.bos_id)
        writer.add_eos_token_id(self.eos_id)
        writer.add_unk_token_id(self.unk_id)
        writer.add_add_bos_token(True)


@dataclass
class TinyModel:
    arch: str = "llama"
    hidden: int = 64
    ffn: int = 256  # a multiple of 256 so ffn_down can hold K-quant blocks
    n_layer: int = 2
    n_head: int = 4
    n_kv: int = 2
    vocab_size: int = 264
    theta: float = 10000.0
    context_length: int = 256
    tied: bool = False
    types: dict[str, Q] = field(default_factory=dict)  # GGUF short name -> type; else F32
    rope_freqs: np.ndarray[Any, np.dtype[np.float32]] | None = None
    extra: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)  # written as is
    alignment: int | None = None  # general.alignment; the GGUF default (32) when None
    seed: int = 0

    def write(
        self, path: Path, vocab: ByteVocab | SpmVocab | None = None, *, arch: str | None = None
    ) -> Path:
        rng = np.random.default_rng(self.seed)
        writer = gguf.GGUFWriter(str(path), arch or self.arch)
        if self.alignment is not None:
            writer.add_custom_alignment(self.alignment)
        writer.add_block_count(self.n_layer)
        writer.add_context_length(self.context_length)
        writer.add_embedding_length(self.hidden)
        writer.add_feed_forward_length(self.ffn)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_kv)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_freq_base(self.theta)
        writer.add_rope_dimension_count(self.hidden // self.n_head)
        if vocab is not None:
            vocab.write(writer)
        head_dim = self.hidden // self.n_head
        shapes = {
            "token_embd": (self.vocab_size, self.hidden),
            "output_norm": (self.hidden,),
            **({} if self.tied else {"output": (self.vocab_size, self.hidden)}),
        }
        for i in range(self.n_layer):
            block = {
                "attn_norm": (self.hidden,),
                "attn_q": (self.n_head * head_dim, self.hidden),
                "attn_k": (self.n_kv * head_dim, self.hidden),
                "attn_v": (self.n_kv * head_dim, self.hidden),
                "attn_output": (self.hidden, self.n_head * head_dim),
                "ffn_norm": (self.hidden,),
                "ffn_gate": (self.ffn, self.hidden),
                "ffn_up": (self.ffn, self.hidden),
                "ffn_down": (self.hidden, self.ffn),
            }
            if self.arch == "qwen2":
                block |= {f"{p}.bias": (block[p][0],) for p in ("attn_q", "attn_k", "attn_v")}
            shapes |= {f"blk.{i}.{name}": shape for name, shape in block.items()}
        for name, shape in shapes.items():
            full = name if name.endswith(".bias") else f"{name}.weight"
            short = name.split(".")[-1] if name.startswith("blk.") else name
            kind = Q.F32 if len(shape) == 1 else self.types.get(short, Q.F32)
            _add(writer, full, shape, kind, rng)
        if self.rope_freqs is not None:
            writer.add_tensor("rope_freqs.weight", self.rope_freqs.astype(np.float32))
        for name, array in self.extra.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path


def _add(
    writer: gguf.GGUFWriter, name: str, shape: tuple[int, ...], kind: Q, rng: np.random.Generator
) -> None:
    if len(shape) == 1:
        # Norm weights near 1, biases near 0: what trained models hold.
        base = 0.0 if name.endswith(".bias") else 1.0
        writer.add_tensor(name, (base + 0.1 * rng.standard_normal(shape)).astype(np.float32))
        return
    values = (rng.standard_normal(shape) / np.sqrt(shape[-1]) * 2).astype(np.float32)
    if name == "token_embd.weight":
        values *= np.sqrt(shape[-1]) / 2  # embeddings with unit scale
    if kind == Q.F32:
        writer.add_tensor(name, values)
    elif kind == Q.F16:
        writer.add_tensor(name, values.astype(np.float16))
    elif kind in _RAW_BLOCKS:
        raw = _random_k_blocks(shape, kind, rng)
        writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=kind)
    else:
        raw = gguf.quants.quantize(values, kind)
        writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=kind)


def _random_k_blocks(shape: tuple[int, ...], kind: Q, rng: np.random.Generator) -> Any:
    """Random K-quant blocks with small, finite float16 super-block scales."""
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    rows, cols = shape
    raw = rng.integers(0, 256, size=(rows, cols // block_values, block_bytes), dtype=np.uint8)
    scale = np.full((rows, cols // block_values, 1), 0.002, dtype=np.float16).view(np.uint8)
    if kind == Q.Q4_K:  # d and dmin lead the block
        raw[..., 0:2] = scale
        raw[..., 2:4] = scale
    else:  # Q6_K: d ends the block
        raw[..., -2:] = scale
    return raw.reshape(rows, -1)
