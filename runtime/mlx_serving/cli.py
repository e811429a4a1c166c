"""`mlx-serving-runtime` / `python -m mlx_serving`: serve the protocol on stdio, or run a
helper subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    level = level or os.environ.get("MLX_SERVING_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format=fmt or "[%(asctime)s] [%(levelname)s] %(name)s: %(message)s",
        force=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlx-serving-runtime", description=__doc__)
    hostfile_help = (
        "serve across the hosts of this mlx.launch JSON hostfile, as rank 0 "
        "(docs/DISTRIBUTED.md; default: distributed.hostfile of the config)"
    )
    parser.add_argument("--hostfile", metavar="FILE", help=hostfile_help)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve JSON-RPC on stdin/stdout (the default)")
    serve.add_argument(
        "--config", metavar="FILE", help="runtime.yaml to read (default: $MLX_SERVING_CONFIG)"
    )
    serve.add_argument("--hostfile", metavar="FILE", default=argparse.SUPPRESS, help=hostfile_help)
    demo = sub.add_parser("demo", help="spawn the runtime and stream a demo answer")
    demo.add_argument(
        "--model", help="model directory or GGUF file (default: SmolLM2-135M-Instruct)"
    )
    demo.add_argument("--random", action="store_true", help="use a random-weight model")
    demo.add_argument("--prompt", default="What is the capital of France? Answer in one sentence.")
    demo.add_argument("--max-tokens", type=int, default=64)
    convert = sub.add_parser("convert-gguf", help="convert a GGUF file to an mlx-lm directory")
    convert.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("peer", help="run as rank 1 … N-1 of a distributed runtime (rank 0 starts it)")
    make = sub.add_parser("make-model", help="write a small random-weight test model")
    make.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    _configure_logging()

    if args.command in (None, "serve"):
        from .config import ConfigError, load_settings

        # A bad config ends the process before it reads a request, so a supervisor that
        # restarts the runtime sees the reason on stderr instead of a half-configured server.
        try:
            settings = load_settings(getattr(args, "config", None))
        except ConfigError as exc:
            print(f"mlx-serving: invalid configuration: {exc}", file=sys.stderr)
            return 2
        _configure_logging(settings.logging.level, settings.logging.format)
        if args.hostfile:
            settings.distributed.hostfile = os.path.abspath(os.path.expanduser(args.hostfile))
        # OpenBLAS must be in the global symbol scope before mlx.core loads (server → engine
        # → mlx), and stdout must already be ours: OpenBLAS reports errors on stdout.
        from .native_bridge.blas import preload_optimized_blas
        from .transport import claim_stdout

        protocol_fd = claim_stdout()
        blas_mode = settings.python_runtime.blas
        blas = preload_optimized_blas(
            blas_mode if isinstance(blas_mode, str) else ("on" if blas_mode else "off")
        )
        logging.getLogger(__name__).info("BLAS bridge: %s", blas.reason)
        from .handlers.context import NativeStatus
        from .server import run

        return run(protocol_fd, settings, native=NativeStatus.detect(blas))
    if args.command == "peer":
        from .distributed.peer import main as peer_main

        return peer_main()
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
