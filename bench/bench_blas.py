"""How much the BLAS bridge speeds up MLX's Linux CPU backend: GEMM and small-model decode.

    python bench/bench_blas.py [--sizes 256 512 1024] [--tokens 64] [--repeat 3]
                               [--threads N] [--hidden 512 --layers 8]

Each side runs in its own process, since the bridge must be chosen before mlx.core loads:
MLX_SERVING_BLAS=off keeps MLX's bundled reference BLAS, =on loads libmlx_serving_blas over
scipy-openblas32. The table puts the two side by side, with bridge/reference as the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB = 8192
PROMPT_TOKENS = 128


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--tokens", type=int, default=64, help="tokens to decode, greedy")
    parser.add_argument("--hidden", type=int, default=512, help="model hidden size")
    parser.add_argument("--layers", type=int, default=8, help="model layers")
    parser.add_argument("--threads", type=int, help="OpenBLAS threads (default: the bridge's)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per side")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child process: preload as the environment says, then time MLX."""
    from mlx_serving.native_bridge.blas import gemm_calls, preload_optimized_blas

    status = preload_optimized_blas(threads=args.threads)
    import mlx.core as mx

    gflops = {str(size): _gemm_gflops(mx, size) for size in args.sizes}
    decode_tps, prompt_tps, generated = _decode(mx, args)
    return {
        "active": status.active,
        "reason": status.reason,
        "threads": status.threads,
        "gemm_gflops": gflops,
        "decode_tps": decode_tps,
        "prompt_tps": prompt_tps,
        "generated": generated,
        "gemm_calls": gemm_calls(),
    }


def _gemm_gflops(mx: Any, size: int, min_seconds: float = 1.0) -> float:
    a = mx.random.normal((size, size), dtype=mx.float32)
    b = mx.random.normal((size, size), dtype=mx.float32)
    mx.eval(a, b)
    mx.eval(a @ b)  # warm-up: allocation, OpenBLAS thread start
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < min_seconds:
        tic = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - tic)
    return 2 * size**3 / statistics.median(times) / 1e9


def _decode(mx: Any, args: argparse.Namespace) -> tuple[float, float, int]:
    from mlx_lm import stream_generate
    from mlx_lm.models.llama import Model, ModelArgs
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    mx.random.seed(0)
    model_args = ModelArgs(
        model_type="llama",
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=3 * args.hidden,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        rms_norm_eps=1e-5,
        vocab_size=VOCAB,
    )
    model = Model(model_args)  # random float32 weights from the layers' own initialisers
    mx.eval(model.parameters())
    # No eos token, so greedy decoding always runs the full length.
    word_level = Tokenizer(WordLevel({f"t{i}": i for i in range(VOCAB)}, "t0"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level)  # type: ignore[no-untyped-call]
    prompt = [(i * 7919) % VOCAB for i in range(PROMPT_TOKENS)]
    for _ in stream_generate(model, tokenizer, prompt, max_tokens=4):
        pass  # warm-up
    last = list(stream_generate(model, tokenizer, prompt, max_tokens=args.tokens))[-1]
    return last.generation_tps, last.prompt_tps, last.generation_tokens


def _run_child(mode: str, argv: list[str]) -> dict[str, Any]:
    env = dict(os.environ, MLX_SERVING_BLAS=mode)
    # Where this process finds mlx_serving (installed, or the source tree) the child does too.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_parent(), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, *argv, "--child"]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark child ({mode}) failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _package_parent() -> str:
    try:
        import mlx_serving
    except ImportError:
        return str(REPO_ROOT / "runtime")
    return str(Path(mlx_serving.__file__ or ".").resolve().parents[1])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric, the median over repeated runs: a shared machine gives noisy single runs."""
    merged = dict(runs[0])
    for key in ("decode_tps", "prompt_tps"):
        merged[key] = statistics.median(run[key] for run in runs)
    merged["gemm_gflops"] = {
        size: statistics.median(run["gemm_gflops"][size] for run in runs)
        for size in runs[0]["gemm_gflops"]
    }
    return merged


def _table(reference: dict[str, Any], bridged: dict[str, Any], args: argparse.Namespace) -> str:
    gemm = [(f"sgemm {n}^3 GFLOP/s", str(n)) for n in args.sizes]
    rows = [
        (name, reference["gemm_gflops"][key], bridged["gemm_gflops"][key]) for name, key in gemm
    ]
    model = f"llama h{args.hidden} L{args.layers} V{VOCAB} fp32"
    rows.append((f"decode tok/s ({model})", reference["decode_tps"], bridged["decode_tps"]))
    rows.append((f"prompt tok/s ({PROMPT_TOKENS})", reference["prompt_tps"], bridged["prompt_tps"]))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'':{width}}  {'reference':>10}  {'bridge':>10}  {'ratio':>7}"]
    for name, ref, new in rows:
        lines.append(f"{name:{width}}  {ref:10.1f}  {new:10.1f}  {new / ref:6.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    references, bridges = [], []
    for _ in range(args.repeat):
        references.append(_run_child("off", argv))
        bridges.append(_run_child("on", argv))
    reference, bridged = _median_run(references), _median_run(bridges)
    if not bridged["active"]:
        print(f"bridge did not activate: {bridged['reason']}", file=sys.stderr)
        return 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bridge: {bridged['reason']}, {bridged['threads']} thread(s)")
    print(
        f"CPUs usable: {len(os.sched_getaffinity(0))}, load average at end: {load}, "
        f"tokens decoded: {bridged['generated']}, runs per side: {args.repeat} (median)"
    )
    print(_table(reference, bridged, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
