"""Model residency under the memory budget, driven in-process where timing must be exact:
keep-alive expiry to the tenth of a second, a model in use never expiring, one reload for
concurrent requests, and weight estimates from file headers against what a load measures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlx_serving.config import Settings
from mlx_serving.engine.engine import Engine
from mlx_serving.engine.memory.known import Eviction
from mlx_serving.engine.memory.weights import estimate_weight_bytes, measure_weight_bytes
from mlx_serving.protocol.errors import ModelNotLoaded
from mlx_serving.protocol.methods import LoadModelParams


class NullSink:
    def emit(self, notifications: object) -> None:
        pass


def _engine(budget: int | None = None, **models: object) -> Engine:
    settings = Settings()
    settings.models.memory_budget_bytes = budget
    settings.scheduler.prompt_cache_bytes = 0  # a model costs its weights alone
    for key, value in models.items():
        setattr(settings.models, key, value)
    return Engine(settings, NullSink())


@pytest.fixture
def evictions() -> list[tuple[float, Eviction]]:
    return []


@pytest.fixture
def engine(evictions: list[tuple[float, Eviction]]) -> Iterator[Engine]:
    engine = _engine()
    engine.residency.on_evicted(lambda e: evictions.append((time.monotonic(), e)))
    try:
        yield engine
    finally:
        engine.shutdown()


def _weights(model_dir: Path) -> int:
    path = model_dir / "model.safetensors"
    return path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[:8], "little")


def test_keep_alive_expires_an_unused_model_on_time(
    engine: Engine, evictions: list[tuple[float, Eviction]], llama_dir: Path
) -> None:
    params = LoadModelParams(model_id="m", local_path=str(llama_dir), keep_alive_s=0.3)
    engine.residency.load(params, "text")
    loaded = time.monotonic()
    deadline = loaded + 2
    while not evictions and time.monotonic() < deadline:
        time.sleep(0.005)
    (at, eviction), *_ = evictions
    assert 0.3 <= at - loaded < 0.4
    assert (eviction.model_id, eviction.reason) == ("m", "expired")
    assert not [m for m in engine.models]
    (state,) = engine.residency.states()
    assert state.state == "evicted" and state.keep_alive_s == 0.3


def test_a_model_in_use_does_not_expire_and_its_idle_time_starts_after(
    engine: Engine, evictions: list[tuple[float, Eviction]], llama_dir: Path
) -> None:
    params = LoadModelParams(model_id="m", local_path=str(llama_dir), keep_alive_s=0.2)
    engine.residency.load(params, "text")
    with engine.residency.in_use("m"):
        time.sleep(0.5)
        assert not evictions
    released = time.monotonic()
    time.sleep(0.5)
    (at, _), *_ = evictions
    assert 0.2 <= at - released < 0.3


def test_pinned_and_never_expiring_models_stay(
    engine: Engine, evictions: list[tuple[float, Eviction]], llama_dir: Path
) -> None:
    path = str(llama_dir)
    engine.residency.load(LoadModelParams(model_id="p", local_path=path, pin=True), "text")
    engine.residency.load(LoadModelParams(model_id="n", local_path=path, keep_alive_s=-1), "text")
    engine.residency.load(LoadModelParams(model_id="x", local_path=path, keep_alive_s=0), "text")
    time.sleep(0.3)
    assert [e.model_id for _, e in evictions] == ["x"]
    assert {m.model_id for m in engine.models} == {"p", "n"}


def test_concurrent_requests_for_an_evicted_model_load_it_once(llama_dir: Path) -> None:
    engine = _engine(budget=int(1.5 * _weights(llama_dir)))
    loads: list[str] = []
    engine.residency.reload_with(
        lambda params, kind: (loads.append(params.model_id), engine.residency.load(params, kind))
    )
    try:
        path = str(llama_dir)
        engine.residency.load(LoadModelParams(model_id="a", local_path=path), "text")
        engine.residency.load(LoadModelParams(model_id="b", local_path=path), "text")
        assert [m.model_id for m in engine.models] == ["b"]
        got: list[object] = []
        threads = [
            threading.Thread(target=lambda: got.append(engine.residency.require("a")))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert loads == ["a"]
        assert len(got) == 4 and len({id(model) for model in got}) == 1
        assert [m.model_id for m in engine.models] == ["a"]
    finally:
        engine.shutdown()


def test_without_reload_on_demand_an_evicted_model_is_not_loaded(llama_dir: Path) -> None:
    engine = _engine(budget=int(1.5 * _weights(llama_dir)), reload_on_demand=False)
    try:
        path = str(llama_dir)
        engine.residency.load(LoadModelParams(model_id="a", local_path=path), "text")
        engine.residency.load(LoadModelParams(model_id="b", local_path=path), "text")
        with pytest.raises(ModelNotLoaded, match="evicted"):
            engine.tokenize("a", "hello", True)
    finally:
        engine.shutdown()


def test_weight_estimates_from_headers_match_what_loads_measure(
    engine: Engine, llama_dir: Path, tmp_path: Path
) -> None:
    for dtype, expected_ratio in ((None, 1.0), ("float16", 0.5)):
        params = LoadModelParams(model_id="m", local_path=str(llama_dir), dtype=dtype)
        estimate = estimate_weight_bytes(params)
        engine.load(params)
        measured = measure_weight_bytes(engine.models.get("m").model)
        assert estimate == measured == _weights(llama_dir) * expected_ratio

    tiny_gguf = pytest.importorskip("tests.gguf.tiny_gguf")
    path = tiny_gguf.TinyModel().write(tmp_path / "tiny.gguf", tiny_gguf.ByteVocab())
    params = LoadModelParams(model_id="g", local_path=str(path))
    estimate = estimate_weight_bytes(params)
    engine.load(params)
    assert estimate == measure_weight_bytes(engine.models.get("g").model)
    assert estimate_weight_bytes(LoadModelParams(model_id="missing")) is None
