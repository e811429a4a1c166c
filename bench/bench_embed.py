"""embed through the runtime: 1,000 short texts in one request against one request each.

    python bench/bench_embed.py [--hidden 256 --layers 4] [--texts 1000] [--repeat 3]
        [--per-request 1000]   (fewer for wide models: their vectors fill an answer line)

Rows, each the best of `--repeat` runs, as texts per second and as a ratio against the
one batched request:
- *batched*: one `embed` request carrying every text;
- *one request each, in turn*: a request per text, each sent when the previous answered
  (what a client that embeds text by text does);
- *one request each, concurrently*: IN_FLIGHT requests outstanding at any time (the
  runtime's worker threads take them together, each its own piece on the engine thread).
- *in-process mlx-lm*: the ceiling: the same model loaded with `mlx_lm.load` in this
  process, its backbone run over the texts sorted by length in batches of 128, mean-pooled
  (no runtime, no JSON, no tokenizing).
Then what the engine thread's sharing costs a decoding stream: its gaps between tokens
while a batched request runs beside it (twice), against its gaps alone.
The batched vectors are checked against the one-by-one vectors (max difference reported;
on CUDA, float32 matmuls run as TF32 unless MLX_ENABLE_TF32=0).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "runtime"))

from mlx_serving.native_bridge.blas import preload_optimized_blas  # noqa: E402

# Before mlx.core is imported: the in-process row gets the BLAS the runtime uses (MLX's
# CPU wheel ships a reference BLAS, docs/PERFORMANCE.md), so it compares serving, not BLAS.
preload_optimized_blas("auto")

from mlx_serving.testing import make_model  # noqa: E402
from mlx_serving.testing.client import RuntimeClient  # noqa: E402

IN_FLIGHT = 32
PER_REQUEST = 1000  # --per-request
WORDS = (
    "the a retrieval model embeds short texts into vectors so that similar meanings land "
    "near each other local apps search notes mail code and documents with them"
).split()


def short_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(count)]


def embed(client: RuntimeClient, texts: list[str] | str) -> list[list[float]]:
    result: dict[str, Any] = client.call("embed", {"model_id": "m", "input": texts}, timeout=600)
    vectors: list[list[float]] = result["embeddings"]
    return vectors


def batched(client: RuntimeClient, texts: list[str]) -> tuple[float, list[list[float]]]:
    """Every text in one request, or in requests of PER_REQUEST texts where a wide model's
    vectors would not fit one answer line (json_rpc.max_output_line_bytes)."""
    started = time.perf_counter()
    vectors: list[list[float]] = []
    for first in range(0, len(texts), PER_REQUEST):
        vectors += embed(client, texts[first : first + PER_REQUEST])
    return time.perf_counter() - started, vectors


def in_turn(client: RuntimeClient, texts: list[str]) -> tuple[float, list[list[float]]]:
    started = time.perf_counter()
    vectors = [embed(client, text)[0] for text in texts]
    return time.perf_counter() - started, vectors


def concurrent(client: RuntimeClient, texts: list[str]) -> tuple[float, list[list[float]]]:
    """A request per text, IN_FLIGHT of them outstanding at a time (the runtime refuses
    more than 4 x max_active_streams in flight with -32006)."""
    started = time.perf_counter()
    vectors: list[list[float]] = []
    ids: list[Any] = []
    for text in texts:
        if len(ids) == IN_FLIGHT:
            vectors.append(client.response(ids.pop(0), timeout=600)["result"]["embeddings"][0])
        ids.append(client.send("embed", {"model_id": "m", "input": text}))
    for request_id in ids:
        vectors.append(client.response(request_id, timeout=600)["result"]["embeddings"][0])
    return time.perf_counter() - started, vectors


def in_process(model_dir: Path, token_lists: list[list[int]]) -> float:
    import mlx.core as mx
    from mlx_lm import load

    from mlx_serving.engine.embeddings import pool

    model, _ = load(str(model_dir))
    ordered = sorted(token_lists, key=len)
    started = time.perf_counter()
    for first in range(0, len(ordered), 128):
        group = ordered[first : first + 128]
        width = len(group[-1])
        rows = mx.array([t + [0] * (width - len(t)) for t in group])
        hidden = model.model(rows).astype(mx.float32)
        mx.eval(pool(hidden, mx.array([len(t) for t in group]), "mean"))
    return time.perf_counter() - started


def token_gaps(client: RuntimeClient, during: Any = None) -> list[float]:
    """Gaps between a greedy stream's tokens, as read here; `during()` runs meanwhile."""
    stream_id = client.call(
        "generate", {"model_id": "m", "prompt": "hello", "max_tokens": 400, "temperature": 0}
    )["stream_id"]
    stamps: list[float] = []

    def read() -> None:
        for frame in client.stream_events(stream_id, timeout=600):
            if frame["method"] == "stream.chunk":
                count = len(frame["params"]["tokens"]) if frame["params"].get("is_batch") else 1
                stamps.extend([time.perf_counter()] * count)

    reader = threading.Thread(target=read)
    reader.start()
    if during is not None:
        while len(stamps) < 20:  # the stream is decoding steadily first
            time.sleep(0.001)
        window_start = time.perf_counter()
        during()
        window_end = time.perf_counter()
        client.call("cancel", {"stream_id": stream_id})
    reader.join()
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    if during is None:
        return gaps
    # Only the gaps that overlap the request.
    return [
        b - a
        for a, b in zip(stamps, stamps[1:], strict=False)
        if b >= window_start and a <= window_end
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-request", type=int, default=1000, help="texts per batched request")
    args = parser.parse_args()
    global PER_REQUEST
    PER_REQUEST = args.per_request
    texts = short_texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp, RuntimeClient() as client:
        model_dir = make_model(Path(tmp) / "m", hidden_size=args.hidden, num_layers=args.layers)
        client.call("load_model", {"model_id": "m", "local_path": str(model_dir)})
        token_lists = [
            client.call("tokenize", {"model_id": "m", "text": t})["tokens"] for t in texts
        ]
        tokens = sum(len(t) for t in token_lists)
        embed(client, texts[:50])  # warm-up, and the prefill budget gets measured
        rows: dict[str, float] = {}
        vectors: dict[str, list[list[float]]] = {}
        for name, run in (("batched", batched), ("in turn", in_turn), ("concurrent", concurrent)):
            best = float("inf")
            for _ in range(args.repeat):
                seconds, vectors[name] = run(client, texts)
                best = min(best, seconds)
            rows[name] = best
        worst = max(
            float(np.abs(np.array(vectors["batched"]) - np.array(vectors[name])).max())
            for name in ("in turn", "concurrent")
        )
        in_process(model_dir, token_lists)  # warm-up
        rows["in-process"] = min(in_process(model_dir, token_lists) for _ in range(args.repeat))
        alone = token_gaps(client)
        # Twice: on a GPU backend the first run of a piece shape compiles kernels.
        beside = [
            token_gaps(client, during=lambda: embed(client, texts[:PER_REQUEST])) for _ in range(2)
        ]

    print(
        f"model: llama hidden {args.hidden}, {args.layers} layers, float32; "
        f"{args.texts} texts, {tokens} tokens ({tokens / args.texts:.1f} per text)\n"
    )
    print("| requests | wall time | texts/s | batched is faster by |")
    print("|---|---:|---:|---:|")
    labels = {
        "batched": f"one request of {args.texts} texts"
        if args.per_request >= args.texts
        else f"requests of {args.per_request} texts, one at a time",
        "in turn": f"{args.texts} requests, one at a time",
        "concurrent": f"{args.texts} requests, {IN_FLIGHT} in flight",
        "in-process": "in-process mlx-lm forward (ceiling)",
    }
    for name, seconds in rows.items():
        ratio = seconds / rows["batched"]
        print(f"| {labels[name]} | {seconds:.3f} s | {args.texts / seconds:,.0f} | {ratio:.1f}× |")
    print(f"\nmax |batched - one by one| over all values: {worst:.2e}")
    print("\n| a decoding stream's gaps between tokens | median | p90 | largest |")
    print("|---|---:|---:|---:|")
    runs = [
        ("alone", alone),
        ("beside a batched request", beside[0]),
        ("beside it again", beside[1]),
    ]
    for label, gaps in runs:
        p90 = statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 1 else gaps[0]
        print(
            f"| {label} ({len(gaps)} gaps) | {statistics.median(gaps) * 1000:.1f} ms "
            f"| {p90 * 1000:.1f} ms | {max(gaps) * 1000:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
