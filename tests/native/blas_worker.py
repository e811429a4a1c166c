"""Computes GEMM cases with MLX in a process whose BLAS was chosen before mlx.core loaded.

Run as a script by test_blas_bridge.py: the bridge must be preloaded before ``mlx.core`` is
imported, which the test process itself has long done. One JSON object per line: first the
BlasStatus, then a GemmReply for each GemmCase read from stdin. Inputs come from
blas_cases.operands, seeded, so the test rebuilds them for its reference instead of
shipping them over the pipe.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import msgspec
import numpy as np
from tests.native.blas_cases import GemmCase, GemmReply, operands

from mlx_serving.native_bridge.blas import gemm_calls, preload_optimized_blas

status = preload_optimized_blas()
import mlx.core as mx  # noqa: E402  (must follow the preload)

DTYPES = {"float32": mx.float32, "float64": mx.float64, "complex64": mx.complex64}


def swap_last(x: Any) -> Any:
    return mx.swapaxes(x, -1, -2)


def compute(case: GemmCase) -> Any:
    dtype = DTYPES[case.dtype]
    arrays = {name: mx.array(v).astype(dtype) for name, v in operands(case).items()}
    # Transposing in MLX gives a strided view, so MLX hands BLAS a transpose flag: the
    # CblasTrans paths get exercised rather than a copy.
    a = swap_last(arrays["a"]) if case.transpose_a else arrays["a"]
    b = swap_last(arrays["b"]) if case.transpose_b else arrays["b"]
    with mx.stream(mx.cpu):
        if case.op == "addmm":
            return mx.addmm(arrays["c"], a, b, alpha=case.alpha, beta=case.beta)
        if case.op == "inv":
            return mx.linalg.inv(a @ swap_last(a) + case.m * mx.eye(case.m, dtype=dtype))
        return a @ b


def main() -> None:
    # The replies get their own copy of fd 1 and fd 1 goes to stderr: native code (OpenBLAS's
    # xerbla prints argument errors with printf) must not corrupt or block the reply pipe.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(GemmCase)
    replies.write(encoder.encode(status) + b"\n")
    replies.flush()
    for line in sys.stdin.buffer:
        case = decoder.decode(line)
        before = gemm_calls() or 0
        result = np.ascontiguousarray(np.array(compute(case)))
        reply = GemmReply(
            result=result.tobytes(),
            shape=result.shape,
            dtype=str(result.dtype),
            gemm_calls=(gemm_calls() or 0) - before,
        )
        replies.write(encoder.encode(reply) + b"\n")
        replies.flush()


if __name__ == "__main__":
    main()
