"""tokenizer.json + tokenizer_config.json rebuilt from a GGUF file's `tokenizer.*` metadata.

Two llama.cpp vocabulary kinds are rebuilt with the `tokenizers` library so that token ids
match llama.cpp's:
- "gpt2": byte-level BPE with explicit merges, split into words by the regexes that
  `tokenizer.ggml.pre` names (see pretokenizers.py);
- "llama": SentencePiece BPE. GGUF keeps the pieces and their scores but no merges; the
  merges are recovered by ranking every split of a piece into two pieces by the score of
  the whole, which is the order llama.cpp's SPM tokenizer merges in. Characters outside
  the vocabulary fall back to <0xNN> byte tokens, and a space is prefixed to text (and to
  text following a special token), as llama.cpp does.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE

from .errors import GGUFImportError
from .pretokenizers import KNOWN_NAMES, is_recognised, pre_tokenizer_for
from .reader import MetadataValue

# llama.cpp's token types (tokenizer.ggml.token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_SPACE = "\u2581"  # SentencePiece's visible space


@dataclass(frozen=True)
class Vocabulary:
    model: str  # tokenizer.ggml.model
    tokens: list[str]
    token_types: list[int]
    scores: list[float]
    merges: list[str] | None
    pre: str | None
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    stop_ids: list[int]  # eos, eot and eom: ids that end a turn
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None


def read_vocabulary(path: Path, meta: dict[str, MetadataValue]) -> Vocabulary:
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(model, str) or not isinstance(tokens, list):
        raise GGUFImportError(f"{path}: the GGUF metadata holds no tokenizer")
    if model not in ("gpt2", "llama"):
        raise GGUFImportError(
            f"{path}: unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)"
        )
    count = len(tokens)
    token_types = [int(t) for t in _per_token(path, meta, "token_type", count, _NORMAL)]
    scores = [float(s) for s in _per_token(path, meta, "scores", count, 0.0)]
    merges = meta.get("tokenizer.ggml.merges")
    if model == "gpt2" and not isinstance(merges, list):
        raise GGUFImportError(f"{path}: a gpt2 (BPE) tokenizer without tokenizer.ggml.merges")

    def token_id(key: str) -> int | None:
        value = meta.get(f"tokenizer.ggml.{key}")
        # Some converters write -1 (as uint32: 2**32 - 1) for "none".
        return value if isinstance(value, int) and 0 <= value < count else None

    def flag(key: str, default: bool) -> bool:
        value = meta.get(f"tokenizer.ggml.{key}", default)
        return bool(value)

    stops = (token_id(key) for key in ("eos_token_id", "eot_token_id", "eom_token_id"))
    stop_ids = [index for index in stops if index is not None]
    pre = meta.get("tokenizer.ggml.pre")
    template = meta.get("tokenizer.chat_template")
    is_spm = model == "llama"
    return Vocabulary(
        model=model,
        tokens=[str(t) for t in tokens],
        token_types=token_types,
        scores=scores,
        merges=[str(m) for m in merges] if isinstance(merges, list) else None,
        pre=pre if isinstance(pre, str) else None,
        bos_id=token_id("bos_token_id"),
        eos_id=token_id("eos_token_id"),
        unk_id=token_id("unknown_token_id"),
        pad_id=token_id("padding_token_id"),
        stop_ids=list(dict.fromkeys(stop_ids)),
        # llama.cpp's defaults: SentencePiece vocabularies add BOS and a space prefix.
        add_bos=flag("add_bos_token", is_spm),
        add_eos=flag("add_eos_token", False),
        add_space_prefix=flag("add_space_prefix", is_spm),
        chat_template=template if isinstance(template, str) else None,
    )


def _per_token(
    path: Path, meta: dict[str, MetadataValue], key: str, count: int, default: float
) -> list[float]:
    """A numeric per-token array (types, scores), checked to cover every token."""
    values = meta.get(f"tokenizer.ggml.{key}", [default] * count)
    if not isinstance(values, list) or len(values) != count:
        raise GGUFImportError(f"{path}: tokenizer.ggml.{key} does not list every token")
    numbers = [value for value in values if isinstance(value, (int, float))]
    if len(numbers) != count:
        raise GGUFImportError(f"{path}: tokenizer.ggml.{key} holds non-numbers")
    return numbers


def build_tokenizer(path: Path, vocab: Vocabulary) -> Tokenizer:
    tokenizer = _byte_level_bpe(path, vocab) if vocab.model == "gpt2" else _sentencepiece(vocab)
    _add_special_tokens(tokenizer, vocab)
    tokenizer.post_processor = _post_processor(vocab)
    return tokenizer


def tokenizer_config(vocab: Vocabulary, context_length: int) -> dict[str, Any]:
    """tokenizer_config.json for transformers' PreTrainedTokenizerFast (what mlx-lm loads)."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        # Cleaning would turn " ." into "." on decode: llama.cpp does not, and a decode
        # that does not reproduce the text breaks streaming detokenization.
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
    }
    for role, token_id in (
        ("bos_token", vocab.bos_id),
        ("eos_token", vocab.eos_id),
        ("unk_token", vocab.unk_id),
        ("pad_token", vocab.pad_id),
    ):
        if token_id is not None:
            config[role] = vocab.tokens[token_id]
    if vocab.chat_template is not None:
        config["chat_template"] = vocab.chat_template
    return config


def write_tokenizer(path: Path, vocab: Vocabulary, context_length: int, out_dir: Path) -> None:
    build_tokenizer(path, vocab).save(str(out_dir / "tokenizer.json"))
    config = tokenizer_config(vocab, context_length)
    with (out_dir / "tokenizer_config.json").open("w", encoding="utf-8") as stream:
        json.dump(config, stream, indent=2, ensure_ascii=False)


def _token_ids(vocab: Vocabulary) -> dict[str, int]:
    # Later duplicates win, as in llama.cpp's token_to_id.
    return {token: index for index, token in enumerate(vocab.tokens)}


def _byte_level_bpe(path: Path, vocab: Vocabulary) -> Tokenizer:
    split = pre_tokenizer_for(vocab.pre)
    if split is None:
        raise GGUFImportError(
            f"{path}: pre-tokenizer {vocab.pre!r} (tokenizer.ggml.pre) is not supported "
            f"(supported: {', '.join(KNOWN_NAMES)})"
        )
    if not is_recognised(vocab.pre):
        warnings.warn(
            f"{path}: unrecognised pre-tokenizer {vocab.pre!r}; splitting words with "
            "llama.cpp's default regexes, as llama.cpp itself does",
            stacklevel=2,
        )
    merges = []
    for merge in vocab.merges or []:
        # llama.cpp splits at the first space after the first character.
        cut = merge.find(" ", 1)
        if cut < 0:
            raise GGUFImportError(f"{path}: malformed merge {merge!r} in tokenizer.ggml.merges")
        merges.append((merge[:cut], merge[cut + 1 :]))
    tokenizer = Tokenizer(
        BPE(_token_ids(vocab), merges, ignore_merges=split.ignore_merges, fuse_unk=False)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in split.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece(vocab: Vocabulary) -> Tokenizer:
    ids = _token_ids(vocab)
    mergeable = {
        token
        for token, kind in zip(vocab.tokens, vocab.token_types, strict=True)
        if kind in (_NORMAL, _USER_DEFINED)
    }
    ranked: list[tuple[float, int, str, str]] = []
    for token, index in ids.items():
        if token not in mergeable:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-vocab.scores[index], index, left, right))
    ranked.sort()
    unk = vocab.tokens[vocab.unk_id] if vocab.unk_id is not None else None
    tokenizer = Tokenizer(
        BPE(
            ids,
            [(left, right) for _, _, left, right in ranked],
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    steps: list[normalizers.Normalizer] = []
    if vocab.add_space_prefix:
        steps.append(normalizers.Prepend(_SPACE))
    steps.append(normalizers.Replace(" ", _SPACE))
    tokenizer.normalizer = normalizers.Sequence(steps)
    # This exact decoder sequence is what mlx-lm recognises for its fast SPM detokenizer.
    parts = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        parts.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(parts)
    return tokenizer


def _add_special_tokens(tokenizer: Tokenizer, vocab: Vocabulary) -> None:
    """Control tokens are special (kept whole, skipped when decoding special-less); user
    defined ones are kept whole but decode as text, matching llama.cpp's treatment."""
    special, plain = [], []
    for token, kind in zip(vocab.tokens, vocab.token_types, strict=True):
        if kind == _CONTROL or (kind == _UNKNOWN and vocab.model == "llama"):
            special.append(AddedToken(token, special=True, normalized=False))
        elif kind == _USER_DEFINED:
            plain.append(AddedToken(token, special=False, normalized=False))
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(plain)


def _post_processor(vocab: Vocabulary) -> processors.PostProcessor | None:
    prefix = [vocab.tokens[vocab.bos_id]] if vocab.add_bos and vocab.bos_id is not None else []
    suffix = [vocab.tokens[vocab.eos_id]] if vocab.add_eos and vocab.eos_id is not None else []
    if not prefix and not suffix:
        return processors.ByteLevel(trim_offsets=False) if vocab.model == "gpt2" else None
    specials = [(token, _token_ids(vocab)[token]) for token in dict.fromkeys(prefix + suffix)]
    single = " ".join([*prefix, "$A", *suffix])
    second = [f"{token}:1" for token in prefix] + ["$B:1"] + [f"{token}:1" for token in suffix]
    pair = " ".join([*prefix, "$A", *suffix, *second])
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
