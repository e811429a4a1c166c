"""The BLAS bridge routes MLX's CPU GEMMs to OpenBLAS, and results stay correct either way.

The bridge only takes effect if it is loaded before ``mlx.core``, which this test process
has already imported, so every check runs in a worker process (blas_worker.py): one with
the bridge on, one with MLX_SERVING_BLAS=off as the control.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.native.blas_cases import GemmCase, GemmReply, reference, tolerance

import mlx_serving
from mlx_serving.native_bridge.blas import (
    SHIM_NAME,
    BlasStatus,
    default_threads,
    find_shim,
    preload_optimized_blas,
    usable_cpus,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the bridge exists for MLX's Linux CPU wheel"
)

WORKER = Path(__file__).with_name("blas_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env(**overrides: str | None) -> dict[str, str]:
    """This environment, with the package and the tests importable as in this process."""
    env = dict(os.environ)
    package_parent = str(Path(mlx_serving.__file__ or ".").resolve().parents[1])
    paths = [package_parent, str(REPO_ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class Worker:
    """A blas_worker.py process: GemmCases in, GemmReplys out, one line each."""

    def __init__(self, env: dict[str, str]) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.status = msgspec.json.decode(self._line(), type=BlasStatus)

    def _line(self) -> bytes:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            pytest.fail(f"BLAS worker died:\n{self.stderr.read().decode(errors='replace')}")
        return line

    def run(self, case: GemmCase) -> GemmReply:
        assert self.process.stdin is not None
        self.process.stdin.write(msgspec.json.encode(case) + b"\n")
        self.process.stdin.flush()
        return msgspec.json.decode(self._line(), type=GemmReply)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def bridged() -> Iterator[Worker]:
    worker = Worker(child_env(MLX_SERVING_BLAS="on"))
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def reference_blas() -> Iterator[Worker]:
    worker = Worker(child_env(MLX_SERVING_BLAS="off"))
    yield worker
    worker.close()


def check(worker: Worker, case: GemmCase, *, expect_bridge: bool) -> None:
    reply = worker.run(case)
    expected = reference(case)
    assert reply.shape == expected.shape
    np.testing.assert_allclose(reply.array(), expected, rtol=1e-4, atol=tolerance(case))
    if expect_bridge:
        assert reply.gemm_calls >= 1, "MLX's GEMM went to the reference BLAS, not the shim"
    else:
        assert reply.gemm_calls == 0


def test_shim_is_built() -> None:
    # A missing shim must fail the suite, not skip: it means the wheel shipped without it.
    assert find_shim() is not None, (
        f"{SHIM_NAME} not found: pip install . builds it "
        "(or cmake -S native/blas_bridge -B build/blas_bridge && cmake --build build/blas_bridge)"
    )


def test_bridge_is_active(bridged: Worker) -> None:
    assert bridged.status.active, bridged.status.reason
    assert bridged.status.library is not None and "scipy_openblas" in bridged.status.library
    assert bridged.status.threads is not None and bridged.status.threads >= 1
    if not any(name in os.environ for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
        assert bridged.status.threads == default_threads()


def test_off_leaves_mlx_on_its_own_blas(reference_blas: Worker) -> None:
    assert not reference_blas.status.active
    assert "MLX_SERVING_BLAS=off" in reference_blas.status.reason


float32_cases = st.builds(
    GemmCase,
    op=st.sampled_from(["matmul", "addmm"]),
    batch=st.sampled_from([(), (3,), (2, 2)]),
    m=st.integers(1, 96),
    n=st.integers(1, 96),
    k=st.integers(1, 160),
    transpose_a=st.booleans(),
    transpose_b=st.booleans(),
    alpha=st.sampled_from([1.0, 0.0, -1.5, 0.25]),
    beta=st.sampled_from([1.0, 0.0, 2.0, -0.5]),
    seed=st.integers(0, 2**32 - 1),
)

# Big enough that OpenBLAS splits the work over its threads.
LARGE = GemmCase(m=384, n=320, k=512, transpose_a=True, seed=7)


@settings(max_examples=60, deadline=None)
@example(case=LARGE)
@given(case=float32_cases)
def test_float32_gemm_matches_numpy(
    case: GemmCase, bridged: Worker, reference_blas: Worker
) -> None:
    check(bridged, case, expect_bridge=True)
    check(reference_blas, case, expect_bridge=False)


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True)])
def test_other_gemm_dtypes_are_forwarded(
    dtype: str, transpose_a: bool, transpose_b: bool, bridged: Worker
) -> None:
    case = msgspec.convert(
        {"dtype": dtype, "batch": [2], "m": 33, "n": 17, "k": 65, "seed": 3,
         "transpose_a": transpose_a, "transpose_b": transpose_b},
        GemmCase,
    )  # fmt: skip
    check(bridged, case, expect_bridge=True)


def test_lapack_still_works_beside_the_bridge(bridged: Worker) -> None:
    # LAPACK is not forwarded: MLX's linalg stays on the bundled reference LAPACK and BLAS.
    check(bridged, GemmCase(op="inv", m=24, n=24, k=24, seed=5), expect_bridge=True)


PRINT_STATUS = (
    "import msgspec; from mlx_serving.native_bridge.blas import preload_optimized_blas; "
    "print(msgspec.json.encode(preload_optimized_blas()).decode())"
)


def status_in_child(code: str, **env: str | None) -> BlasStatus:
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(**env),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return msgspec.json.decode(out.stdout, type=BlasStatus)


def test_preload_after_mlx_import_is_refused() -> None:
    status = status_in_child("import mlx.core; " + PRINT_STATUS, MLX_SERVING_BLAS=None)
    assert not status.active
    assert "mlx.core was imported first" in status.reason


def test_an_earlier_global_cblas_wins_and_is_named() -> None:
    # Any library already in the global scope with cblas_sgemm (here MLX's own reference BLAS,
    # preloaded) is what MLX will bind to; the status must not claim the bridge is active.
    import importlib.util

    spec = importlib.util.find_spec("mlx")
    roots = [Path(p).parent for p in (spec.submodule_search_locations or [])] if spec else []
    blas = sorted(lib for root in roots for lib in root.glob("mlx_cpu.libs/libblas*.so*"))
    if not blas:
        pytest.skip("this mlx install has no separate reference libblas to preload")
    status = status_in_child(PRINT_STATUS, MLX_SERVING_BLAS="on", LD_PRELOAD=str(blas[0]))
    assert not status.active
    assert f"already provided by {blas[0]}" in status.reason


def test_unknown_env_value_disables_and_says_so() -> None:
    status = status_in_child(PRINT_STATUS, MLX_SERVING_BLAS="fast")
    assert not status.active
    assert "MLX_SERVING_BLAS='fast'" in status.reason


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        preload_optimized_blas("fast")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        preload_optimized_blas(threads=0)


def test_default_threads_leave_room_for_the_rest_of_the_process() -> None:
    assert 1 <= default_threads() <= max(1, usable_cpus() // 2)
