"""config.json sizes are checked before mlx-lm builds a model, on both loading paths."""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from mlx_serving.distributed.loading import plan_shards
from mlx_serving.distributed.ops import Load
from mlx_serving.engine.config_sizes import check_config_sizes, safetensors_header
from mlx_serving.engine.loader import load_model
from mlx_serving.protocol.errors import ModelLoadError
from mlx_serving.testing import ARCHITECTURES, make_model


@pytest.fixture
def model(llama_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(llama_dir, tmp_path / "model"))


def with_config(model: Path, **changes: Any) -> Path:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **changes}))
    return model


def refusal(model: Path) -> str:
    with pytest.raises(ModelLoadError) as caught:
        check_config_sizes("m", model)
    assert caught.value.code == -32001 and caught.value.data.model_id == "m"
    return str(caught.value)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_test_models_pass(architecture: str, tmp_path: Path) -> None:
    check_config_sizes("m", make_model(tmp_path / architecture, architecture, seed=1))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_hidden_layers", -5),
        ("num_hidden_layers", 1e9),
        ("hidden_size", 0),
        ("num_attention_heads", 0),
        ("vocab_size", "wide"),
        ("max_position_embeddings", -5),
        ("max_position_embeddings", 2**31),
        ("intermediate_size", True),
        ("head_dim", 0),
    ],
)
def test_a_size_that_is_not_a_whole_positive_int32_is_refused(
    model: Path, key: str, value: Any
) -> None:
    assert f"config.json {key} is {value!r}, expected a whole number" in refusal(
        with_config(model, **{key: value})
    )


def test_null_leaves_a_size_to_the_model(model: Path) -> None:
    check_config_sizes("m", with_config(model, head_dim=None, num_key_value_heads=None))


def test_more_layers_than_the_weights_hold_is_refused_at_once(model: Path) -> None:
    started = time.monotonic()
    reason = refusal(with_config(model, num_hidden_layers=10**9))
    assert "config.json says 1000000000 layers, but the weights hold 2 layers" in reason
    assert time.monotonic() - started < 5


def test_a_vocabulary_beyond_the_embedding_is_refused(model: Path) -> None:
    reason = refusal(with_config(model, vocab_size=10**9))
    assert "vocab_size 1000000000, but the embedding model.embed_tokens.weight has 1024" in reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"num_attention_heads": 10**6}, "1000000 attention heads for a hidden size of 64"),
        ({"num_key_value_heads": 4}, "4 key/value heads, more than its 2 attention heads"),
    ],
)
def test_head_counts_that_cannot_fit(model: Path, changes: dict[str, int], reason: str) -> None:
    assert reason in refusal(with_config(model, **changes))


def test_sizes_nested_under_text_config_are_checked(model: Path) -> None:
    nested = {"text_config": {"num_hidden_layers": 10**9, "vocab_size": 1024}}
    assert "says 1000000000 layers" in refusal(with_config(model, **nested))


def test_unreadable_config_and_weight_headers_are_refused(model: Path) -> None:
    weights = model / "model.safetensors"
    names = set(safetensors_header(weights))
    assert "model.embed_tokens.weight" in names and "__metadata__" not in names
    data = bytearray(weights.read_bytes())
    struct.pack_into("<Q", data, 0, 2**40)
    weights.write_bytes(bytes(data))
    assert "model.safetensors is not a readable safetensors file: its header claims" in refusal(
        model
    )
    (model / "config.json").write_text("[1, 2]")
    assert "config.json is not a JSON object" in refusal(model)


def test_a_bad_size_is_refused_before_mlx_lm_builds_on_either_path(model: Path) -> None:
    """The plain and the distributed path both stop at the check, the distributed one
    before its lazy build (which follows the layer count as eagerly) and any collective."""
    with_config(model, num_hidden_layers=10**9)
    with pytest.raises(ModelLoadError, match="1000000000 layers"):
        load_model("m", model, context_length=None, trust_remote_code=False, draft=False)
    op = Load(model_id="m", local_path=str(model))
    with pytest.raises(ModelLoadError, match="1000000000 layers"):
        plan_shards(model, op, channel=None, cache_dir=model.parent)  # type: ignore[arg-type]


def test_a_negative_context_is_no_longer_reported(model: Path) -> None:
    with pytest.raises(ModelLoadError, match="max_position_embeddings is -5"):
        load_model(
            "m",
            with_config(model, max_position_embeddings=-5),
            context_length=None,
            trust_remote_code=False,
            draft=False,
        )
