"""Files the importer cannot use fail with GGUFImportError and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from tests.gguf.crafted_gguf import lies
from tests.gguf.tiny_gguf import ByteVocab, TinyModel

import mlx_serving.gguf.convert as convert_module
from gguf import GGMLQuantizationType as Q
from mlx_serving.gguf import GGUFImportError, cached_import, import_gguf
from mlx_serving.gguf.cache import HASH_INDEX


def leftovers(cache_root: Path) -> list[str]:
    """Anything in the cache root besides the hash index: half-written output."""
    if not cache_root.exists():
        return []
    return sorted(p.name for p in cache_root.iterdir() if p.name != HASH_INDEX)


@pytest.fixture
def tiny_llama(tmp_path: Path) -> Path:
    model = TinyModel(types={"attn_q": Q.Q4_0, "ffn_up": Q.Q8_0})
    return model.write(tmp_path / "tiny.gguf", ByteVocab())


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = TinyModel().write(tmp_path / "gpt2.gguf", ByteVocab(), arch="gpt2")
    cache = tmp_path / "cache"
    with pytest.raises(
        GGUFImportError, match=r"unsupported GGUF architecture 'gpt2' \(supported: llama"
    ):
        cached_import(path, cache)
    assert leftovers(cache) == []


@pytest.mark.parametrize("keep", [0.5, 0.02], ids=["tensor-data", "metadata"])
def test_truncated_file(tiny_llama: Path, tmp_path: Path, keep: float) -> None:
    data = tiny_llama.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: int(len(data) * keep)])
    cache = tmp_path / "cache"
    with pytest.raises(GGUFImportError, match="truncated or corrupt"):
        cached_import(truncated, cache)
    assert leftovers(cache) == []


@pytest.mark.slow
def test_truncated_copy_of_the_demo_model(smollm2_gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "smollm2-truncated.gguf"
    with smollm2_gguf.open("rb") as source:
        truncated.write_bytes(source.read(40 << 20))  # cut inside the tensor data
    cache = tmp_path / "cache"
    with pytest.raises(GGUFImportError, match="truncated or corrupt.*extends past the end"):
        cached_import(truncated, cache)
    assert leftovers(cache) == []


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip archive, not a model" * 10)
    cache = tmp_path / "cache"
    with pytest.raises(GGUFImportError, match="is not a GGUF file"):
        cached_import(path, cache)
    assert leftovers(cache) == []


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFImportError, match="is not a GGUF file"):
        import_gguf(empty, tmp_path / "out")
    with pytest.raises(GGUFImportError, match="no such file"):
        cached_import(tmp_path / "missing.gguf", tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_tensor_without_counterpart(tmp_path: Path) -> None:
    """A mixture-of-experts llama has expert tensors the dense mlx-lm llama cannot hold."""
    experts = {"blk.0.ffn_gate_exps.weight": np.zeros((4, 8, 64), dtype=np.float32)}
    path = TinyModel(extra=experts).write(tmp_path / "moe.gguf", ByteVocab())
    with pytest.raises(GGUFImportError, match="'blk.0.ffn_gate_exps.weight' has no counterpart"):
        import_gguf(path, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["moe.gguf"]


def test_failure_while_writing_removes_the_partial_directory(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module.mx, "save_safetensors", disk_full)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="No space left"):
        cached_import(tiny_llama, cache)
    assert leftovers(cache) == []
    monkeypatch.undo()
    assert (cached_import(tiny_llama, cache) / "config.json").is_file()
    assert mx.load(str(cached_import(tiny_llama, cache) / "model.safetensors"))


def test_existing_output_directory_is_not_overwritten(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        import_gguf(tiny_llama, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        # Naming the tensors of 2**32 blocks used to exhaust memory before any check ran.
        ("llama.block_count", 2**32 - 1, "block_count is 4294967295, but the file holds only"),
        ("llama.attention.head_count", 0, "head_count is 0, expected 1 or more"),
        ("llama.attention.head_count", 2**32 - 1, "4294967295 attention heads for an embedding"),
        ("llama.attention.head_count_kv", 2**32 - 1, "rows, which 4294967295 heads"),
    ],
)
def test_hyperparameters_no_model_could_have(
    tiny_llama: Path, tmp_path: Path, key: str, value: int, reason: str
) -> None:
    (variant,) = [v for v in lies(tiny_llama) if v.label == f"lie:{key}={value}"]
    with pytest.raises(GGUFImportError, match=reason):
        import_gguf(variant.write(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
