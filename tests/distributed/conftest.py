"""Runtimes of two ranks over loopback (the ring backend), started the way a client does:
one `python -m mlx_serving --hostfile hosts.json` that starts its peer itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_serving.testing import make_model


@pytest.fixture(scope="session")
def qwen_dir(model_root: Path) -> Path:
    """qwen2 supports both pipeline and tensor parallelism in mlx-lm 0.32."""
    return make_model(model_root / "qwen2-h128-l4", "qwen2", hidden_size=128, num_layers=4)


@pytest.fixture(scope="session")
def hostfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("group") / "hosts.json"
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    path.write_text(json.dumps({"backend": "ring", "hosts": [local, local]}))
    return path
