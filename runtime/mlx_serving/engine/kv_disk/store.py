"""A directory of KV block files: its index, its byte budget and the thread that writes it.

One store per directory per process, shared by every model loaded (`kv_disk.open_store`), so one
budget bounds the directory and one thread writes it. Blocks are named by their chain hash
(`<dir>/<first two hex digits>/<hash>.safetensors`), so any process pointed at the same
directory finds them by name: a lookup that misses the index asks the file system, and the
index is rebuilt from the directory at start-up and merged with it again every RESCAN_S
while writing, which is how another runtime's blocks count against the budget here too.
Least recently used is by file mtime, which a restore moves forward, so the order survives
restarts and is shared between processes.

The engine thread only looks up, reads (a restore), and hands over blocks to write; file
writes, eviction and the directory scan happen on the writer thread. A hand-over that would
hold more than `max_pending_bytes` of blocks waiting is dropped instead of waiting.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .block_file import TEMP_SUFFIX, BadBlock, Tensors, read_block, read_header, write_block
from .folder import files_in, lowest_priority, touch

log = logging.getLogger(__name__)

RESCAN_S = 30.0
# A temporary file this old was left by a writer that died before renaming it.
STALE_TEMP_S = 3600.0
_BLOCK_NAME = re.compile(r"^([0-9a-f]{64})\.safetensors$")


@dataclass
class BlockWrite:
    """One block to write: `tensors` builds its arrays on the writer thread."""

    block: str
    model: str
    parent: str
    token_ids: bytes  # little-endian uint32
    nbytes: int
    metadata: dict[str, str]
    tensors: Callable[[], Tensors]


@dataclass(frozen=True)
class ModelUsage:
    """One model's blocks: bytes on disk (any process's), and what this process wrote
    and the CPU time its writer thread spent on them (copying, checksumming, writing)."""

    bytes: int
    blocks_written: int
    write_cpu_seconds: float


@dataclass
class _Entry:
    size: int
    model: str
    parent: str
    token_ids: bytes
    last_access: float


class BlockStore:
    def __init__(self, directory: Path, max_bytes: int, max_pending_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._max_pending = max_pending_bytes
        # Everything below is guarded by _lock: the engine thread looks up and reads, the
        # writer thread writes and evicts, metrics read from request threads.
        self._lock = threading.Lock()
        self._index: dict[str, _Entry] = {}
        self._children: dict[tuple[str, str], set[str]] = {}  # (model, parent) -> blocks
        self._bytes = 0
        self._pending: set[str] = set()
        self._pending_bytes = 0
        self._jobs: deque[Callable[[], None]] = deque()
        self._closed = False
        self._wake = threading.Condition(self._lock)
        self._reported: set[str] = set()  # bad files already logged
        self._written: Counter[str] = Counter()  # blocks written, by model key
        self._write_cpu: dict[str, float] = defaultdict(float)  # the writer's CPU seconds
        self._model_bytes: Counter[str] = Counter()  # bytes indexed, by model key
        self.dropped = 0  # blocks not written: the queue was full
        self._write_failed = False  # logged already (writer thread only)
        self._last_scan = 0.0
        self._busy = True  # the writer is inside a job: the start-up index comes first
        self._indexed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kv-disk-writer", daemon=True)
        self._thread.start()

    def path_of(self, block: str) -> Path:
        return self.directory / block[:2] / f"{block}.safetensors"

    # -- engine thread -----------------------------------------------------------------------

    def known(self, block: str) -> bool:
        """Indexed or waiting to be written (no file system access)."""
        with self._lock:
            return block in self._index or block in self._pending

    def wait_indexed(self, timeout: float) -> None:
        """Let the start-up index finish (up to `timeout`): a prompt's partial block is
        found through it, and a runtime's first request is often the one it was restarted
        for."""
        self._indexed.wait(timeout)

    def present(self, block: str) -> bool:
        """On disk: indexed, or written by another process since the last scan."""
        with self._lock:
            if block in self._index:
                return True
        return self.path_of(block).is_file()

    def children(self, model: str, parent: str) -> list[tuple[str, bytes]]:
        """The indexed blocks that follow `parent` ("": a chain's first), with their
        token ids: a prompt that leaves a chain mid-block reuses the rows it shares."""
        with self._lock:
            names = self._children.get((model, parent), set())
            return [(name, self._index[name].token_ids) for name in names]

    def read(self, block: str, expected: dict[str, str]) -> Tensors | None:
        """A block's tensors, or None when it is gone or bad (then it is deleted)."""
        path = self.path_of(block)
        try:
            tensors = read_block(path, expected)
        except FileNotFoundError:
            self._forget(block)
            return None
        except OSError:
            return None  # unreadable now (permissions, I/O): a miss, the file is left
        except (BadBlock, ValueError) as exc:
            self.discard(path, str(exc))
            return None
        now = time.time()
        with self._lock:
            entry = self._index.get(block)
            if entry is not None:
                entry.last_access = now
            self._jobs.append(lambda: touch(path, now))
            self._wake.notify()
        return tensors

    def submit(self, writes: list[BlockWrite]) -> int:
        """Queue the blocks not on disk or queued yet; returns how many were queued."""
        with self._lock:
            if self._closed:
                return 0
            new = [w for w in writes if w.block not in self._index and w.block not in self._pending]
            size = sum(w.nbytes for w in new)
            if not new:
                return 0
            if self._pending_bytes + size > self._max_pending:
                self.dropped += len(new)
                return 0
            self._pending.update(w.block for w in new)
            self._pending_bytes += size
            self._jobs.append(lambda: self._write(new))
            self._wake.notify()
        return len(new)

    def discard(self, path: Path, reason: str) -> None:
        """Delete a file that must not be loaded, and say so once."""
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        match = _BLOCK_NAME.match(path.name)
        with self._lock:
            if match:
                self._drop_entry(match.group(1))
            first = path.name not in self._reported
            self._reported.add(path.name)
        if first:
            log.warning("prompt cache: removed %s: %s", path, reason)

    # -- any thread ----------------------------------------------------------------------------

    def usage(self) -> tuple[int, int]:
        """(bytes, blocks) indexed on disk."""
        with self._lock:
            return self._bytes, len(self._index)

    def model_usage(self, model: str) -> ModelUsage:
        with self._lock:
            return ModelUsage(
                self._model_bytes[model], self._written[model], self._write_cpu[model]
            )

    def drain(self, timeout: float) -> bool:
        """Wait until every queued write is done; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._wake.wait(remaining)
        return True

    def close(self, timeout: float) -> None:
        """Finish the queued writes (up to `timeout`), then stop the writer thread."""
        drained = self.drain(timeout)
        with self._lock:
            self._closed = True
            left = len(self._pending)
            self._wake.notify_all()
        if not drained:
            log.warning("prompt cache: %d blocks were not written before shutdown", left)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        self._run_job(self._scan)  # at normal priority: the first lookups wait for it
        self._indexed.set()
        lowest_priority()
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._busy = True
            self._run_job(job)

    def _run_job(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:
            log.exception("prompt cache: a disk job failed")
        finally:
            with self._lock:
                self._busy = False
                self._wake.notify_all()

    def _write(self, writes: list[BlockWrite]) -> None:
        try:
            for write in writes:
                self._write_one(write)
                with self._lock:
                    self._pending.discard(write.block)
                    self._pending_bytes -= write.nbytes
        finally:
            with self._lock:
                for write in writes:
                    if write.block in self._pending:
                        self._pending.discard(write.block)
                        self._pending_bytes -= write.nbytes
        if time.monotonic() - self._last_scan > RESCAN_S:
            self._scan()
        self._evict()

    def _write_one(self, write: BlockWrite) -> None:
        path = self.path_of(write.block)
        try:
            stat = path.stat()  # another process wrote it meanwhile
        except FileNotFoundError:
            started = time.thread_time()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                size = write_block(path, write.tensors(), write.metadata)
            except OSError as exc:  # a full disk, a read-only folder: once, not per block
                if not self._write_failed:
                    log.warning("prompt cache: cannot write to %s: %s", self.directory, exc)
                self._write_failed = True
                return
            with self._lock:
                self._written[write.model] += 1
                self._write_cpu[write.model] += time.thread_time() - started
        else:
            size = stat.st_size
        entry = _Entry(size, write.model, write.parent, write.token_ids, time.time())
        with self._lock:
            self._add_entry(write.block, entry)
            superseded = [
                name
                for name in self._children.get((write.model, write.parent), set())
                if name != write.block and write.token_ids.startswith(self._index[name].token_ids)
            ]
            for name in superseded:
                self._drop_entry(name)
        # A shorter block under the same parent whose tokens this one starts with holds
        # nothing this one does not (the tail of a conversation that went on).
        for name in superseded:
            self.path_of(name).unlink(missing_ok=True)

    def _evict(self) -> None:
        """Delete the least recently used blocks until the directory fits the budget."""
        with self._lock:
            if self._bytes <= self.max_bytes:
                return
            victims = []
            for block, _ in sorted(self._index.items(), key=lambda item: item[1].last_access):
                if self._bytes <= self.max_bytes:
                    break
                victims.append(block)
                self._drop_entry(block)
        for block in victims:
            try:
                self.path_of(block).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("prompt cache: cannot evict %s: %s", block, exc)

    def _scan(self) -> None:
        """Index the directory: new files by their headers (a bad one is deleted), known
        ones by stat; entries whose file is gone (evicted elsewhere) are dropped."""
        self._last_scan = time.monotonic()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            folders = [p for p in self.directory.iterdir() if len(p.name) == 2 and p.is_dir()]
        except OSError as exc:
            log.warning("prompt cache: cannot use %s: %s", self.directory, exc)
            return
        seen: dict[str, _Entry] = {}
        for folder in folders:
            for path in files_in(folder):
                entry = self._scan_file(path)
                if entry is not None:
                    seen[path.name[:64]] = entry
        with self._lock:
            for block in [b for b in self._index if b not in seen and b not in self._pending]:
                self._drop_entry(block)
            for block, entry in seen.items():
                known = self._index.get(block)
                if known is None:
                    self._add_entry(block, entry)
                else:  # another runtime may have read it since
                    known.last_access = max(known.last_access, entry.last_access)
        self._evict()

    def _scan_file(self, path: Path) -> _Entry | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        if path.name.endswith(TEMP_SUFFIX):
            if time.time() - stat.st_mtime > STALE_TEMP_S:
                path.unlink(missing_ok=True)
            return None
        match = _BLOCK_NAME.match(path.name)
        if match is None:
            return None  # not ours: never touched
        block = match.group(1)
        with self._lock:
            known = self._index.get(block)
        if known is not None:
            return _Entry(known.size, known.model, known.parent, known.token_ids, stat.st_mtime)
        try:
            header = read_header(path, block)
        except BadBlock as exc:
            self.discard(path, str(exc))
            return None
        except OSError:
            return None
        return _Entry(stat.st_size, header.model, header.parent, header.token_ids, stat.st_mtime)

    # -- the index (callers hold _lock) ----------------------------------------------------------

    def _add_entry(self, block: str, entry: _Entry) -> None:
        self._drop_entry(block)
        self._index[block] = entry
        self._bytes += entry.size
        self._model_bytes[entry.model] += entry.size
        self._children.setdefault((entry.model, entry.parent), set()).add(block)

    def _drop_entry(self, block: str) -> None:
        entry = self._index.pop(block, None)
        if entry is not None:
            self._bytes -= entry.size
            self._model_bytes[entry.model] -= entry.size
            siblings = self._children.get((entry.model, entry.parent))
            if siblings is not None:
                siblings.discard(block)
                if not siblings:
                    del self._children[(entry.model, entry.parent)]

    def _forget(self, block: str) -> None:
        with self._lock:
            self._drop_entry(block)
