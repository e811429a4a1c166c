"""One model's prompt KV caches on disk, as fixed-size token blocks under a chain hash.

Block i of a token sequence is named by SHA-256(model key, block i-1's name, its tokens),
so a name stands for the whole prefix up to the block's end under one model: the longest
cached prefix of a prompt is its longest run of leading blocks whose names exist. A block
holds, for every layer, the keys and values of its tokens, which is exactly what those
tokens leave in a KVCache whatever follows them; a restore concatenates the run's blocks
into fresh KVCaches.

Both sides run on the engine thread: `save` only hashes and slices (MLX views of the cache,
no copy) and hands the blocks to the store's writer thread; `restore` reads and checks the
files (a bad one ends the run there and is deleted) and builds the caches.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from .block_file import Tensors
from .identity import FORMAT_VERSION
from .store import BlockStore, BlockWrite

BLOCK_TOKENS = 256

# MLX dtype of a KV cache -> (safetensors dtype, the dtype its raw bits travel as).
_STORED = {
    mx.float32: ("F32", mx.float32),
    mx.float16: ("F16", mx.float16),
    mx.bfloat16: ("BF16", mx.uint16),
}
_LOADED = {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}


class DiskBlocks:
    def __init__(
        self,
        store: BlockStore,
        model_key: str,
        make_cache: Callable[[], list[Any]],
        block_tokens: int = BLOCK_TOKENS,
    ) -> None:
        self.store = store
        self.model_key = model_key
        self.block_tokens = block_tokens
        self._make_cache = make_cache
        # Counted on the engine thread; other threads read them without the lock (an int
        # read is atomic, and a metric one step stale is fine).
        self.hits = 0
        self.cached_tokens = 0
        self.restored_bytes = 0
        self.restore_seconds = 0.0

    def chain(self, tokens: list[int]) -> list[str]:
        """The names of the full blocks of `tokens`."""
        size = self.block_tokens
        data = np.asarray(tokens, dtype="<u4").tobytes()
        names = []
        parent = bytes(32)
        for start in range(0, len(tokens) - size + 1, size):
            digest = hashlib.sha256(bytes.fromhex(self.model_key))
            digest.update(parent)
            digest.update(data[start * 4 : (start + size) * 4])
            parent = digest.digest()
            names.append(parent.hex())
        return names

    # -- restore -------------------------------------------------------------------------------

    def restore(self, tokens: list[int], better_than: int) -> tuple[list[Any], int] | None:
        """Caches holding the longest stored prefix of `tokens` that leaves at least one
        token to feed, with its length, when that beats `better_than` tokens; else None."""
        size = self.block_tokens
        usable = (len(tokens) - 1) // size
        if usable * size <= better_than:
            return None
        names = self.chain(tokens[: usable * size])
        run = 0
        while run < usable and self.store.present(names[run]):
            run += 1
        if run * size <= better_than:
            return None
        started = time.perf_counter()
        blocks: list[Tensors] = []
        for name in names[:run]:
            block = self.store.read(name, self._expected(name))
            if block is None or (blocks and not _same_layout(blocks[0], block)):
                if block is not None:
                    self.store.discard(self.store.path_of(name), "its layout differs")
                break
            blocks.append(block)
        if len(blocks) * size <= better_than:
            return None
        cache = self._join(blocks)
        if cache is None:
            self.store.discard(self.store.path_of(names[0]), "its tensors fit no cache layer")
            return None
        self.hits += 1
        self.cached_tokens += len(blocks) * size
        self.restored_bytes += sum(a.nbytes for block in blocks for a, _ in block.values())
        self.restore_seconds += time.perf_counter() - started
        return cache, len(blocks) * size

    def _join(self, blocks: list[Tensors]) -> list[Any] | None:
        cache = self._make_cache()
        if set(blocks[0]) != {f"{kind}.{i}" for i in range(len(cache)) for kind in "kv"}:
            return None
        length = len(blocks) * self.block_tokens
        for index, layer in enumerate(cache):
            keys, values = (_joined([b[f"{kind}.{index}"] for b in blocks]) for kind in "kv")
            layer.state = (keys, values, length)
        return cache

    def _expected(self, name: str) -> dict[str, str]:
        return {
            "version": str(FORMAT_VERSION),
            "model": self.model_key,
            "block": name,
            "tokens": str(self.block_tokens),
        }

    # -- save ----------------------------------------------------------------------------------

    def save(self, tokens: list[int], cache: list[Any]) -> None:
        """Queue the full blocks of a finished cache that are not on disk yet."""
        size = self.block_tokens
        offset = cache[0].offset if cache else 0
        count = min(len(tokens), offset) // size
        if count == 0 or any(
            layer.keys is None or layer.keys.dtype not in _STORED for layer in cache
        ):
            return
        names = self.chain(tokens[: count * size])
        first = next((i for i, name in enumerate(names) if not self.store.known(name)), count)
        if first == count:
            return
        # Views of the span to write, evaluated here: the writer thread reads their memory
        # and never runs MLX. They keep the buffers alive until written.
        span = slice(first * size, count * size)
        layers = [
            (_stored(layer.keys[..., span, :]), _stored(layer.values[..., span, :]))
            for layer in cache
        ]
        mx.eval(layers)
        block_bytes = sum(k.nbytes + v.nbytes for k, v in layers) // (count - first)
        writes = [
            BlockWrite(
                block=names[i],
                model=self.model_key,
                nbytes=block_bytes,
                metadata={
                    **self._expected(names[i]),
                    "parent": names[i - 1] if i else "",
                    "layers": str(len(cache)),
                },
                tensors=_block_tensors(layers, (i - first) * size, size, cache[0].keys.dtype),
            )
            for i in range(first, count)
            if not self.store.known(names[i])
        ]
        self.store.submit(writes)


def _stored(array: mx.array) -> mx.array:
    return array.view(_STORED[array.dtype][1]) if array.dtype == mx.bfloat16 else array


def _block_tensors(
    layers: list[tuple[mx.array, mx.array]], start: int, size: int, dtype: mx.Dtype
) -> Callable[[], Tensors]:
    """Builds one block's tensors from evaluated views, with numpy only."""
    stored = _STORED[dtype][0]

    def build() -> Tensors:
        tensors: Tensors = {}
        for index, (keys, values) in enumerate(layers):
            for kind, array in (("k", keys), ("v", values)):
                rows = np.asarray(array)[:, :, start : start + size, :]
                tensors[f"{kind}.{index}"] = (np.ascontiguousarray(rows), stored)
        return tensors

    return build


def _same_layout(first: Tensors, other: Tensors) -> bool:
    return {n: (a.shape, d) for n, (a, d) in first.items()} == {
        n: (a.shape, d) for n, (a, d) in other.items()
    }


def _joined(parts: list[tuple[np.ndarray, str]]) -> mx.array:
    dtype = parts[0][1]
    array = mx.array(np.concatenate([a for a, _ in parts], axis=2))
    return array.view(mx.bfloat16) if dtype == "BF16" else array.astype(_LOADED[dtype])
