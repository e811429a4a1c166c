"""llama.cpp's pre-tokenizer regexes, by the name GGUF stores in `tokenizer.ggml.pre`.

A byte-level BPE vocabulary only reproduces its model's token ids if text is split into
words the way it was at training time. llama.cpp keeps that split as a list of regexes
applied in turn (each one splits the pieces the previous left, keeping both matches and
gaps); a Hugging Face `Split(..., behavior="isolated")` per regex does the same.
The regexes and the name -> regex table are transcribed from llama.cpp (llama-vocab.cpp).
"""

from __future__ import annotations

from dataclasses import dataclass

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PORO = r" ?[^(\s|.,!?…。，、।۔،)]+"
# Mistral's tekken split as its tokenizer.json states it (llama.cpp runs an equivalent
# rewrite without Unicode classes its regex engine lacks).
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]
    # llama.cpp's `ignore_merges`: a word that is itself in the vocabulary is one token.
    ignore_merges: bool = False


_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))
_BY_KIND = {
    "gpt2": PreTokenizer((_GPT2,)),
    "digits+gpt2": PreTokenizer((r"\p{N}", _GPT2)),
    "llama3": PreTokenizer((_LLAMA3,), ignore_merges=True),
    "llama3-merges": PreTokenizer((_LLAMA3,)),
    "qwen2": PreTokenizer((_QWEN2,)),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]")),
    "poro": PreTokenizer((_PORO,)),
    "viking": PreTokenizer((_PORO, r"\p{N}")),
    "tekken": PreTokenizer((_TEKKEN,), ignore_merges=True),
}
_NAMES = {
    "default": None,
    **dict.fromkeys(
        (
            "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
            "lfm2",
        ),
        "llama3",
    ),
    **dict.fromkeys(("dbrx", "smaug-bpe", "chatglm-bpe", "glm4"), "llama3-merges"),
    **dict.fromkeys(
        (
            "gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "gigachat", "a.x-4.0",
            "mellum", "exaone4", "trillion", "granite-docling",
            "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code",
        ),
        "gpt2",
    ),
    **dict.fromkeys(
        ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"),
        "digits+gpt2",
    ),
    **dict.fromkeys(
        ("qwen2", "stablelm2", "megrez", "deepseek-r1-qwen", "kormo", "f2llmv2"), "qwen2"
    ),
    "falcon": "falcon",
    **dict.fromkeys(("poro-chat", "bloom", "gpt3-finnish"), "poro"),
    "viking": "viking",
    "tekken": "tekken",
}  # fmt: skip
# Names llama.cpp splits in ways not transcribed here: refused rather than split wrongly.
NOT_TRANSCRIBED = frozenset(
    (
        "deepseek-llm", "deepseek-coder", "deepseek-v3", "chameleon", "gpt-4o", "llama4",
        "superbpe", "bailingmoe", "bailingmoe2", "llada-moe", "seed-coder", "hunyuan",
        "hunyuan-dense", "kimi-k2", "grok-2", "afmoe", "minimax-m2", "qwen35",
    )
)  # fmt: skip

KNOWN_NAMES = tuple(sorted(_NAMES))


def is_recognised(name: str | None) -> bool:
    """Whether llama.cpp has a split for this name (a missing name means its default)."""
    return name is None or name in _NAMES or name in NOT_TRANSCRIBED


def pre_tokenizer_for(name: str | None) -> PreTokenizer | None:
    """The split for a `tokenizer.ggml.pre` name, None if not transcribed here.

    A name llama.cpp does not recognise gets its default split, as in llama.cpp.
    """
    if name in NOT_TRANSCRIBED:
        return None
    kind = _NAMES.get(name) if name is not None else None
    return _DEFAULT if kind is None else _BY_KIND[kind]
