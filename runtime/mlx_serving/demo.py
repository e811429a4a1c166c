"""`mlx-serving-runtime demo`: spawn the runtime as a client would and stream an answer.

Everything goes through the real stdio protocol: the demo is a JSON-RPC client of a
child `python -m mlx_serving` process.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from .testing.client import RuntimeClient


def _default_model(workdir: Path) -> tuple[Path, str]:
    from .testing import make_model

    print("no --model given: generating a small random-weight demo model", file=sys.stderr)
    return make_model(workdir / "demo-model", "llama", hidden_size=256, num_layers=4), "random"


def run_demo(model: str | None, prompt: str, max_tokens: int) -> int:
    with tempfile.TemporaryDirectory(prefix="mlx-serving-demo-") as workdir:
        model_dir, kind = (Path(model), "given") if model else _default_model(Path(workdir))
        with RuntimeClient() as client:
            info = client.call("runtime/info")
            print(f"runtime {info['version']} (mlx {info['mlx_version']}, {info['backend']})")
            started = time.perf_counter()
            loaded = client.call(
                "load_model", {"model_id": "demo", "local_path": str(model_dir)}, timeout=600
            )
            print(
                f"loaded {model_dir.name}: {loaded['parameter_count'] / 1e6:.1f}M parameters, "
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
