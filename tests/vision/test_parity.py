"""Greedy tokens through generate_with_image equal in-process mlx_vlm.stream_generate for
the same model, prompt and image; two images that differ give different tokens, so the
image is proved to reach the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from mlx_vlm import apply_chat_template, load, stream_generate  # noqa: E402
from tests.vision.images import data_uri, flat_png, noise_png  # noqa: E402

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

PROMPT = "Describe the image."
MAX_TOKENS = 24


def reference(model_dir: Path, images: list[str]) -> tuple[list[int], str]:
    model, processor = load(str(model_dir))
    prompt = apply_chat_template(processor, model.config, PROMPT, num_images=len(images))
    results = list(
        stream_generate(
            model, processor, prompt, image=images, max_tokens=MAX_TOKENS, temperature=0.0
        )
    )
    # The last result closes the stream: it repeats the last token and holds the text tail.
    return results[-1].token_ids, "".join(r.text for r in results)


def generated(result: dict[str, Any]) -> list[int]:
    """The generated ids: a final chunk may resend the last id with the text's tail."""
    tokens: list[int] = result["tokens"][: result["stats"]["tokens_generated"]]
    return tokens


def test_greedy_tokens_match_mlx_vlm_for_two_images(
    vision_runtime: RuntimeClient, vision_dir: Path
) -> None:
    outputs = []
    for image in (data_uri(noise_png()), data_uri(flat_png())):
        expected_tokens, expected_text = reference(vision_dir, [image])
        # A parity check on a sequence that repeats one token proves nothing.
        assert len(set(expected_tokens)) >= MAX_TOKENS // 2, expected_tokens
        stream_id = vision_runtime.call(
            "generate_with_image",
            {
                "model_id": "vlm",
                "prompt": PROMPT,
                "image": image,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "stream_id": f"vision-{len(outputs)}",  # the compat client's id shape
            },
        )["stream_id"]
        result = vision_runtime.collect(stream_id)
        assert generated(result) == expected_tokens
        assert result["text"] == expected_text
        assert result["event"]["finish_reason"] == "length"
        assert result["stats"]["tokens_generated"] == MAX_TOKENS
        outputs.append(expected_tokens)
    assert outputs[0] != outputs[1]


def test_two_images_in_one_request_match_mlx_vlm(
    vision_runtime: RuntimeClient, vision_dir: Path
) -> None:
    images = [data_uri(noise_png()), data_uri(flat_png())]
    expected_tokens, expected_text = reference(vision_dir, images)
    result = vision_runtime.collect(
        vision_runtime.call(
            "generate_with_image",
            {
                "model_id": "vlm",
                "prompt": PROMPT,
                "image": images[0],
                "images": images[1:],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            },
        )["stream_id"]
    )
    assert generated(result) == expected_tokens
    assert result["text"] == expected_text
    # Both images are in the prompt: more prompt tokens than with either alone.
    single = vision_runtime.collect(
        vision_runtime.call(
            "generate_with_image",
            {"model_id": "vlm", "prompt": PROMPT, "image": images[0], "max_tokens": 1},
        )["stream_id"]
    )
    assert result["stats"]["prompt_tokens"] > single["stats"]["prompt_tokens"]
    swapped = vision_runtime.collect(
        vision_runtime.call(
            "generate_with_image",
            {
                "model_id": "vlm",
                "prompt": PROMPT,
                "images": images[::-1],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            },
        )["stream_id"]
    )
    assert generated(swapped) == reference(vision_dir, images[::-1])[0]
