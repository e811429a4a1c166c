"""config.json sizes no weights could back, loaded through the real runtime process: each
is refused with -32001 before mlx-lm builds anything, and a bystander stream runs on."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from tests.reliability.bystander import assert_bystander_unaffected, start_bystander

from mlx_serving.testing.client import RuntimeClient

CONFIG_SIZES = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
)


def config_lies(config: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """config.json with one size changed: out of range, of the wrong type, or beyond the
    weights (the layer count and vocabulary are compared with the weight headers)."""
    for key in CONFIG_SIZES:
        for value in (-5, 0, 2**31, 1e9, "wide", True):
            yield f"{key}={value!r}", {**config, key: value}
    for key in ("num_hidden_layers", "vocab_size"):
        yield f"{key}=10**9", {**config, key: 10**9}
    yield "head_dim=0", {**config, "head_dim": 0}
    yield "num_attention_heads>hidden", {**config, "num_attention_heads": 10**6}
    yield "num_key_value_heads>heads", {**config, "num_key_value_heads": 64}


def test_config_sizes_no_weights_could_back_are_refused(
    llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.loads((llama_dir / "config.json").read_text())
    model = tmp_path / "model"
    shutil.copytree(llama_dir, model)
    tried = 0
    with RuntimeClient() as client:
        stream_id = start_bystander(client, llama_dir)
        for label, changed in config_lies(config):
            (model / "config.json").write_text(json.dumps(changed))
            frame = client.request("load_model", {"model_id": "broken", "local_path": str(model)})
            assert frame.get("error", {}).get("code") == -32001, (label, frame)
            assert "config.json" in frame["error"]["message"], (label, frame)
            tried += 1
        assert_bystander_unaffected(client, stream_id)
    with capsys.disabled():
        print(f"\n[fuzz-config] {tried} config.json sizes refused with -32001; 0 hangs")
