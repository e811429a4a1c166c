"""A byte-level BPE tokenizer trained here, on text that ships with Python itself."""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML: the template most small instruct models use, and the one the demo model has.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS_MODULES = ["textwrap.py", "argparse.py", "json/__init__.py", "string.py", "this.py"]


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in _CORPUS_MODULES:
        path = stdlib / name
        if path.exists():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    # Accents, CJK and emoji so that the byte fallback and multi-byte merges are exercised.
    texts.append("Café naïve résumé — 東京 北京 上海 😀🚀 ñandú Größe 0123456789 " * 20)
    return texts


def train_tokenizer(vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def write_tokenizer(
    out_dir: Path,
    vocab_size: int,
    *,
    extra_special_tokens: Sequence[str] = (),
    chat_template: str = CHAT_TEMPLATE,
) -> Tokenizer:
    """`extra_special_tokens` (e.g. `<tool_call>`, `<think>`) take the last ids, so the
    vocabulary stays `vocab_size`."""
    tokenizer = train_tokenizer(vocab_size - len(extra_special_tokens))
    if extra_special_tokens:
        tokenizer.add_special_tokens(list(extra_special_tokens))
    write_tokenizer_files(out_dir, tokenizer, chat_template)
    return tokenizer


def write_tokenizer_files(out_dir: Path, tokenizer: Tokenizer, chat_template: str) -> None:
    """tokenizer.json and the HF config files mlx-lm's (and mlx-vlm's) loaders read."""
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "model_max_length": 4096,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
