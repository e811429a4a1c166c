"""Greedy output through the runtime process equals in-process mlx-lm, token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlx_lm import load, stream_generate

from mlx_serving.testing.client import RuntimeClient

PROMPT = "def parse_args(argv):"
MAX_TOKENS = 24


def reference(model_dir: Path) -> tuple[list[int], str]:
    model, tokenizer = load(str(model_dir))
    responses = list(stream_generate(model, tokenizer, PROMPT, max_tokens=MAX_TOKENS))
    return [r.token for r in responses], "".join(r.text for r in responses)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_greedy_generation_matches_mlx_lm(
    architecture: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(f"{architecture}_dir")
    expected_tokens, expected_text = reference(model_dir)
    # A parity check on a sequence that repeats one token proves nothing.
    assert len(set(expected_tokens)) >= MAX_TOKENS // 2, expected_tokens

    with RuntimeClient() as client:
        client.call("load_model", {"model_id": architecture, "local_path": str(model_dir)})
        result = client.generate(
            {
                "model_id": architecture,
                "prompt": PROMPT,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            }
        )
    assert result["tokens"] == expected_tokens
    assert result["text"] == expected_text
    assert result["event"]["finish_reason"] == "length"
    assert result["stats"]["tokens_generated"] == MAX_TOKENS
