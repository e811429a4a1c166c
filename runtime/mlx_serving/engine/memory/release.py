"""Give memory that models and streams let go of back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from typing import Any

# glibc's mallopt parameter M_MMAP_THRESHOLD: blocks at least this large get pages of their
# own, unmapped when freed.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
# ... and M_TRIM_THRESHOLD: free memory at the top of a heap beyond this goes back at once.
_M_TRIM_THRESHOLD = -1
# The largest mmap threshold glibc takes on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
HEAP_BLOCK_BYTES = 32 * 1024 * 1024
KEEP_FREED_BYTES = 2**31 - 1  # mallopt takes an int


# Weights freed by an eviction or an unload are given back this long after, once the engine
# thread has dropped the model's batch.
UNLOAD_RELEASE_S = 0.2
# KV freed by the last stream waits until the runtime has been idle this long: the next
# burst would allocate it all again from fresh pages, and MLX's buffer cache would miss on
# every batch shape it grows through. 32 streams sent 1 s after the last ones ended ran
# 25-35% slower with a 0.2 s wait than with none (five bursts each, this CPU).
IDLE_RELEASE_S = 10.0


class ReleaseDeadlines:
    """When freed memory is next given back (monotonic seconds): soon after an unload,
    once idle after the last stream; a stream that ends later postpones only the latter."""

    def __init__(self) -> None:
        self._unloaded: float | None = None
        self._idle: float | None = None

    def after_unload(self) -> None:
        if self._unloaded is None:
            self._unloaded = time.monotonic() + UNLOAD_RELEASE_S

    def after_last_stream(self) -> None:
        self._idle = time.monotonic() + IDLE_RELEASE_S

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


def trim_heaps() -> None:
    """Hand glibc's free memory back to the system (any thread: MLX is not involved)."""
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,))
    if trim is not None:
        trim(0)


def map_large_blocks_alone() -> None:
    """Have glibc give every block of 256 KiB or more (MLX's arrays beyond its own buffer
    cache) pages of its own, returned when freed. By default its threshold grows to the
    size of the blocks freed, after which they come from heaps that fragment and rarely
    shrink: 64 streams under a 63 MB budget peaked 15-20 MB higher in resident size."""
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def keep_freed_blocks() -> None:
    """Have glibc keep what MLX hands back for the next allocation instead of returning it
    to the system at once (its dynamic thresholds did, after every large free). What is
    kept goes back when the runtime is idle or a model is unloaded (the trim above)."""
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def cache_misses_reshaped_batches() -> bool:
    """Whether a batch that changed size should hand MLX's buffer cache to the allocator.
    MLX reuses a cached buffer only for an array of the same size, and a batch's KV
    changes size with every stream that leaves it: on a CPU the cache held the old arrays
    while each new one took fresh pages from the system (a stream leaving a batch of 32:
    40k page faults and 100-150 ms added to a 45 ms step). Handed to glibc, which keeps
    them (`keep_freed_blocks`), they are reused: no faults and 10-35 ms. A GPU's buffers
    are the device's own, and its cache stays."""
    import mlx.core as mx

    return bool(mx.default_device() == mx.cpu)


@functools.cache
def _libc_function(name: str, argtypes: tuple[Any, ...]) -> Any:
    """A glibc function; None elsewhere (macOS, musl), where freed pages go back as is."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None
    function = getattr(libc, name, None)
    if function is not None:
        function.argtypes = list(argtypes)
        function.restype = ctypes.c_int
    return function
