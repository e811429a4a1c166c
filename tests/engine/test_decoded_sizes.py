"""The bound detokenize checks before decoding: never below the decoded text's JSON size."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from mlx_lm.utils import load_tokenizer

from mlx_serving.engine.decoded_sizes import decoded_sizes


@pytest.fixture(scope="module")
def tokenizer(llama_dir: Path) -> Any:
    return load_tokenizer(llama_dir)


def test_the_bound_holds_for_any_sequence_of_ids(tokenizer: Any) -> None:
    sizes = decoded_sizes(tokenizer)
    assert sizes is not None
    vocab = len(tokenizer._tokenizer)
    rng = random.Random(0)
    for _ in range(300):
        tokens = [rng.randrange(vocab) for _ in range(rng.randrange(1, 60))]
        for skip in (False, True):
            text = tokenizer.decode(tokens, skip_special_tokens=skip)
            assert sizes.bound(tokens) >= len(msgspec.json.encode(text)) - 2


def test_ids_past_the_tokenizer_still_get_a_size(tokenizer: Any) -> None:
    sizes = decoded_sizes(tokenizer)
    assert sizes is not None
    assert sizes.bound([10**9, 5]) > 0
    assert sizes.bound([]) == 0


def test_measured_once_per_tokenizer(tokenizer: Any) -> None:
    assert decoded_sizes(tokenizer) is decoded_sizes(tokenizer)
