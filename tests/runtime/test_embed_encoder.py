"""A dedicated embedding model (BERT through mlx-embeddings, the `embeddings` extra) through
the real runtime: load_embedding_model, then embed as for a text model, padding masked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from mlx_serving.testing.client import RuntimeClient

pytest.importorskip("mlx_embeddings")

TEXTS = ["hello world", "a", "the quick brown fox " * 8, "short text, with punctuation!"]


@pytest.fixture(scope="module")
def bert_dir(model_root: Path) -> Path:
    from mlx_serving.testing.make_encoder import make_encoder

    return make_encoder(model_root / "bert", seed=4)


@pytest.fixture(scope="module")
def runtime(bert_dir: Path) -> Iterator[RuntimeClient]:
    with RuntimeClient() as client:
        loaded = client.call(
            "load_embedding_model", {"model_id": "bert", "local_path": str(bert_dir)}
        )
        assert loaded["context_length"] == 512
        yield client


def embed(runtime: RuntimeClient, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = runtime.call("embed", {"model_id": "bert", **params})
    return result


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_text_gives_the_same_vector_alone_and_in_a_batch(
    runtime: RuntimeClient, pooling: str
) -> None:
    batch = embed(runtime, input=TEXTS, pooling=pooling)
    assert batch["dimensions"] == 64
    for text, in_batch in zip(TEXTS, batch["embeddings"], strict=True):
        alone = embed(runtime, input=text, pooling=pooling)["embeddings"][0]
        np.testing.assert_allclose(alone, in_batch, atol=1e-4)
        assert abs(np.linalg.norm(in_batch) - 1) < 1e-6


def test_mean_pooling_equals_mlx_embeddings_own_text_embeds(
    runtime: RuntimeClient, bert_dir: Path
) -> None:
    from mlx_embeddings.utils import load

    model, tokenizer = load(str(bert_dir))
    served = embed(runtime, input=TEXTS)["embeddings"]
    for text, vector in zip(TEXTS, served, strict=True):
        tokens = tokenizer.encode(text)
        expected = np.array(model(mx.array([tokens])).text_embeds[0])
        np.testing.assert_allclose(vector, expected, atol=1e-4)


def test_the_dimension_is_the_hidden_size(runtime: RuntimeClient, bert_dir: Path) -> None:
    hidden = json.loads((bert_dir / "config.json").read_text())["hidden_size"]
    assert embed(runtime, input="x")["dimensions"] == hidden


def test_generation_refuses_an_embedding_model(runtime: RuntimeClient) -> None:
    response = runtime.request("generate", {"model_id": "bert", "prompt": "hello"})
    assert response["error"]["code"] == -32602
    assert response["error"]["data"]["field"] == "model_id"
    assert "embedding model" in response["error"]["message"]


def test_load_embedding_model_is_advertised(runtime: RuntimeClient) -> None:
    assert "load_embedding_model" in runtime.call("runtime/info")["capabilities"]


def test_runtime_state_lists_it_as_an_embedding_model(runtime: RuntimeClient) -> None:
    models = {m["model_id"]: m for m in runtime.call("runtime/state")["loaded_models"]}
    assert models["bert"]["type"] == "embedding"
    assert models["bert"]["resident"] and models["bert"]["bytes"] > 0
