"""Give memory that models and streams let go of back to the system."""

from __future__ import annotations

import time

from ...glibc_heap import trim_heaps

# Weights freed by an eviction or an unload are given back this long after, once the engine
# thread has dropped the model's batch.
UNLOAD_RELEASE_S = 0.2


class ReleaseDeadlines:
    """When freed memory is next given back (monotonic seconds): soon after an unload,
    `idle_s` (models.idle_release_s) after the last stream or request; a later one
    postpones only the latter."""

    def __init__(self, idle_s: float) -> None:
        self._idle_s = idle_s
        self._unloaded: float | None = None
        self._idle: float | None = None

    def after_unload(self) -> None:
        if self._unloaded is None:
            self._unloaded = time.monotonic() + UNLOAD_RELEASE_S

    def after_idle(self) -> None:
        self._idle = time.monotonic() + self._idle_s

    def next(self) -> float | None:
        pending = [t for t in (self._unloaded, self._idle) if t is not None]
        return min(pending, default=None)

    def due(self, now: float) -> bool:
        """Whether a release is due; if so, none is pending after it."""
        at = self.next()
        if at is None or at > now:
            return False
        self._unloaded = self._idle = None
        return True


def release_freed_memory() -> None:
    """MLX's buffer cache first, then the C allocator's free lists: without a trim, weights
    freed from glibc's heaps stay resident (measured on Linux: a 55 MB model evicted the
    second time left the resident size 58 MB higher until trimmed)."""
    import mlx.core as mx

    mx.clear_cache()
    trim_heaps()
