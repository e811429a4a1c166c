"""GEMM cases shared by the test and its worker process: the wire types, inputs, reference."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.inexact[Any]]


class GemmCase(msgspec.Struct, frozen=True, kw_only=True):
    """One computation: ``op(a, b)`` with a (m, k), b (k, n), c (m, n) behind ``batch``."""

    m: int
    n: int
    k: int
    op: Literal["matmul", "addmm", "inv"] = "matmul"
    dtype: Literal["float32", "float64", "complex64"] = "float32"
    batch: tuple[int, ...] = ()
    # Store the operand transposed so the computation sees a strided (transposed) view.
    transpose_a: bool = False
    transpose_b: bool = False
    alpha: float = 1.0
    beta: float = 0.0
    seed: int = 0


class GemmReply(msgspec.Struct, frozen=True, kw_only=True):
    result: bytes
    shape: tuple[int, ...]
    dtype: str
    gemm_calls: int  # how many went through the shim while computing this case

    def array(self) -> Array:
        return np.frombuffer(self.result, dtype=self.dtype).reshape(self.shape)


def operands(case: GemmCase) -> dict[str, Array]:
    """The case's inputs in double precision, stored transposed where the case says so."""
    rng = np.random.default_rng(case.seed)
    m, n, k = case.m, case.n, case.k
    shapes = {
        "a": case.batch + ((k, m) if case.transpose_a else (m, k)),
        "b": case.batch + ((n, k) if case.transpose_b else (k, n)),
        "c": case.batch + (m, n),
    }
    arrays: dict[str, Array] = {}
    for name, shape in shapes.items():
        values = rng.standard_normal(shape)
        if case.dtype == "complex64":
            values = values + 1j * rng.standard_normal(shape)
        arrays[name] = values
    return arrays


def reference(case: GemmCase) -> Array:
    """What the worker's MLX computation should give, in double precision."""
    wide = np.complex128 if case.dtype == "complex64" else np.float64
    # Round the inputs the way the worker does, so only the GEMM's own error remains.
    arrays = {name: v.astype(case.dtype).astype(wide) for name, v in operands(case).items()}
    a = np.swapaxes(arrays["a"], -1, -2) if case.transpose_a else arrays["a"]
    b = np.swapaxes(arrays["b"], -1, -2) if case.transpose_b else arrays["b"]
    result: Array
    if case.op == "addmm":
        result = case.alpha * (a @ b) + case.beta * arrays["c"]
    elif case.op == "inv":
        result = np.linalg.inv(a @ np.swapaxes(a, -1, -2) + case.m * np.eye(case.m))
    else:
        result = a @ b
    return result


def tolerance(case: GemmCase) -> float:
    """Absolute tolerance: rounding grows with k and the size of alpha and beta."""
    eps = 1e-12 if case.dtype == "float64" else 2e-6
    scale = abs(case.alpha) + abs(case.beta) + 1.0
    return eps * 8 * (case.k + 8) * scale
