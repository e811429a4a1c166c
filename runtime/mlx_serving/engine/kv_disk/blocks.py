"""One model's prompt KV caches on disk, as token blocks under a chain hash.

A stored sequence is cut into full blocks of BLOCK_TOKENS and a shorter tail. Each block is
named by SHA-256(model key, the previous block's name, its tokens), so a name stands for the
whole prefix up to the block's end under one model. A block holds, for every layer, the
keys and values of its tokens, which is exactly what those tokens leave in a KVCache
whatever follows them; so the rows of a block's first n tokens are also valid for any
prompt that shares only those n.

A prompt's cached prefix is therefore its longest run of leading full blocks whose names
exist, then, among the blocks stored after that run (another continuation's full block or
tail), the one sharing the most tokens with the prompt's next ones, cut there. A restore
concatenates those rows into fresh KVCaches. Without the partial block a prompt would
prefill up to 255 tokens again, and on the CPU each of them attends to the whole prefix.

Both sides run on the engine thread: `save` only hashes and slices (MLX views of the cache,
no copy) and hands the blocks to the store's writer thread; `restore` reads and checks the
files (a bad one ends the run there and is deleted) and builds the caches.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from .block_file import Tensors
from .identity import FORMAT_VERSION, block_name
from .store import BlockStore, BlockWrite

BLOCK_TOKENS = 256
# A shorter tail is not worth a file: prefilling it again costs little.
MIN_TAIL_TOKENS = 32
# Reading a prefix back must beat prefilling it by this much, or it is neither read nor
# written: on a fast GPU a small model prefills faster than a restore reads its KV (an
# H200 prefills a 1B model's 4,000 tokens in ~70 ms; restoring their 256 MB took 0.54 s).
MIN_SPEEDUP = 2.0
# What a restore reads and rebuilds per second until one is timed (0.4-0.5 GB/s measured
# on this project's 2-core CPU host and on an H200 host).
ASSUMED_RESTORE_BYTES_PER_S = 400e6
# How long a restore waits for the folder's start-up index (once: it is built by then).
INDEX_WAIT_S = 2.0
# Restores smaller than this are timed for the metrics but not for the rate: opening and
# parsing files dominates them, and they would make every restore look slow.
RATE_SAMPLE_BYTES = 4 << 20

# MLX dtype of a KV cache -> (safetensors dtype, the dtype its raw bits travel as).
_STORED = {
    mx.float32: ("F32", mx.float32),
    mx.float16: ("F16", mx.float16),
    mx.bfloat16: ("BF16", mx.uint16),
}


@dataclass(frozen=True)
class _Block:
    name: str
    parent: str
    token_ids: bytes  # little-endian uint32
    use: int  # how many of its rows the prompt shares


class DiskBlocks:
    def __init__(
        self,
        store: BlockStore,
        model_key: str,
        make_cache: Callable[[], list[Any]],
        block_tokens: int = BLOCK_TOKENS,
        min_tail: int = MIN_TAIL_TOKENS,
        prefill_rate: Callable[[], float | None] = lambda: None,
    ) -> None:
        """`prefill_rate`: the model's measured prefill tokens per second, None before
        one was measured (the lane's StepBudget)."""
        self.store = store
        self.model_key = model_key
        self.block_tokens = block_tokens
        self._min_tail = min_tail
        self._make_cache = make_cache
        self._prefill_rate = prefill_rate
        self._bytes_per_token = 0.0  # of this model's KV, known from the first save
        # Counted on the engine thread; other threads read them without the lock (an int
        # read is atomic, and a metric one step stale is fine).
        self.hits = 0
        self.cached_tokens = 0
        self.restored_bytes = 0
        self.restore_seconds = 0.0
        self.save_seconds = 0.0  # on the engine thread: hashing, slicing, handing over
        self.skipped = 0  # restores and saves left out: prefilling is faster here
        self._timed_bytes = 0  # restores of RATE_SAMPLE_BYTES or more, for the rate
        self._timed_seconds = 0.0

    def cut(self, tokens: list[int], tail: bool) -> list[_Block]:
        """The full blocks of `tokens`, and (`tail`) the rest as one shorter block."""
        size = self.block_tokens
        data = np.asarray(tokens, dtype="<u4").tobytes()
        blocks: list[_Block] = []
        parent = ""
        for start in range(0, len(tokens), size):
            count = min(size, len(tokens) - start)
            if count < size and not tail:
                break
            ids = data[start * 4 : (start + count) * 4]
            blocks.append(_Block(block_name(self.model_key, parent, ids), parent, ids, count))
            parent = blocks[-1].name
        return blocks

    # -- restore -------------------------------------------------------------------------------

    def restore(self, tokens: list[int], better_than: int) -> tuple[list[Any], int] | None:
        """Caches holding the longest stored prefix of `tokens` that leaves at least one
        token to feed, with its length, when that beats `better_than` tokens; else None."""
        usable = tokens[: len(tokens) - 1]
        if len(usable) <= better_than:
            return None
        if not self.worth_it():
            self.skipped += 1
            return None
        run = self._run(usable)
        if sum(block.use for block in run) <= better_than:
            return None
        started = time.perf_counter()
        parts: list[Tensors] = []
        for block in run:
            part = self.store.read(block.name, self._expected(block))
            if part is None:
                break
            rows = len(block.token_ids) // 4
            if any(a.ndim != 4 or a.shape[2] != rows for a, _ in part.values()) or (
                parts and not _same_layout(parts[0], part)
            ):
                self.store.discard(self.store.path_of(block.name), "its tensors fit no cache")
                break
            parts.append(part)
        length = sum(block.use for block in run[: len(parts)])
        if length <= better_than:
            return None
        cache = self._join(parts, [block.use for block in run[: len(parts)]])
        if cache is None:
            self.store.discard(self.store.path_of(run[0].name), "its tensors fit no cache")
            return None
        read = sum(a.nbytes for part in parts for a, _ in part.values())
        seconds = time.perf_counter() - started
        self.hits += 1
        self.cached_tokens += length
        self.restored_bytes += read
        self.restore_seconds += seconds
        if read >= RATE_SAMPLE_BYTES:
            self._timed_bytes += read
            self._timed_seconds += seconds
        return cache, length

    def worth_it(self) -> bool:
        """Whether reading KV back beats prefilling it on this machine, by MIN_SPEEDUP."""
        rate = self._prefill_rate()
        if rate is None or not self._bytes_per_token:
            return True
        if self._timed_seconds > 0:
            restore = self._timed_bytes / self._timed_seconds
        else:
            restore = ASSUMED_RESTORE_BYTES_PER_S
        return rate * self._bytes_per_token * MIN_SPEEDUP < restore

    def _run(self, tokens: list[int]) -> list[_Block]:
        """The blocks to read: the leading full blocks on disk, then the best partial."""
        self.store.wait_indexed(INDEX_WAIT_S)
        full = self.cut(tokens, tail=False)
        run: list[_Block] = []
        for block in full:
            if not self.store.present(block.name):
                break
            run.append(block)
        rest = np.asarray(tokens[len(run) * self.block_tokens :], dtype="<u4")
        best: _Block | None = None
        parent = run[-1].name if run else ""
        for name, ids in self.store.children(self.model_key, parent):
            stored = np.frombuffer(ids, dtype="<u4")
            count = min(len(stored), len(rest))
            differs = np.flatnonzero(stored[:count] != rest[:count])
            shared = int(differs[0]) if len(differs) else count
            if shared > (best.use if best else 0):
                best = _Block(name, parent, ids, shared)
        return run + [best] if best is not None else run

    def _join(self, parts: list[Tensors], uses: list[int]) -> list[Any] | None:
        cache = self._make_cache()
        if set(parts[0]) != {f"{kind}.{i}" for i in range(len(cache)) for kind in "kv"}:
            return None
        for index, layer in enumerate(cache):
            keys, values = (
                _joined([part[f"{kind}.{index}"] for part in parts], uses) for kind in "kv"
            )
            layer.state = (keys, values, sum(uses))
        return cache

    def _expected(self, block: _Block) -> dict[str, str]:
        return {
            "version": str(FORMAT_VERSION),
            "model": self.model_key,
            "block": block.name,
            "tokens": str(len(block.token_ids) // 4),
        }

    # -- save ----------------------------------------------------------------------------------

    def save(self, tokens: list[int], cache: list[Any]) -> None:
        """Queue the blocks of a finished cache that are not on disk yet."""
        started = time.perf_counter()
        try:
            self._save(tokens, cache)
        finally:
            self.save_seconds += time.perf_counter() - started

    def _save(self, tokens: list[int], cache: list[Any]) -> None:
        offset = cache[0].offset if cache else 0
        held = tokens[: min(len(tokens), offset)]
        # Without a full block a sequence stays in RAM: prefilling it again after a restart
        # costs less than one block, and a burst of short chats would otherwise write a
        # file per stream.
        if len(held) < self.block_tokens or any(
            layer.keys is None or layer.keys.dtype not in _STORED for layer in cache
        ):
            return
        self._bytes_per_token = sum(
            (layer.keys.nbytes + layer.values.nbytes) / layer.keys.shape[2] for layer in cache
        )
        if not self.worth_it():
            self.skipped += 1
            return
        blocks = self.cut(held, tail=len(held) % self.block_tokens >= self._min_tail)
        first = next((i for i, b in enumerate(blocks) if not self.store.known(b.name)), None)
        if first is None:
            return
        # Views of the span to write, evaluated here: the writer thread reads their memory
        # and never runs MLX. They keep the buffers alive until written.
        start = first * self.block_tokens
        span = slice(start, start + sum(b.use for b in blocks[first:]))
        layers = [
            (_raw(layer.keys[..., span, :]), _raw(layer.values[..., span, :])) for layer in cache
        ]
        mx.eval(layers)
        per_token = sum(k.nbytes + v.nbytes for k, v in layers) // (span.stop - span.start)
        dtype = _STORED[cache[0].keys.dtype][0]
        writes = [
            BlockWrite(
                block=block.name,
                model=self.model_key,
                parent=block.parent,
                token_ids=block.token_ids,
                nbytes=per_token * block.use,
                metadata={
                    **self._expected(block),
                    "parent": block.parent,
                    "token_ids": base64.b64encode(block.token_ids).decode(),
                    "layers": str(len(cache)),
                },
                tensors=_block_tensors(layers, (i - first) * self.block_tokens, block.use, dtype),
            )
            for i, block in enumerate(blocks)
            if i >= first and not self.store.known(block.name)
        ]
        self.store.submit(writes)


def _raw(array: mx.array) -> mx.array:
    """bfloat16 as its bits: numpy has no bfloat16."""
    return array.view(mx.uint16) if array.dtype == mx.bfloat16 else array


def _block_tensors(
    layers: list[tuple[mx.array, mx.array]], start: int, count: int, dtype: str
) -> Callable[[], Tensors]:
    """Builds one block's tensors from evaluated views, with numpy only."""

    def build() -> Tensors:
        tensors: Tensors = {}
        for index, (keys, values) in enumerate(layers):
            for kind, array in (("k", keys), ("v", values)):
                rows = np.asarray(array)[:, :, start : start + count, :]
                tensors[f"{kind}.{index}"] = (np.ascontiguousarray(rows), dtype)
        return tensors

    return build


def _same_layout(first: Tensors, other: Tensors) -> bool:
    """The same tensors, dtypes and shapes but for the token axis."""

    def layout(part: Tensors) -> dict[str, tuple[Any, ...]]:
        return {n: (a.shape[:2], a.shape[3:], d) for n, (a, d) in part.items()}

    return layout(first) == layout(other)


def _joined(parts: list[tuple[np.ndarray, str]], uses: list[int]) -> mx.array:
    rows = np.concatenate([a[:, :, :use] for (a, _), use in zip(parts, uses, strict=True)], axis=2)
    array = mx.array(rows)
    return array.view(mx.bfloat16) if parts[0][1] == "BF16" else array
