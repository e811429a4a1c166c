"""`mlx-serving-runtime demo`: spawn the runtime as a client would and stream an answer.

Everything goes through the real stdio protocol: the demo is a JSON-RPC client of a
child `python -m mlx_serving` process.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from .config import default_cache_dir
from .demo_model import DemoModelUnavailable, ensure_gguf
from .testing.client import RuntimeClient


def smollm2_gguf() -> Path:
    """The demo model's GGUF file, fetched into the runtime's cache on first use."""
    cache_dir = os.environ.get("MLX_SERVING_CACHE_DIR") or default_cache_dir()
    return ensure_gguf(Path(cache_dir).expanduser())


def _random_model(workdir: Path) -> Path:
    from .testing import make_model

    return make_model(workdir / "demo-model", "llama", hidden_size=256, num_layers=4)


def _pick_model(model: str | None, random: bool, workdir: Path) -> tuple[Path, str]:
    if model:
        return Path(model), "given"
    if not random:
        try:
            return smollm2_gguf(), "smollm2"
        except DemoModelUnavailable as exc:
            print(f"{exc}: using a random-weight model instead", file=sys.stderr)
    return _random_model(workdir), "random"


def run_demo(model: str | None, prompt: str, max_tokens: int, random: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="mlx-serving-demo-") as workdir:
        model_path, kind = _pick_model(model, random, Path(workdir))
        with RuntimeClient() as client:
            info = client.call("runtime/info")
            print(f"runtime {info['version']} (mlx {info['mlx_version']}, {info['backend']})")
            load = {"model_id": "demo", "local_path": str(model_path)}
            if kind == "smollm2" and info["backend"] == "cpu":
                # MLX's CPU backend runs quantized matmuls slowly; float32 goes through the
                # optimized BLAS and decodes about twice as fast.
                load["dtype"] = "float32"
            started = time.perf_counter()
            loaded = client.call("load_model", load, timeout=600)
            print(
                f"loaded {model_path.name}: {loaded['parameter_count'] / 1e6:.1f}M parameters, "
                f"{loaded['dtype']}, in {time.perf_counter() - started:.1f}s"
            )
            print(f"\n> {prompt}\n")
            messages = [{"role": "user", "content": prompt}]
            stream_id = client.call(
                "generate",
                {
                    "model_id": "demo",
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                },
            )["stream_id"]
            stats: dict[str, float] = {}
            for frame in client.stream_events(stream_id, timeout=600):
                params = frame["params"]
                if frame["method"] == "stream.chunk":
                    for chunk in params["tokens"] if params.get("is_batch") else [params]:
                        sys.stdout.write(chunk["token"])
                        sys.stdout.flush()
                elif frame["method"] == "stream.stats":
                    stats = params
                elif params["event"] == "error":
                    print(f"\nerror: {params['error']}", file=sys.stderr)
                    return 1
            print(
                f"\n\n[{stats['tokens_generated']} tokens, "
                f"TTFT {stats['time_to_first_token']:.3f}s, "
                f"{stats['tokens_per_second']:.1f} tok/s]"
            )
            if kind == "random":
                print("(random weights: the text is noise; it proves the pipe, not the model)")
    return 0
