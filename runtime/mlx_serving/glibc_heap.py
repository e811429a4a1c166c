"""glibc's allocator settings and trim: how memory this process freed goes back to the
system. Everything here is a no-op where glibc is absent (macOS, musl), whose allocators
give freed pages back as they are.

What none of it reaches: glibc gives each thread that allocates a lot a heap of its own,
and malloc_trim returns the free top of the main heap only. With freed blocks kept, a
request thread's heap keeps the largest request it decoded (a 15 MiB text: +14 MB) until
it is reused. Every thread on the main heap (M_ARENA_MAX 1) returned it, but the threads
then contend for one lock: the tiny model's tokens took a median 52 us longer on this CPU
(53 alternated pairs) and on an H200 (56), near all a token may cost the runtime (60 us)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
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


def arrays_in_host_heap() -> bool:
    """Whether MLX's arrays come from glibc's heaps: on the CPU backend. There keeping
    freed blocks pays (with MLX's cache handed over after a batch changes size,
    engine/batch_lane.py); a GPU's arrays are the device's own, and glibc's defaults stay."""
    import mlx.core as mx

    return bool(mx.default_device() == mx.cpu)


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
    kept goes back when the runtime is idle or a model is unloaded (engine/memory/release.py)."""
    mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def trim_heaps() -> None:
    """Hand glibc's free memory back to the system (any thread: MLX is not involved)."""
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,))
    if trim is not None:
        trim(0)


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
