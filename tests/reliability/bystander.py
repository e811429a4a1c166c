"""A model streaming beside a test's faults: its stream must end as if nothing happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_serving.testing.client import RuntimeClient

BYSTANDER_TOKENS = 2000


def start_bystander(client: RuntimeClient, llama_dir: Path) -> str:
    client.call("load_model", {"model_id": "good", "local_path": str(llama_dir)})
    params: dict[str, Any] = {
        "model_id": "good",
        "prompt": "x",
        "max_tokens": BYSTANDER_TOKENS,
        "temperature": 0,
        "logit_bias": {"2": -100},  # no end-of-sequence: the stream runs its full length
    }
    stream_id: str = client.call("generate", params)["stream_id"]
    return stream_id


def assert_bystander_unaffected(client: RuntimeClient, stream_id: str) -> None:
    result = client.collect(stream_id)
    assert result["event"]["finish_reason"] == "length"
    assert len(result["chunks"]) == BYSTANDER_TOKENS
    state = client.call("runtime/state")
    assert [m["model_id"] for m in state["loaded_models"]] == ["good"]
    assert client.process.poll() is None
