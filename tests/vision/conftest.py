"""The tiny qwen2_vl test model and a runtime with it loaded beside a text model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlx_serving.testing.client import RuntimeClient


@pytest.fixture(scope="session")
def vision_dir(model_root: Path) -> Path:
    from mlx_serving.testing.make_vision_model import make_vision_model

    return make_vision_model(model_root / "qwen2_vl", seed=3)


@pytest.fixture(scope="session")
def vision_eos(vision_dir: Path) -> int:
    eos: int = json.loads((vision_dir / "config.json").read_text())["eos_token_id"]
    return eos


@pytest.fixture(scope="module")
def vision_runtime(vision_dir: Path, llama_dir: Path) -> Iterator[RuntimeClient]:
    """One runtime per module: the vision model as `vlm`, the text model as `llama`."""
    with RuntimeClient() as client:
        client.call("load_vision_model", {"model_id": "vlm", "local_path": str(vision_dir)})
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        yield client
