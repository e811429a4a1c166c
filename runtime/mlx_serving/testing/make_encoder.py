"""Write a small random-weight BERT directory that mlx-embeddings' own `load()` reads: a
WordPiece tokenizer over lowercase words and single characters (so every text tokenizes),
config.json and the weights mlx-embeddings' BERT class initialises. Needs mlx-embeddings
(the `embeddings` extra)."""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and of to in is it that for on with as was by this be are from or at "
    "hello world text short long embed vector model search note document quick brown fox"
).split()


def _vocab() -> dict[str, int]:
    characters = string.ascii_lowercase + string.digits + string.punctuation
    pieces = SPECIALS + WORDS + list(characters) + [f"##{c}" for c in characters]
    return {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}


def make_encoder(
    out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> Path:
    """Build in a temporary directory beside `out_dir`, then move it in place."""
    from mlx_embeddings.models import bert
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        vocab = _vocab()
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        tokenizer.save(str(staging / "tokenizer.json"))
        special = dict(zip(("pad", "unk", "cls", "sep", "mask"), SPECIALS, strict=True))
        tokenizer_config: dict[str, object] = {f"{n}_token": t for n, t in special.items()}
        tokenizer_config |= {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": 512,
        }
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
        config = {
            "model_type": "bert",
            "architectures": ["BertModel"],
            "hidden_size": hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": max(hidden_size // 32, 2),
            "intermediate_size": hidden_size * 2,
            "max_position_embeddings": 512,
            "vocab_size": len(vocab),
        }
        mx.random.seed(seed)
        args = bert.ModelArgs(**{k: v for k, v in config.items() if k != "architectures"})
        weights = dict(tree_flatten(bert.Model(args).parameters()))
        mx.save_safetensors(str(staging / "model.safetensors"), weights, {"format": "mlx"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
