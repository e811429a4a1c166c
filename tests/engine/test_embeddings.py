"""Embedding pieces in-process: padding changes nothing for any test architecture, a long
text run chunk by chunk through a KV cache gives the vector of one pass, and a large
request reaches the engine thread as many small pieces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import pytest

from mlx_serving.config import SchedulerConfig, Settings
from mlx_serving.engine.embeddings import (
    Embedder,
    EmbeddingJob,
    Pooling,
    embedding_tokens,
    text_backbone,
)
from mlx_serving.engine.loader import LoadedModel, load_model
from mlx_serving.protocol.errors import GenerationError, ModelNotLoaded, NotAvailable
from mlx_serving.protocol.methods import EmbedParams, LoadModelParams
from mlx_serving.testing import make_model

T = TypeVar("T")

TEXTS = [
    "hello world",
    "a",
    "the quick brown fox jumps over the lazy dog " * 3,
    "short text",
    "padding must not change a vector",
]
POOLINGS: list[Pooling] = ["mean", "last", "cls"]


def load(path: Path, model_id: str = "m") -> LoadedModel:
    return load_model(model_id, path, context_length=None, trust_remote_code=False, draft=False)


@pytest.fixture(scope="module", params=["llama", "qwen2", "phi3", "gemma"])
def loaded(request: pytest.FixtureRequest, model_root: Path) -> LoadedModel:
    architecture: str = request.param
    return load(make_model(model_root / f"embed-{architecture}", architecture, seed=3))


def run(loaded: LoadedModel, token_lists: list[list[int]], pooling: Pooling, budget: int) -> Any:
    job = EmbeddingJob(loaded, text_backbone(loaded), token_lists, pooling)
    pieces = 0
    while not job.finished:
        job.run_piece(budget)
        pieces += 1
    return job.result(), pieces


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_changes_no_vector(loaded: LoadedModel, pooling: Pooling) -> None:
    tokens = embedding_tokens(loaded, TEXTS, [f"input[{i}]" for i in range(len(TEXTS))], False)
    batched, pieces = run(loaded, tokens, pooling, budget=4096)
    assert pieces == 1  # one padded group
    for index, text_tokens in enumerate(tokens):
        alone, _ = run(loaded, [text_tokens], pooling, budget=4096)
        np.testing.assert_allclose(alone[0], batched[index], atol=1e-4)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_long_text_in_chunks_gives_the_vector_of_one_pass(
    loaded: LoadedModel, pooling: Pooling
) -> None:
    tokens = embedding_tokens(loaded, TEXTS, ["input"] * len(TEXTS), False)
    whole, _ = run(loaded, tokens, pooling, budget=4096)
    chunked, pieces = run(loaded, tokens, pooling, budget=7)
    assert pieces > len(TEXTS)  # the long texts took several pieces each
    np.testing.assert_allclose(chunked, whole, atol=1e-4)


class CountingScheduler:
    """Runs each piece at once, on the calling thread, and counts them."""

    def __init__(self) -> None:
        self.pieces = 0
        self.active_count = 0

    def run_between_steps(self, work: Callable[[], T], timeout: float | None = None) -> T:
        self.pieces += 1
        return work()


def test_a_large_request_reaches_the_engine_thread_in_small_pieces(llama_dir: Path) -> None:
    loaded = load(llama_dir)
    texts = [f"text number {i}" for i in range(40)]
    tokens = embedding_tokens(loaded, texts, ["input"] * len(texts), False)
    scheduler = CountingScheduler()
    embedder = Embedder(scheduler, SchedulerConfig(prefill_token_budget=32))  # type: ignore[arg-type]
    vectors = embedder.embed(loaded, tokens, "mean")
    assert vectors.shape == (40, 64)
    # No piece ran more than the budget's 32 tokens.
    assert scheduler.pieces >= sum(len(t) for t in tokens) / 32 > 1


def test_a_model_unloaded_meanwhile_is_not_run(llama_dir: Path) -> None:
    loaded = load(llama_dir)
    loaded.retirement.reason = "model 'm' was unloaded"
    embedder = Embedder(CountingScheduler(), SchedulerConfig())  # type: ignore[arg-type]
    with pytest.raises(ModelNotLoaded, match="unloaded"):
        embedder.embed(loaded, [[1, 2, 3]], "mean")


def test_a_distributed_runtime_refuses_embeddings_and_does_not_advertise_them() -> None:
    from mlx_serving.handlers.embed import embed_methods, unadvertised_embed_methods

    engine = SimpleNamespace(scheduler=None, distributed_status=lambda: object())
    context = SimpleNamespace(engine=engine, settings=Settings())
    hidden = unadvertised_embed_methods(context)  # type: ignore[arg-type]
    assert hidden == ("embed", "load_embedding_model")
    loads = SimpleNamespace(load=lambda params, kind: pytest.fail("loaded"))
    methods = embed_methods(context, loads)  # type: ignore[arg-type]
    with pytest.raises(NotAvailable, match="distributed"):
        methods["embed"].handler(EmbedParams(model_id="m", input="x"))
    with pytest.raises(NotAvailable, match="distributed"):
        methods["load_embedding_model"].handler(LoadModelParams(model_id="m"))


class FailingScheduler(CountingScheduler):
    def __init__(self, refusal: Exception | None = None) -> None:
        super().__init__()
        self.refusal = refusal

    def run_between_steps(self, work: Callable[[], T], timeout: float | None = None) -> T:
        if self.refusal is not None:
            raise self.refusal
        return super().run_between_steps(work, timeout)


def test_a_failing_forward_pass_is_a_generation_error(
    llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load(llama_dir)

    def out_of_memory(self: EmbeddingJob, budget: int) -> int:
        raise RuntimeError("[metal::malloc] out of memory")

    monkeypatch.setattr(EmbeddingJob, "run_piece", out_of_memory)
    embedder = Embedder(FailingScheduler(), SchedulerConfig())  # type: ignore[arg-type]
    with pytest.raises(GenerationError, match="embedding failed: RuntimeError"):
        embedder.embed(loaded, [[1, 2, 3]], "mean")


def test_a_stopping_runtime_refuses_with_a_runtime_error(llama_dir: Path) -> None:
    loaded = load(llama_dir)
    scheduler = FailingScheduler(RuntimeError("the runtime is shutting down"))
    embedder = Embedder(scheduler, SchedulerConfig())  # type: ignore[arg-type]
    with pytest.raises(NotAvailable, match="shutting down"):
        embedder.embed(loaded, [[1, 2, 3]], "mean")
