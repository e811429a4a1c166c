"""`mlx-serving-runtime` / `python -m mlx_serving`: serve the protocol on stdio, or run a
helper subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _configure_logging() -> None:
    level = os.environ.get("MLX_SERVING_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlx-serving-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve JSON-RPC on stdin/stdout (the default)")
    demo = sub.add_parser("demo", help="spawn the runtime and stream a demo answer")
    demo.add_argument(
        "--model", help="model directory or GGUF file (default: SmolLM2-135M-Instruct)"
    )
    demo.add_argument("--random", action="store_true", help="use a random-weight model")
    demo.add_argument("--prompt", default="What is the capital of France? Answer in one sentence.")
    demo.add_argument("--max-tokens", type=int, default=64)
    convert = sub.add_parser("convert-gguf", help="convert a GGUF file to an mlx-lm directory")
    convert.add_argument("args", nargs=argparse.REMAINDER)
    make = sub.add_parser("make-model", help="write a small random-weight test model")
    make.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    _configure_logging()

    if args.command in (None, "serve"):
        # OpenBLAS must be in the global symbol scope before mlx.core loads (server → engine
        # → mlx), and stdout must already be ours: OpenBLAS reports errors on stdout.
        from .native_bridge.blas import preload_optimized_blas
        from .transport import claim_stdout

        protocol_fd = claim_stdout()
        blas = preload_optimized_blas(os.environ.get("MLX_SERVING_BLAS", "auto"))
        logging.getLogger(__name__).info("BLAS bridge: %s", blas.reason)
        from .handlers.context import NativeStatus
        from .server import run

        return run(protocol_fd, native=NativeStatus.detect(blas))
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.model, args.prompt, args.max_tokens, random=args.random)
    if args.command == "convert-gguf":
        from .gguf.cli import convert_main

        return convert_main(args.args)
    if args.command == "make-model":
        from .testing.make_model import main as make_main

        return make_main(args.args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
