"""The distributed runtime on this machine, measured in one run.

    python bench/bench_distributed.py [--quick] [--tokens 256] [--streams 1 8]

Rows:
1. launcher: how late a stream of stdout lines (one per 10 ms, like tokens) reaches the
   client through `mlx.launch`'s forwarding loop, against a direct pipe, which is the path
   the runtime takes (the process the client spawns is rank 0 and writes its own stdout);
2. tok/s: one model served by one process, and by 2 ranks over loopback (ring backend)
   with pipeline and with tensor parallelism, at 1 and 8 concurrent greedy streams, with
   the median gap between two tokens of one stream as the client sees them;
3. the same decode in mlx-lm alone (`BatchGenerator` over `sharded_load`, no runtime, no
   client): what the model's own collectives cost, apart from serving it in lockstep.

On one host both ranks share its cores and memory bandwidth, so row 2 measures what
lockstep costs (a broadcast per step and the ranks' own collectives), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if subprocess.run([sys.executable, "-c", "import mlx_serving"], capture_output=True).returncode:
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "runtime"), os.environ.get("PYTHONPATH")])
    )
sys.path.insert(0, str(REPO_ROOT / "runtime"))

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

EMITTER = """\
import sys, time
count, gap = int(sys.argv[1]), float(sys.argv[2])
for _ in range(count):
    time.sleep(gap)
    sys.stdout.write(f"{time.monotonic()}\\n")
    sys.stdout.flush()
"""
# mlx-lm alone: every rank runs this; rank 0 prints decode tok/s per stream count.
RAW = """\
import json, sys, time
sys.path.insert(0, {runtime!r})
from mlx_serving.native_bridge.blas import preload_optimized_blas
preload_optimized_blas("auto")
import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import greedy_sampler
from mlx_lm.utils import load, sharded_load
strategy, path, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = [int(n) for n in sys.argv[4:]]
if strategy == "1 process":
    rank, (model, tokenizer) = 0, load(path)
else:
    group = mx.distributed.init(strict=True, backend="ring")
    rank = group.rank()
    pipeline = group if strategy == "pipeline" else None
    tensor = group if strategy == "tensor" else None
    model, tokenizer = sharded_load(path, pipeline_group=pipeline, tensor_group=tensor)

def decode(streams, tokens):
    generator = BatchGenerator(model, completion_batch_size=32, prefill_batch_size=8)
    prompts = [tokenizer.encode(f"def parse_args(argv): #{{i}}") for i in range(streams)]
    generator.insert(prompts, max_tokens=[tokens] * streams, samplers=[greedy_sampler] * streams)
    done, started = 0, None
    while done < streams * tokens:
        _, responses = generator.next()
        if responses and started is None:
            started, first = time.perf_counter(), done
        done += len(responses)
    return (done - first) / (time.perf_counter() - started)

decode(1, 8)
rates = {{n: decode(n, tokens) for n in counts}}
if rank == 0:
    print(json.dumps(rates))
"""
PROMPTS = [
    "def parse_args(argv):",
    "The quick brown fox jumps over the lazy dog",
    "import os\nimport sys\n",
    "class Queue:\n    def __init__(self):",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--lines", type=int, default=300, help="lines in the launcher row")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser.parse_args(argv)


# -- row 1: the launcher's stdout path ------------------------------------------------------


def line_delays(command: list[str]) -> list[float]:
    """Seconds between a line's write and its arrival, for every line `command` prints.
    Both ends read CLOCK_MONOTONIC, which is one clock for every process of a host. The
    client keeps stdin open and silent, as one waiting for tokens does."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    delays = []
    for raw in process.stdout:
        arrived = time.monotonic()
        try:
            delays.append(arrived - float(raw))
        except ValueError:
            continue  # a launcher's own line
    assert process.stdin is not None
    process.stdin.close()
    process.wait(30)
    return delays


def launcher_rows(lines: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as scratch:
        emitter = Path(scratch) / "emit.py"
        emitter.write_text(EMITTER)
        args = [str(emitter), str(lines), "0.01"]
        launch = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
        paths = {
            "direct pipe (the runtime's path)": [sys.executable, *args],
            "mlx.launch --hosts 127.0.0.1": [
                *launch,
                "--hosts",
                "127.0.0.1",
                "--",
                sys.executable,
                *args,
            ],
        }
        rows = []
        for name, command in paths.items():
            delays = sorted(line_delays(command))
            rows.append(
                {
                    "path": name,
                    "lines": len(delays),
                    "p50_ms": 1000 * statistics.median(delays),
                    "p95_ms": 1000 * delays[int(0.95 * (len(delays) - 1))],
                    "max_ms": 1000 * delays[-1],
                }
            )
    return rows


# -- row 2: throughput -----------------------------------------------------------------------


def free_port_pair() -> int:
    for _ in range(50):
        with closing(socket.socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with closing(socket.socket()) as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def timed_streams(
    client: RuntimeClient, model_id: str, streams: int, tokens: int
) -> dict[str, Any]:
    """Start `streams` greedy streams together; aggregate tok/s from the first request to
    the last final event, and the median gap between consecutive chunks of one stream."""
    arrivals: dict[str, list[float]] = {}

    def collect(stream_id: str) -> None:
        times = arrivals.setdefault(stream_id, [])
        for frame in client.stream_events(stream_id, timeout=600):
            if frame["method"] == "stream.chunk":
                params = frame["params"]
                count = len(params["tokens"]) if params.get("is_batch") else 1
                times.extend([time.monotonic()] * count)

    started = time.monotonic()
    ids = [
        client.call(
            "generate",
            {
                "model_id": model_id,
                "prompt": PROMPTS[i % len(PROMPTS)] + f" #{i}",
                "max_tokens": tokens,
                "temperature": 0,
            },
        )["stream_id"]
        for i in range(streams)
    ]
    readers = [threading.Thread(target=collect, args=(s,)) for s in ids]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    elapsed = time.monotonic() - started
    total = sum(len(times) for times in arrivals.values())
    gaps = [b - a for times in arrivals.values() for a, b in zip(times, times[1:], strict=False)]
    return {
        "tok_s": total / elapsed,
        "gap_p50_ms": 1000 * statistics.median(gaps) if gaps else 0.0,
        "tokens": total,
    }


def throughput_rows(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from mlx_serving.testing import make_model

    model = make_model(root / "model", "qwen2", hidden_size=args.hidden, num_layers=args.layers)
    hostfile = root / "hosts.json"
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    hostfile.write_text(json.dumps({"backend": "ring", "hosts": [local, local]}))
    setups: list[tuple[str, list[str], dict[str, Any] | None]] = [
        ("1 process", [], None),
        ("2 ranks, pipeline", ["--hostfile", str(hostfile)], {"strategy": "pipeline"}),
        ("2 ranks, tensor", ["--hostfile", str(hostfile)], {"strategy": "tensor"}),
    ]
    rows = []
    for name, runtime_args, distributed in setups:
        env = {
            "MLX_SERVING_DISTRIBUTED__PORT": str(free_port_pair()),
            "MLX_SERVING_CACHE_DIR": str(root / "cache"),
        }
        with RuntimeClient(args=runtime_args, env=env) as client:
            params: dict[str, Any] = {"model_id": "m", "local_path": str(model)}
            if distributed:
                params["distributed"] = distributed
            client.call("load_model", params, timeout=300)
            timed_streams(client, "m", 1, 8)  # warm-up
            for streams in args.streams:
                row = timed_streams(client, "m", streams, args.tokens)
                rows.append({"setup": name, "streams": streams, **row})
                print(f"  {name}, {streams} streams: {row['tok_s']:.1f} tok/s", flush=True)
    return rows


def raw_rows(root: Path, model: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Decode tok/s of mlx-lm alone (after the first token), one process and 2 ranks."""
    script = root / "raw.py"
    script.write_text(RAW.format(runtime=str(REPO_ROOT / "runtime")))
    weights = with_index(model)
    rows = []
    for setup in ("1 process", "pipeline", "tensor"):
        command = [sys.executable, str(script), setup, str(weights), str(args.tokens)]
        command += [str(n) for n in args.streams]
        if setup == "1 process":
            text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        else:
            ring = root / "ring.json"
            port = free_port_pair()
            ring.write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
            processes = [
                subprocess.Popen(
                    command,
                    env={**os.environ, "MLX_RANK": str(rank), "MLX_HOSTFILE": str(ring)},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for rank in range(2)
            ]
            text = "".join(process.communicate(timeout=600)[0] for process in processes)
        rates = json.loads(text.strip().splitlines()[-1])
        name = setup if setup == "1 process" else f"2 ranks, {setup}"
        for streams, rate in rates.items():
            rows.append({"setup": name, "streams": int(streams), "tok_s": rate})
            print(f"  mlx-lm alone, {name}, {streams} streams: {rate:.1f} tok/s", flush=True)
    return rows


def with_index(model: Path) -> Path:
    from mlx_serving.distributed.loading import with_weight_index

    return with_weight_index(model, model.parent / "indexed")


def machine() -> str:
    import mlx.core as mx

    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, mlx {mx.__version__}, "
        f"device {mx.default_device()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.tokens, args.streams, args.lines = 32, [1, 4], 100
        args.hidden, args.layers = 256, 4
    print(f"machine: {machine()}")
    print("launcher rows ...", flush=True)
    launch = launcher_rows(args.lines)
    print(f"tok/s rows (qwen2 hidden {args.hidden}, {args.layers} layers) ...", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        speed = throughput_rows(Path(scratch), args)
        print("mlx-lm alone ...", flush=True)
        raw = raw_rows(Path(scratch), Path(scratch) / "model", args)

    print("\n| stdout path | lines | p50 delay | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    for row in launch:
        print(
            f"| {row['path']} | {row['lines']} | {row['p50_ms']:.2f} ms | "
            f"{row['p95_ms']:.2f} ms | {row['max_ms']:.2f} ms |"
        )
    single = {row["streams"]: row["tok_s"] for row in speed if row["setup"] == "1 process"}
    alone = {(row["setup"], row["streams"]): row["tok_s"] for row in raw}
    print("\n| setup | streams | runtime tok/s | vs 1 process | median token gap | mlx-lm alone |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in speed:
        ratio = row["tok_s"] / single[row["streams"]]
        print(
            f"| {row['setup']} | {row['streams']} | {row['tok_s']:.1f} | {ratio:.2f}x | "
            f"{row['gap_p50_ms']:.1f} ms | {alone[(row['setup'], row['streams'])]:.1f} |"
        )
    if args.json:
        report = {"machine": machine(), "launcher": launch, "speed": speed, "mlx_lm": raw}
        args.json.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
