"""Tokenizers rebuilt from GGUF metadata give llama.cpp's token ids and decode losslessly."""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
import regex
from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, SPMStreamingDetokenizer
from mlx_lm.utils import load_tokenizer
from tests.gguf.tiny_gguf import SpmVocab, TinyModel, byte_unicode
from tokenizers import Regex, pre_tokenizers

from mlx_serving.gguf import import_gguf
from mlx_serving.gguf.pretokenizers import KNOWN_NAMES, is_recognised, pre_tokenizer_for

VARIED_TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Café déjà vu, naïve façade, Ångström, Straße, ¿qué?",
    "日本語のテキストと中文，한국어 텍스트",
    "Emoji: 🚀🎉👩‍💻 and flags 🇫🇷",
    "Digits 1234567890, 3.14159, -42, 1e-9, 0x1F",
    "def add(a: int, b: int) -> int:\n\treturn a + b  # sum\r\n",
    "  leading, trailing   and\n\n\nmany   spaces   ",
    "It's, don't, we'll, I'M, you've",
    "<|im_start|>user\nHi there<|im_end|>\n",
]


# --- SmolLM2: byte-level BPE with the "smollm" pre-tokenizer -----------------------------

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"


class ReferenceBPE:
    """llama.cpp's BPE for the "smollm" pre-tokenizer, written out from its description:
    split on each digit, then on the GPT-2 regex (keeping what falls between matches),
    map bytes to GPT-2's printable characters, and merge the lowest-ranked adjacent pair
    (leftmost first) until none is ranked. Special tokens are matched whole beforehand."""

    def __init__(self, tokens: list[str], merges: list[str], specials: list[str]) -> None:
        self.ids = {token: i for i, token in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): rank for rank, m in enumerate(merges)}
        self.specials = regex.compile("|".join(map(regex.escape, specials)))
        self.bytes = byte_unicode()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        position = 0
        for match in self.specials.finditer(text):
            ids += self._encode_plain(text[position : match.start()])
            ids.append(self.ids[match.group()])
            position = match.end()
        return ids + self._encode_plain(text[position:])

    def _encode_plain(self, text: str) -> list[int]:
        pieces = [text] if text else []
        for pattern in (r"\p{N}", GPT2_SPLIT):
            pieces = [part for piece in pieces for part in _isolated_split(pattern, piece)]
        ids: list[int] = []
        for piece in pieces:
            symbols = [self.bytes[b] for b in piece.encode("utf-8")]
            while len(symbols) > 1:
                ranked = [
                    (self.ranks.get((a, b), 1 << 30), i)
                    for i, (a, b) in enumerate(zip(symbols, symbols[1:], strict=False))
                ]
                rank, i = min(ranked)
                if rank == 1 << 30:
                    break
                symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
            ids += [self.ids[s] for s in symbols]
        return ids


def _isolated_split(pattern: str, text: str) -> list[str]:
    parts, position = [], 0
    for match in regex.finditer(pattern, text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        if match.end() > match.start():
            parts.append(match.group())
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return parts


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2_gguf: Path) -> dict[str, Any]:
    _, metadata = mx.load(str(smollm2_gguf), return_metadata=True)
    return metadata


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir: Path) -> Any:
    return load_tokenizer(smollm2_dir)


@pytest.mark.slow
@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_smollm2_ids_follow_llama_cpp_bpe(
    smollm2_tokenizer: Any, smollm2_vocab: dict[str, Any], text: str
) -> None:
    tokens = smollm2_vocab["tokenizer.ggml.tokens"]
    types = smollm2_vocab["tokenizer.ggml.token_type"].tolist()
    specials = [t for t, kind in zip(tokens, types, strict=True) if kind == 3]
    reference = ReferenceBPE(tokens, smollm2_vocab["tokenizer.ggml.merges"], specials)
    assert smollm2_tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)


@pytest.mark.slow
def test_smollm2_known_ids(smollm2_tokenizer: Any) -> None:
    # Digits are single tokens ("smollm" splits \p{N} first); " " before them stays alone.
    assert smollm2_tokenizer.encode("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35]
    assert smollm2_tokenizer.encode("The capital of France is") == [504, 3575, 282, 4649, 314]


@pytest.mark.slow
@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_smollm2_round_trip(smollm2_tokenizer: Any, text: str) -> None:
    ids = smollm2_tokenizer.encode(text, add_special_tokens=False)
    assert smollm2_tokenizer.decode(ids) == text
    # What the runtime streams with: mlx-lm's byte-level streaming detokenizer.
    detokenizer = smollm2_tokenizer.detokenizer
    assert isinstance(detokenizer, BPEStreamingDetokenizer)
    detokenizer.reset()
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    # mlx-lm's streaming detokenizers drop one leading space of a generation, by design.
    assert detokenizer.text == text.removeprefix(" ")


@pytest.mark.slow
def test_smollm2_special_tokens(
    smollm2_tokenizer: Any, smollm2_vocab: dict[str, Any], smollm2_dir: Path
) -> None:
    tokens = smollm2_vocab["tokenizer.ggml.tokens"]
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert smollm2_tokenizer.convert_tokens_to_ids(special) == tokens.index(special)
        assert smollm2_tokenizer.encode(special) == [tokens.index(special)]
    eos = smollm2_vocab["tokenizer.ggml.eos_token_id"].item()
    assert smollm2_tokenizer.eos_token_ids == {eos}
    assert smollm2_tokenizer.bos_token_id == smollm2_vocab["tokenizer.ggml.bos_token_id"].item()
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is False  # tokenizer.ggml.add_bos_token
    assert config["chat_template"] == smollm2_vocab["tokenizer.chat_template"]
    prompt = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


# --- SentencePiece ("llama" tokenizer model) ---------------------------------------------


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny llama GGUF carrying a freshly trained SentencePiece vocabulary, converted."""
    import argparse

    corpus = inspect.getsource(argparse) + textwrap.dedent(
        """
        Café déjà vu, naïve façade. Über die Straße.
        The quick brown fox jumps over the lazy dog. 0123456789
        """
    )
    vocab, processor = SpmVocab.train(corpus * 2)
    root = tmp_path_factory.mktemp("spm")
    gguf_path = TinyModel(vocab_size=len(vocab.tokens)).write(root / "spm.gguf", vocab)
    return import_gguf(gguf_path, root / "converted"), processor


@pytest.mark.parametrize("text", [t for t in VARIED_TEXTS if "<|" not in t])
def test_sentencepiece_ids_match_sentencepiece(spm: tuple[Path, Any], text: str) -> None:
    model_dir, processor = spm
    tokenizer = load_tokenizer(model_dir)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == processor.encode(text)
    assert tokenizer.decode(ids) == text


def test_sentencepiece_bos_and_streaming(spm: tuple[Path, Any]) -> None:
    model_dir, processor = spm
    tokenizer = load_tokenizer(model_dir)
    text = "The quick brown fox 日本"
    ids = tokenizer.encode(text)
    assert ids[0] == processor.bos_id()  # llama.cpp adds BOS for SentencePiece vocabularies
    assert ids[1:] == processor.encode(text)
    detokenizer = tokenizer.detokenizer
    assert isinstance(detokenizer, SPMStreamingDetokenizer)
    detokenizer.reset()
    for token in ids[1:]:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == text


# --- The pre-tokenizer table ---------------------------------------------------------------


@pytest.mark.parametrize("name", KNOWN_NAMES)
def test_every_known_pre_tokenizer_compiles(name: str) -> None:
    split = pre_tokenizer_for(name)
    assert split is not None
    tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in split.regexes]
    )
    text = "Hello world's 12345 café!\n  x"
    pieces = tokenizer.pre_tokenize_str(text)
    assert "".join(piece for piece, _ in pieces) == text


def test_untranscribed_pre_tokenizer_is_refused() -> None:
    # llama.cpp knows this split but it is not transcribed: refusing beats splitting wrongly.
    assert pre_tokenizer_for("deepseek-v3") is None


def test_unrecognised_pre_tokenizer_gets_llama_cpp_default() -> None:
    # llama.cpp falls back to its default split for names it does not know; so do we.
    assert pre_tokenizer_for("no-such-pre-tokenizer") == pre_tokenizer_for(None)
    assert not is_recognised("no-such-pre-tokenizer")
    assert is_recognised("smollm") and is_recognised(None)
