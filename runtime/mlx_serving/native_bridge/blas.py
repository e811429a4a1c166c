"""Puts OpenBLAS under MLX's Linux CPU backend, whose wheel links a slow reference BLAS.

libmlx.so imports ``cblas_sgemm``/``cblas_dgemm``/``cblas_cgemm`` as undefined dynamic
symbols, so whichever library exports them first in the process's global symbol scope serves
every MLX matmul. scipy-openblas32 cannot be that library as is (its symbols carry a
``scipy_`` prefix); the small shim ``libmlx_serving_blas.so`` built from
``native/blas_bridge`` exports the standard names and forwards to it.

Call :func:`preload_optimized_blas` before anything imports ``mlx.core``; afterwards MLX's
symbols are already bound and nothing can change them.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import math
import os
import sys
from pathlib import Path

import msgspec

MODE_ENV = "MLX_SERVING_BLAS"
MODES = ("auto", "on", "off")
SHIM_NAME = "libmlx_serving_blas.so"

# MLX's CUDA wheels: with one of them the matmuls that matter run on the GPU, not in BLAS.
_CUDA_DISTRIBUTIONS = ("mlx-cuda", "mlx-cuda-12", "mlx-cuda-13")
_OPENBLAS_PREFIX = b"scipy_"
# OpenBLAS reads these when it loads; if the user set any, their choice stands.
_THREAD_ENVS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


class BlasStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether MLX's GEMMs go to OpenBLAS in this process, for runtime info and logs."""

    active: bool
    reason: str
    library: str | None = None
    threads: int | None = None


# Once the shim is global it stays so for the life of the process; later calls report it.
_active_status: BlasStatus | None = None
_shim: ctypes.CDLL | None = None


def preload_optimized_blas(mode: str = "auto", threads: int | None = None) -> BlasStatus:
    """Route MLX's CPU GEMMs to scipy-openblas32; call before ``mlx.core`` is imported.

    ``mode``: "auto" (on for Linux without an MLX CUDA backend), "on" (also with one), "off".
    The environment variable MLX_SERVING_BLAS overrides it. ``threads``: OpenBLAS threads;
    None keeps OPENBLAS_NUM_THREADS (or GOTO_/OMP_NUM_THREADS) when set, else
    :func:`default_threads`. Never raises for an environment that cannot take the bridge:
    the returned status says why it is inactive.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if _active_status is not None:
        return _active_status
    source = f"mode={mode!r}"
    env_mode = os.environ.get(MODE_ENV)
    if env_mode is not None:
        if env_mode.strip().lower() not in MODES:
            return _inactive(f"{MODE_ENV}={env_mode!r} is not one of {', '.join(MODES)}")
        mode = env_mode.strip().lower()
        source = f"{MODE_ENV}={mode}"
    if mode == "off":
        return _inactive(f"disabled by {source}")
    if not sys.platform.startswith("linux"):
        return _inactive(f"not needed on {sys.platform}: MLX's BLAS there is not the reference")
    if "mlx.core" in sys.modules:
        return _inactive("mlx.core was imported first, so its BLAS symbols are already bound")
    cuda = _installed_cuda_backend()
    if mode == "auto" and cuda is not None:
        return _inactive(f"{cuda} is installed: MLX's matmuls run on the GPU")
    openblas = find_openblas()
    if openblas is None:
        return _inactive("scipy-openblas32 is not installed")
    shim_path = find_shim()
    if shim_path is None:
        return _inactive(f"{SHIM_NAME} was not built (pip install . builds it on Linux)")
    if threads is None and not any(name in os.environ for name in _THREAD_ENVS):
        threads = default_threads()
    return _activate(shim_path, openblas, threads)


def gemm_calls() -> int | None:
    """GEMM calls that went through the shim so far; None when it is not loaded."""
    if _shim is None:
        return None
    count: int = _shim.mlx_serving_blas_gemm_calls()
    return count


def find_openblas() -> Path | None:
    """Path of scipy-openblas32's shared library, without loading it."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    try:
        path = Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)
    except (OSError, IndexError):
        return None
    return path if path.is_file() else None


def find_shim() -> Path | None:
    """Where the built shim is: the installed package, else a build tree of a source checkout.

    An installed wheel has it next to the Python files. An editable install keeps it in
    site-packages, which the package's ``__path__`` lists next to the source directory.
    A plain source checkout has it under build/, from ``pip install`` or a standalone
    ``cmake -S native/blas_bridge -B build/blas_bridge``.
    """
    import mlx_serving

    for package_dir in mlx_serving.__path__:
        candidate = Path(package_dir) / SHIM_NAME
        if candidate.is_file():
            return candidate
    repo_root = Path(mlx_serving.__file__ or ".").resolve().parents[2]
    if not (repo_root / "native" / "blas_bridge").is_dir():
        return None
    built = [p for p in (repo_root / "build").glob(f"**/{SHIM_NAME}") if "probe" not in p.parts]
    return max(built, key=lambda p: p.stat().st_mtime, default=None)


def _activate(shim_path: Path, openblas: Path, threads: int | None) -> BlasStatus:
    global _active_status, _shim
    # Bind while the shim is still RTLD_LOCAL, so a failed bind leaves the global scope as it
    # was and MLX keeps its reference BLAS instead of reaching an unbound forwarder.
    try:
        shim = ctypes.CDLL(str(shim_path))
    except OSError as exc:
        return _inactive(f"cannot load {shim_path}: {exc}")
    _declare(shim)
    if shim.mlx_serving_blas_bind(str(openblas).encode(), _OPENBLAS_PREFIX) != 0:
        error = shim.mlx_serving_blas_last_error().decode(errors="replace")
        return _inactive(f"cannot bind {openblas}: {error}")
    if threads is not None:
        shim.mlx_serving_blas_set_threads(threads)
    _shim = shim
    # dlopen of a loaded object with RTLD_GLOBAL promotes it to the global scope.
    try:
        ctypes.CDLL(str(shim_path), mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
    except OSError as exc:
        return _inactive(f"cannot make {shim_path} global: {exc}")
    winner = _global_provider("cblas_sgemm")
    if winner is not None and Path(winner).resolve() != shim_path.resolve():
        return _inactive(f"cblas_sgemm is already provided by {winner}, which MLX will use")
    config = shim.mlx_serving_blas_config().decode(errors="replace")
    _active_status = BlasStatus(
        active=True,
        reason=f"MLX GEMMs forwarded to {config or 'OpenBLAS'}",
        library=str(openblas),
        threads=shim.mlx_serving_blas_get_threads(),
    )
    return _active_status


def _declare(shim: ctypes.CDLL) -> None:
    shim.mlx_serving_blas_bind.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    shim.mlx_serving_blas_bind.restype = ctypes.c_int
    shim.mlx_serving_blas_last_error.restype = ctypes.c_char_p
    shim.mlx_serving_blas_config.restype = ctypes.c_char_p
    shim.mlx_serving_blas_set_threads.argtypes = [ctypes.c_int]
    shim.mlx_serving_blas_get_threads.restype = ctypes.c_int
    shim.mlx_serving_blas_gemm_calls.restype = ctypes.c_ulonglong


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _global_provider(symbol: str) -> str | None:
    """File of the library that the global scope resolves ``symbol`` to, as MLX will."""
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p)
        dladdr = process.dladdr  # libc, or libdl before glibc 2.34, which Python loads
    except AttributeError:
        return None
    info = _DlInfo()
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if dladdr(address, ctypes.byref(info)) == 0 or info.dli_fname is None:
        return None
    return os.fsdecode(info.dli_fname)


def _installed_cuda_backend() -> str | None:
    for name in _CUDA_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return name
    return None


def default_threads() -> int:
    """Half the usable CPUs: OpenBLAS's threads meet at a barrier in every call, so one
    preempted thread stalls them all.

    On a 2-CPU machine with one busy neighbour process, a 512^3 sgemm took 24 ms on 2
    threads against 2.1 ms on 1 (idle, 2 threads win by under 2x). The other half is left to
    MLX's own threads, the runtime's I/O and whatever shares the machine.
    """
    return max(1, usable_cpus() // 2)


def usable_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup v2 CPU quota.

    OpenBLAS counts online CPUs; in a container limited by quota rather than by cpuset that
    oversubscribes, and spinning BLAS threads under a quota stall each other.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota == "max":
            return cpus
        return max(1, min(cpus, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError, ZeroDivisionError):
        return cpus


def _inactive(reason: str) -> BlasStatus:
    return BlasStatus(active=False, reason=reason)
