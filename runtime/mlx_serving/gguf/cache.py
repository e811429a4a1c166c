"""Convert a GGUF file once per content: cache_root/<sha256 of the file>/."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .convert import CONVERTER_VERSION, PROVENANCE_FILE, import_gguf
from .errors import GGUFImportError

# Hashes by (path, size, mtime) so a model load does not re-read ~100 MB to find its entry.
HASH_INDEX = "sha256-index.json"
_CHUNK = 1 << 20


def cached_import(gguf_path: Path, cache_root: Path) -> Path:
    """The converted directory for `gguf_path`, converting only if none exists yet."""
    gguf_path, cache_root = Path(gguf_path), Path(cache_root)
    target = cache_root / file_sha256(gguf_path, cache_root)
    if _is_current(target):
        return target
    if target.exists():  # written by an older converter, or damaged by hand
        shutil.rmtree(target)
    try:
        return import_gguf(gguf_path, target)
    except FileExistsError:
        if _is_current(target):  # a concurrent process converted the same file
            return target
        raise


def file_sha256(path: Path, cache_root: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise GGUFImportError(f"{path}: no such file") from exc
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    index = _read_index(cache_root)
    entry = index.get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    index[key] = {**stamp, "sha256": digest.hexdigest()}
    _write_index(cache_root, index)
    return digest.hexdigest()


def _is_current(target: Path) -> bool:
    try:
        provenance = json.loads((target / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(provenance.get("converter_version") == CONVERTER_VERSION)


def _read_index(cache_root: Path) -> dict[str, Any]:
    try:
        index = json.loads((cache_root / HASH_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _write_index(cache_root: Path, index: dict[str, Any]) -> None:
    """Replace the index atomically; a lost update from a concurrent writer only costs a rehash."""
    cache_root.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{HASH_INDEX}.", dir=cache_root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(index, stream, indent=1, sort_keys=True)
        os.replace(temp, cache_root / HASH_INDEX)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
