"""Write a tiny random-weight qwen2_vl model directory that mlx-vlm's own `load()` reads.

It has everything a real checkpoint has (config.json with a vision_config, safetensors,
a tokenizer with Qwen2-VL's special tokens and chat template, a preprocessor_config.json
for the Qwen2-VL image processor), only small: text hidden 64 × 2 layers, a one-block
vision tower, images resized to at most 112² pixels (16 image tokens each). Weights are
re-drawn with the spread of make_model.py so that greedy decoding varies and two
different images give different tokens. Needs the `vision` extra (mlx-vlm).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from .make_model import _redraw_weights
from .tokenizer import train_tokenizer, write_tokenizer_files

VISION_TOKENS = [
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's template, reduced to what the runtime sends: string content or a list of
# text and image parts; an image part becomes the placeholder the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

PATCH_SIZE = 14
MERGE_SIZE = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112


def _config(
    hidden: int, layers: int, vocab: int, token_ids: dict[str, int], eos: int
) -> dict[str, Any]:
    heads = 2
    head_dim = hidden // heads
    # mrope splits head_dim / 2 rotary frequencies over (time, height, width).
    half = head_dim // 2
    section = [half // 4, (half - half // 4) // 2]
    section.append(half - sum(section))
    return {
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": section},
        "tie_word_embeddings": False,
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "bos_token_id": None,
        "eos_token_id": eos,
        "vision_config": {
            "model_type": "qwen2_vl",
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            # transformers 5 reads the config too and wants an int here.
            "mlp_ratio": 4,
            "in_channels": 3,
            "patch_size": PATCH_SIZE,
            "spatial_patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "temporal_patch_size": 2,
        },
    }


def _preprocessor_config() -> dict[str, Any]:
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": 2,
        "merge_size": MERGE_SIZE,
    }


def _write_tokenizer(out: Path, vocab_size: int) -> dict[str, int]:
    # Train the byte-level BPE a little smaller and append the vision tokens at its end.
    tokenizer = train_tokenizer(vocab_size - len(VISION_TOKENS))
    tokenizer.add_special_tokens(VISION_TOKENS)
    write_tokenizer_files(out, tokenizer, CHAT_TEMPLATE)
    # Its own chat_template.json, the place mlx-vlm's processors look first.
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    ids: dict[str, int] = {}
    for name in [*VISION_TOKENS, "<|im_start|>", "<|im_end|>", "<|endoftext|>"]:
        token_id = tokenizer.token_to_id(name)
        if token_id is None:
            raise RuntimeError(f"the trained tokenizer lacks {name}")
        ids[name] = token_id
    return ids


def make_vision_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
) -> Path:
    """Build in a temporary directory beside `out_dir`, then move it in place."""
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        token_ids = _write_tokenizer(staging, vocab_size)
        config = _config(hidden_size, num_layers, vocab_size, token_ids, token_ids["<|im_end|>"])
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "preprocessor_config.json").write_text(
            json.dumps(_preprocessor_config(), indent=2)
        )
        # Present so that mlx-vlm's processor loader never asks the Hub for it.
        (staging / "processor_config.json").write_text(
            json.dumps({"processor_class": "Qwen2VLProcessor"})
        )
        # The same construction as mlx_vlm.utils.load_model: from_dict fills text_config
        # from the root keys, then the module configs become their dataclasses.
        arch, _ = get_model_and_args(config)
        build_config = json.loads(json.dumps({**config, "text_config": {}}))
        model_config = arch.ModelConfig.from_dict(build_config)
        model_config = update_module_configs(model_config, arch, build_config, ["text", "vision"])
        mx.random.seed(seed)
        model = arch.Model(model_config)
        _redraw_weights(model, 1.0, seed)
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(staging / "model.safetensors"), weights, {"format": "mlx"})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random-weight qwen2_vl model.")
    parser.add_argument("out_dir")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_vision_model(
        args.out_dir,
        hidden_size=args.hidden,
        num_layers=args.layers,
        vocab_size=args.vocab,
        seed=args.seed,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
