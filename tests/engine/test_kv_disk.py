"""The prompt cache's disk tier in-process: block files, the shared folder, block chains."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import ArraysCache, CacheList, KVCache, RotatingKVCache

from mlx_serving.engine.kv_disk import block_file, store
from mlx_serving.engine.kv_disk.block_file import BadBlock, read_block, read_metadata, write_block
from mlx_serving.engine.kv_disk.blocks import DiskBlocks
from mlx_serving.engine.kv_disk.identity import FORMAT_VERSION, block_name, refusal
from mlx_serving.engine.kv_disk.store import BlockStore
from mlx_serving.engine.prompt_cache import PromptCache

KEY = "ab" * 32
BLOCK = 16


def tensors() -> block_file.Tensors:
    rows = np.arange(2 * 16 * 4, dtype=np.float32).reshape(1, 2, 16, 4)
    return {"k.0": (rows, "F32"), "v.0": (rows + 1, "F32")}


def metadata(name: str = "0" * 64) -> dict[str, str]:
    return {"version": str(FORMAT_VERSION), "model": KEY, "block": name, "tokens": "16"}


# -- block files ---------------------------------------------------------------------------------


def test_a_block_file_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "b.safetensors"
    write_block(path, tensors(), metadata())
    back = read_block(path, metadata())
    assert np.array_equal(back["v.0"][0], tensors()["v.0"][0])
    assert mx.load(str(path))["k.0"].shape == (1, 2, 16, 4)  # plain safetensors
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut
        lambda data: data[:5],  # cut inside the header length
        lambda data: data[:-4] + bytes(x ^ 0xFF for x in data[-4:]),  # bits flipped
        lambda data: data + b"\0" * 8,  # trailing bytes
        lambda data: b"{not a block at all}",
    ],
)
def test_damaged_block_files_are_refused(tmp_path: Path, damage: object) -> None:
    path = tmp_path / "b.safetensors"
    write_block(path, tensors(), metadata())
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(BadBlock):
        read_block(path, metadata())


def test_a_block_of_another_model_or_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.safetensors"
    write_block(path, tensors(), {**metadata(), "model": "cd" * 32})
    with pytest.raises(BadBlock, match="model"):
        read_block(path, metadata())
    write_block(path, tensors(), {**metadata(), "version": "0"})
    with pytest.raises(BadBlock, match="version"):
        read_block(path, metadata())


# -- the folder ----------------------------------------------------------------------------------


def block(first: int) -> store.BlockWrite:
    """A first block of 16 tokens starting at `first`, named as a chain names it."""
    token_ids = np.arange(first, first + 16, dtype="<u4").tobytes()
    name = block_name(KEY, "", token_ids)
    return store.BlockWrite(
        block=name,
        model=KEY,
        parent="",
        token_ids=token_ids,
        nbytes=1024,
        metadata={
            **metadata(name),
            "parent": "",
            "token_ids": base64.b64encode(token_ids).decode(),
        },
        tensors=tensors,
    )


def write(into: BlockStore, first: int) -> str:
    written = block(first)
    assert into.submit([written]) == 1
    assert into.drain(10)
    return written.block


def test_two_stores_on_one_folder_share_blocks_and_survive_each_others_eviction(
    tmp_path: Path,
) -> None:
    """Two runtimes pointed at one folder: what one writes the other finds by name; what
    one evicts the other misses cleanly."""
    first = BlockStore(tmp_path, 1 << 20, 1 << 20)
    second = BlockStore(tmp_path, 1 << 20, 1 << 20)
    assert second.drain(10)  # its start-up index is built, without the block
    name = write(first, 0)
    assert not second.known(name) and second.present(name)
    assert second.read(name, metadata(name)) is not None
    first.path_of(name).unlink()  # evicted by the first
    assert second.read(name, metadata(name)) is None
    first.close(1)
    second.close(1)


def test_the_start_up_index_drops_bad_files_and_leaves_others_alone(tmp_path: Path) -> None:
    writer = BlockStore(tmp_path, 1 << 20, 1 << 20)
    good, old, renamed = (write(writer, first) for first in (0, 100, 200))
    writer.close(1)
    rewrite = block(100)
    write_block(writer.path_of(old), tensors(), {**rewrite.metadata, "version": "0"})
    for name in ("4" * 64, "5" * 64):
        writer.path_of(name).parent.mkdir()
    writer.path_of(renamed).rename(writer.path_of("5" * 64))  # not the name its tokens give
    writer.path_of("4" * 64).write_bytes(b"\x08")  # cut
    unrelated = tmp_path / good[:2] / "notes.txt"
    unrelated.write_text("not ours")
    opened = BlockStore(tmp_path, 1 << 20, 1 << 20)
    assert opened.drain(10)
    assert opened.usage()[1] == 1 and opened.known(good)
    left = sorted(p.name for p in tmp_path.glob("*/*"))
    assert left == sorted([f"{good}.safetensors", "notes.txt"])
    opened.close(1)


def test_the_folder_keeps_to_its_budget_least_recently_used_first(tmp_path: Path) -> None:
    size = write_block(tmp_path / "measure", tensors(), block(0).metadata)
    (tmp_path / "measure").unlink()
    bounded = BlockStore(tmp_path, 3 * size, 1 << 20)
    names = [write(bounded, first) for first in (0, 100, 200)]
    assert bounded.read(names[0], metadata(names[0])) is not None  # used again: kept
    names += [write(bounded, first) for first in (300, 400)]
    assert bounded.usage() == (3 * size, 3)
    assert {n for n in names if bounded.path_of(n).exists()} == {names[0], names[3], names[4]}
    bounded.close(1)


def test_writes_never_wait_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stuck disk holds blocks in the queue up to its bound; past it they are dropped."""
    release = threading.Event()
    real = store.write_block

    def stuck(*args: object) -> int:
        release.wait(10)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write_block", stuck)
    bounded = BlockStore(tmp_path, 1 << 20, 2048)
    assert bounded.submit([block(0)]) and bounded.submit([block(100)])
    assert not bounded.submit([block(200)])
    assert bounded.dropped == 1
    release.set()
    assert bounded.drain(10) and bounded.usage()[1] == 2
    bounded.close(1)


# -- chains of blocks ------------------------------------------------------------------------------


def filled(length: int, dtype: mx.Dtype = mx.float32) -> list[KVCache]:
    layers = []
    for seed in range(2):
        layer = KVCache()
        layer.update_and_fetch(
            mx.random.normal((1, 2, length, 8), key=mx.random.key(seed)).astype(dtype),
            mx.random.normal((1, 2, length, 8), key=mx.random.key(seed + 9)).astype(dtype),
        )
        layers.append(layer)
    return layers


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_a_cache_restored_from_blocks_holds_exactly_the_stored_rows(
    tmp_path: Path, dtype: mx.Dtype
) -> None:
    blocks = DiskBlocks(
        BlockStore(tmp_path, 1 << 20, 1 << 20), KEY, lambda: [KVCache(), KVCache()], BLOCK
    )
    tokens = list(range(100, 150))
    cache = filled(len(tokens), dtype)
    blocks.save(tokens, cache)
    assert blocks.store.drain(10) and blocks.store.usage()[1] == 3
    restored = blocks.restore(tokens[:40] + [7, 7, 7], better_than=0)
    assert restored is not None
    layers, count = restored
    # Two whole blocks, then the rows of the third that the prompt shares.
    assert count == 40
    for mine, stored in zip(layers, cache, strict=True):
        assert mine.offset == 40 and mine.keys.dtype == dtype
        assert mx.array_equal(mine.keys, stored.keys[..., :40, :]).item()
        assert mx.array_equal(mine.values, stored.values[..., :40, :]).item()
    assert blocks.restore(tokens, better_than=48) is None  # RAM holds more
    assert blocks.restore([1] + tokens[1:], better_than=0) is None  # another prefix
    blocks.store.close(1)


def test_a_block_saved_twice_is_written_once(tmp_path: Path) -> None:
    blocks = DiskBlocks(
        BlockStore(tmp_path, 1 << 20, 1 << 20), KEY, lambda: [KVCache(), KVCache()], BLOCK
    )
    tokens = list(range(40))
    blocks.save(tokens, filled(40))
    blocks.save(tokens + [1, 2], filled(42))
    assert blocks.store.drain(10)
    assert blocks.store.model_usage(KEY).blocks_written == 2
    blocks.store.close(1)


def test_a_tail_is_reused_in_part_and_dropped_once_the_sequence_goes_on(tmp_path: Path) -> None:
    """A conversation's last, shorter block serves a prompt that leaves it midway; when a
    longer turn writes the full block that starts with it, the tail goes."""
    blocks = DiskBlocks(
        BlockStore(tmp_path, 1 << 20, 1 << 20), KEY, lambda: [KVCache(), KVCache()], BLOCK, 4
    )
    tokens = list(range(500, 560))
    cache = filled(len(tokens))
    blocks.save(tokens[:40], cache)  # two blocks and a tail of 8
    assert blocks.store.drain(10) and blocks.store.usage()[1] == 3
    restored = blocks.restore(tokens[:37] + [1, 2], better_than=0)
    assert restored is not None and restored[1] == 37
    assert mx.array_equal(restored[0][1].keys, cache[1].keys[..., :37, :]).item()
    blocks.save(tokens[:50], cache)  # the third block in full, a tail of 2 left unwritten
    assert blocks.store.drain(10) and blocks.store.usage()[1] == 3
    restored = blocks.restore(tokens[:47] + [1], better_than=0)
    assert restored is not None and restored[1] == 47
    blocks.store.close(1)


def test_a_sequence_shorter_than_a_block_stays_in_ram(tmp_path: Path) -> None:
    blocks = DiskBlocks(
        BlockStore(tmp_path, 1 << 20, 1 << 20), KEY, lambda: [KVCache(), KVCache()], BLOCK, 4
    )
    tokens = list(range(300, 300 + BLOCK))
    blocks.save(tokens[:-1], filled(BLOCK - 1))
    assert blocks.store.drain(10) and blocks.store.usage() == (0, 0)
    blocks.save(tokens, filled(BLOCK))
    assert blocks.store.drain(10) and blocks.store.usage()[1] == 1
    blocks.store.close(1)


def test_only_plain_kv_caches_persist() -> None:
    assert refusal([KVCache(), KVCache()]) is None
    assert "RotatingKVCache" in str(refusal([KVCache(), RotatingKVCache(max_size=64)]))
    assert "ArraysCache" in str(refusal([ArraysCache(2)]))
    assert "CacheList" in str(refusal([CacheList(KVCache(), ArraysCache(2))]))
    assert refusal([]) is not None


def test_metadata_of_a_file_is_read_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "b.safetensors"
    write_block(path, tensors(), metadata())
    assert read_metadata(path)["model"] == KEY


def test_a_failing_disk_tier_is_a_miss_logged_once_never_a_failed_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def restore(self, *_: object) -> None:
            raise OSError("the disk went away")

        def save(self, *_: object) -> None:
            raise RuntimeError("a bug")

    cache = PromptCache(1 << 20, 4, disk=Broken())  # type: ignore[arg-type]
    tokens = list(range(10))
    cache.store(tokens, filled(10))
    for _ in range(2):
        assert cache.fetch(tokens + [5]).cached_tokens == 10  # the RAM tier still serves
    assert caplog.text.count("the disk tier failed") == 1


def test_a_model_that_prefills_faster_than_a_restore_reads_keeps_off_the_disk(
    tmp_path: Path,
) -> None:
    def blocks(prefill_tokens_per_s: float) -> DiskBlocks:
        return DiskBlocks(
            BlockStore(tmp_path / str(prefill_tokens_per_s), 1 << 20, 1 << 20),
            KEY,
            lambda: [KVCache(), KVCache()],
            BLOCK,
            prefill_rate=lambda: prefill_tokens_per_s,
        )

    tokens = list(range(48))
    fast, slow = blocks(1e9), blocks(100.0)  # 256 bytes a token: 256 GB/s against 25.6 kB/s
    for tier in (fast, slow):
        tier.save(tokens, filled(48))
        assert tier.store.drain(10)
    assert fast.store.usage() == (0, 0) and fast.skipped == 1
    assert fast.restore(tokens + [1], better_than=0) is None and fast.skipped == 2
    assert slow.store.usage()[1] == 3 and slow.skipped == 0
    restored = slow.restore(tokens + [1], better_than=0)
    assert restored is not None and restored[1] == 48
    fast.store.close(1)
    slow.store.close(1)
