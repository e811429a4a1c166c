"""embed through the real runtime: vectors agree alone and in a batch, with mlx-lm's own
model computed in this process, and bad input is -32602 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from mlx_serving.testing.client import RuntimeClient

TEXTS = [
    "hello world",
    "a",
    "the quick brown fox jumps over the lazy dog " * 6,
    "short text",
    "Retrieval is the other half of most local-LLM apps.",
]


@pytest.fixture(scope="module")
def runtime(llama_dir: Path) -> Iterator[RuntimeClient]:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        client.call(
            "load_model",
            {"model_id": "llama-16", "local_path": str(llama_dir), "context_length": 16},
        )
        yield client


def embed(runtime: RuntimeClient, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = runtime.call("embed", {"model_id": "llama", **params})
    return result


def error_of(runtime: RuntimeClient, params: dict[str, Any]) -> dict[str, Any]:
    response = runtime.request("embed", params)
    assert "error" in response, response
    error: dict[str, Any] = response["error"]
    return error


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_a_text_gives_the_same_vector_alone_and_in_a_batch(
    runtime: RuntimeClient, pooling: str
) -> None:
    batch = embed(runtime, input=TEXTS, pooling=pooling)["embeddings"]
    assert len(batch) == len(TEXTS)
    for text, in_batch in zip(TEXTS, batch, strict=True):
        alone = embed(runtime, input=text, pooling=pooling)["embeddings"][0]
        np.testing.assert_allclose(alone, in_batch, atol=1e-4)


def test_vectors_are_unit_length_when_normalized(runtime: RuntimeClient) -> None:
    vectors = np.array(embed(runtime, input=TEXTS)["embeddings"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    raw = np.array(embed(runtime, input=TEXTS, normalize=False)["embeddings"])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    # Normalizing is the only difference.
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, atol=1e-6)


def test_the_dimension_is_the_hidden_size(runtime: RuntimeClient, llama_dir: Path) -> None:
    import json

    hidden = json.loads((llama_dir / "config.json").read_text())["hidden_size"]
    result = embed(runtime, input=["one", "two"])
    assert result["dimensions"] == hidden
    assert [len(v) for v in result["embeddings"]] == [hidden, hidden]


def test_prompt_tokens_counts_every_texts_tokens(runtime: RuntimeClient) -> None:
    counts = [
        len(runtime.call("tokenize", {"model_id": "llama", "text": text})["tokens"])
        for text in TEXTS
    ]
    assert embed(runtime, input=TEXTS)["prompt_tokens"] == sum(counts)


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_vectors_equal_mlx_lms_model_in_this_process(
    runtime: RuntimeClient, llama_dir: Path, pooling: str
) -> None:
    from mlx_lm import load

    model, tokenizer = load(str(llama_dir))
    served = embed(runtime, input=TEXTS, pooling=pooling)["embeddings"]
    for text, vector in zip(TEXTS, served, strict=True):
        tokens = tokenizer.encode(text)
        hidden = np.array(model.model(mx.array([tokens]))[0].astype(mx.float32))
        expected = {"mean": hidden.mean(axis=0), "last": hidden[-1], "cls": hidden[0]}[pooling]
        expected = expected / np.linalg.norm(expected)
        np.testing.assert_allclose(vector, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["fine", ""]}, "input[1]"),
        ({"input": 3}, "input"),
        ({}, "input"),
        ({"input": "x", "pooling": "max"}, "pooling"),
        ({"input": "x", "model_id": ""}, "model_id"),
    ],
)
def test_bad_input_is_invalid_params_naming_the_field(
    runtime: RuntimeClient, params: dict[str, Any], field: str
) -> None:
    error = error_of(runtime, {"model_id": "llama", **params})
    assert error["code"] == -32602
    assert error["data"]["field"] == field


def test_a_text_over_the_context_length_is_refused_naming_it(runtime: RuntimeClient) -> None:
    long = "the quick brown fox jumps over the lazy dog " * 4
    error = error_of(runtime, {"model_id": "llama-16", "input": ["short", long]})
    assert error["code"] == -32602
    assert error["data"]["field"] == "input[1]"
    assert "context length is 16" in error["message"]
    single = error_of(runtime, {"model_id": "llama-16", "input": long})
    assert single["data"]["field"] == "input"


def test_truncate_embeds_the_first_context_length_tokens(runtime: RuntimeClient) -> None:
    long = "the quick brown fox jumps over the lazy dog " * 4
    tokens = runtime.call("tokenize", {"model_id": "llama", "text": long})["tokens"]
    assert len(tokens) > 16
    head = runtime.call("detokenize", {"model_id": "llama", "tokens": tokens[:16]})["text"]
    cut = runtime.call("embed", {"model_id": "llama-16", "input": long, "truncate": True})
    assert cut["prompt_tokens"] == 16
    # The same vector as the first 16 tokens on their own (if they re-encode the same).
    if runtime.call("tokenize", {"model_id": "llama", "text": head})["tokens"] == tokens[:16]:
        alone = runtime.call("embed", {"model_id": "llama-16", "input": head})
        np.testing.assert_allclose(cut["embeddings"][0], alone["embeddings"][0], atol=1e-4)


def test_input_over_max_prompt_bytes_is_refused(runtime: RuntimeClient) -> None:
    limit = runtime.call("runtime/info")["limits"]["max_prompt_bytes"]
    error = error_of(runtime, {"model_id": "llama", "input": ["x" * (limit // 2 + 1)] * 2})
    assert error["code"] == -32602
    assert error["data"]["field"] == "input"
    assert "max_prompt_bytes" in error["message"]


def test_an_unknown_model_is_not_loaded(runtime: RuntimeClient) -> None:
    assert error_of(runtime, {"model_id": "nope", "input": "x"})["code"] == -32005


def test_a_running_stream_goes_on_beside_a_large_embed(runtime: RuntimeClient) -> None:
    stream_id = runtime.call(
        "generate", {"model_id": "llama", "prompt": "hello", "max_tokens": 64, "temperature": 0}
    )["stream_id"]
    result = embed(runtime, input=[f"text number {i}" for i in range(300)])
    assert len(result["embeddings"]) == 300
    final = runtime.collect(stream_id)
    assert final["event"]["event"] == "completed", final["event"]


def test_embed_is_advertised(runtime: RuntimeClient) -> None:
    assert "embed" in runtime.call("runtime/info")["capabilities"]


def test_a_model_evicted_after_keep_alive_is_loaded_again_to_embed(
    runtime: RuntimeClient, llama_dir: Path
) -> None:
    import time

    params = {"model_id": "brief", "local_path": str(llama_dir), "keep_alive_s": 0.2}
    runtime.call("load_model", params)
    expected = runtime.call("embed", {"model_id": "brief", "input": TEXTS})["embeddings"]

    def resident() -> bool:
        models = runtime.call("runtime/state")["loaded_models"]
        return any(m["model_id"] == "brief" and m["resident"] for m in models)

    deadline = time.monotonic() + 20
    while resident() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not resident()
    again = runtime.call("embed", {"model_id": "brief", "input": TEXTS})["embeddings"]
    np.testing.assert_allclose(again, expected, atol=1e-6)
    runtime.call("unload_model", {"model_id": "brief"})
