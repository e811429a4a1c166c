"""What a KV block on disk was computed by, and which models' caches can go to disk at all.

A block may only ever be reused by the exact computation that produced it, so the key its
chain hashes start from covers the weights (each file's resolved path, size and mtime, the
way a Hugging Face snapshot path also names its revision), config.json (architecture,
quantization), the dtype the model runs in, the per-layer cache classes and the versions of
mlx and mlx-lm (a model's code can change between releases). Hashing the weights' bytes
would cost seconds per gigabyte at every load; a rewritten file changes its mtime anyway.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from mlx_lm.models.cache import KVCache

# Bumped when the block layout or the key changes: older blocks are then foreign.
FORMAT_VERSION = 1

# What mlx-lm reads weights from (mlx_lm.utils.load_model globs *.safetensors).
_WEIGHT_PATTERNS = ("*.safetensors", "*.gguf")


def weights_fingerprint(model_dir: Path) -> str:
    """The files a load reads, as they are now: taken before the load, so files replaced
    during it give a fingerprint that no later load matches. Empty when unreadable."""
    try:
        config = (model_dir / "config.json").read_bytes()
        files = sorted({p for pattern in _WEIGHT_PATTERNS for p in model_dir.glob(pattern)})
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    except OSError:
        return ""
    digest = hashlib.sha256(config)
    digest.update(json.dumps(stats).encode())
    return digest.hexdigest()


def refusal(cache: list[Any]) -> str | None:
    """Why a model's fresh prompt cache cannot be cut into blocks and put back exactly, or
    None when it can: only plain KVCache layers hold one key/value row per token that a
    block can slice. A RotatingKVCache keeps a window in rotated order, an ArraysCache
    (SSM, linear attention) a running state of the whole prefix, a CacheList both."""
    if not cache:
        return "the model has no KV cache"
    for index, layer in enumerate(cache):
        if type(layer) is not KVCache:
            return f"layer {index} keeps a {type(layer).__name__}, which blocks cannot restore"
    return None


def model_key(fingerprint: str, dtype: str, cache: list[Any], device: str) -> str:
    """The hex key a model's block chains start from."""
    identity = {
        "format": FORMAT_VERSION,
        "weights": fingerprint,
        "dtype": dtype,
        "layers": [type(layer).__name__ for layer in cache],
        "mlx": _version("mlx"),
        "mlx_lm": _version("mlx-lm"),
        # The CPU and a GPU round differently: blocks stay with the device that made them.
        "device": device,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def block_name(model: str, parent: str, token_ids: bytes) -> str:
    """A block's name: SHA-256 of the model key, its parent's name (none for a chain's
    first block) and its token ids (little-endian uint32), so it names the whole prefix
    up to the block's end. A file's header repeats all three; the index checks them."""
    digest = hashlib.sha256(bytes.fromhex(model))
    digest.update(bytes.fromhex(parent) if parent else bytes(32))
    digest.update(token_ids)
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
