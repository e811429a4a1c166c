"""`convert-gguf FILE OUT`: the command-line face of import_gguf."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .convert import import_gguf
from .errors import GGUFImportError


def convert_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlx-serving-runtime convert-gguf",
        description="Convert a llama-family GGUF file into an mlx-lm model directory.",
    )
    parser.add_argument("file", type=Path, help="GGUF file (llama, mistral or qwen2)")
    parser.add_argument("out", type=Path, help="output directory; must not exist yet")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        out_dir = import_gguf(args.file, args.out)
    except (GGUFImportError, FileExistsError) as exc:
        print(f"convert-gguf: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"converted {args.file} -> {out_dir} in {elapsed:.1f} s", file=sys.stderr)
    return 0
