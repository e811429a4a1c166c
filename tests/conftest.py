"""Shared fixtures: small generated models and runtime processes speaking real stdio."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlx_serving.testing import make_model
from mlx_serving.testing.client import RuntimeClient

# Runtimes started by tests keep prompt caches in RAM unless a test names a folder: the
# default one is in the user's home, and blocks shared between tests would change results.
os.environ.setdefault("MLX_SERVING_SCHEDULER__PROMPT_CACHE_DIR", "''")


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def llama_dir(model_root: Path) -> Path:
    return make_model(model_root / "llama", "llama", seed=1)


@pytest.fixture(scope="session")
def qwen2_dir(model_root: Path) -> Path:
    return make_model(model_root / "qwen2", "qwen2", seed=2)


@pytest.fixture(scope="module")
def runtime(llama_dir: Path) -> Iterator[RuntimeClient]:
    """One runtime per test module with the llama test model loaded as `llama`."""
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        yield client
