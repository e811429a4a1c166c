"""Throughput of the runtime against mlx-lm itself, measured side by side in one run.

    python bench/bench_throughput.py [--quick] [--streams 1 8 32] [--tokens 64]

Rows (each a ratio against a baseline measured in this same invocation, same models):
1. single-stream decode tok/s: runtime read from its stdout (Python client, and the TS
   client when ts-client/dist is built) vs in-process `mlx_lm.stream_generate`;
2. per-token overhead of the runtime on a tiny model (tokens at > 1000/s);
3. aggregate tok/s at 1/8/32 concurrent streams: runtime vs `mlx_lm.server` on loopback,
   streaming, both with the same BLAS; prompts that share a prefix, then (at the largest
   count) distinct ones;
4. TTFT of a prompt sharing a 2k-token prefix with an earlier one: cached vs uncached;
5. speculative decoding with a draft model sharing the tokenizer, vs plain decoding;
6. idle RSS of the runtime with no model loaded.

Every process gets the same BLAS bridge the runtime uses (MLX's CPU wheel ships a
reference BLAS; see docs/PERFORMANCE.md), so the rows compare serving, not BLAS builds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# From a source checkout without `pip install .`, the runtime children import the package
# from runtime/ too.
if subprocess.run([sys.executable, "-c", "import mlx_serving"], capture_output=True).returncode:
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "runtime"), os.environ.get("PYTHONPATH")])
    )
sys.path.insert(0, str(REPO_ROOT / "runtime"))

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

# One preamble for every child python: the bridge must load before mlx.core does.
PRELOAD = (
    "import sys; sys.path.insert(0, {runtime!r})\n"
    "from mlx_serving.native_bridge.blas import preload_optimized_blas\n"
    "preload_optimized_blas('auto')\n"
).format(runtime=str(REPO_ROOT / "runtime"))
# Between one side's aggregate and the other's: what the first does after its streams
# end (the runtime gives freed memory back once idle) must not land on the second.
AGGREGATE_SETTLE_S = 1.0
PROMPT = "def parse_args(argv):\n    parser = argparse.ArgumentParser()"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prefix", type=int, default=2000, help="shared prefix tokens")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser.parse_args(argv)


# -- models ---------------------------------------------------------------------------------


def make_models(root: Path, hidden: int, layers: int) -> dict[str, Path]:
    """The benchmark model, a tiny one for overhead, and a draft that predicts the target
    well: the target is the draft plus layers whose outputs are scaled near zero, so both
    cost what their sizes say while the draft agrees with most of the target's tokens."""
    code = PRELOAD + (
        "from mlx_serving.testing.make_model import make_model\n"
        "from bench_models import make_speculative_pair\n"
        f"make_model({str(root / 'tiny')!r}, 'llama', hidden_size=64, num_layers=2, seed=3)\n"
        f"make_model({str(root / 'main')!r}, 'llama', hidden_size={hidden}, "
        f"num_layers={layers}, seed=1)\n"
        f"make_speculative_pair({str(root)!r}, hidden={hidden}, layers={layers})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "bench")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return {
        "tiny": root / "tiny",
        "main": root / "main",
        "target": root / "spec-target",
        "draft": root / "spec-draft",
    }


# -- in-process mlx-lm ----------------------------------------------------------------------


class LineTimer:
    """A child process that keeps its model loaded and times one stream per line it reads
    (that stream's max_tokens), writing back its decode tok/s: so its streams can alternate
    with the runtime's in the same minutes. On a host whose speed drifts between minutes,
    figures taken a phase apart compare the drift."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def rate(self, tokens: int) -> float:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{tokens}\n")
        self._proc.stdin.flush()
        return float(self._proc.stdout.readline())

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=60)


def inprocess_decoder(model_dir: Path) -> LineTimer:
    """`mlx_lm.stream_generate`, timed per token like a client would."""
    code = PRELOAD + (
        "import json, sys, time; from mlx_lm import load, stream_generate\n"
        f"m, t = load({str(model_dir)!r})\n"
        "for line in sys.stdin:\n"
        "    stamps = []\n"
        f"    for r in stream_generate(m, t, {PROMPT!r}, max_tokens=int(line)):\n"
        "        stamps.append(time.perf_counter())\n"
        "    print(json.dumps((len(stamps) - 1) / (stamps[-1] - stamps[0])), flush=True)\n"
    )
    return LineTimer([sys.executable, "-c", code])


def alternated_medians(
    timers: Mapping[str, Callable[[int], float]], rounds: int, settle_s: float = 0.0
) -> dict[str, float]:
    """Each timer's median rate over `rounds` rounds that run every timer once (given the
    round's number), the order rotating, `settle_s` after each; a warm-up round (0) first,
    not counted. Both sides sample
    the same minutes, and a median is not one lucky window (a best-of was: its ratios moved
    0.96-1.03x here)."""
    names = list(timers)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            rate = timers[name](round_)
            time.sleep(settle_s)
            if round_:
                rates[name].append(rate)
    return {name: statistics.median(values) for name, values in rates.items()}


def inprocess_batch_decode(model_dir: Path, tokens: int, repeat: int) -> float:
    """The same, through mlx-lm's BatchGenerator with one sequence: the engine the runtime
    runs, so runtime vs this row is the cost of serving, not of batching."""
    code = PRELOAD + (
        "import json, time; from mlx_lm import load; from mlx_lm.generate import BatchGenerator\n"
        f"m, t = load({str(model_dir)!r}); rates = []\n"
        f"prompt = t.encode({PROMPT!r})\n"
        f"for _ in range({repeat + 1}):\n"
        "    g = BatchGenerator(m, prefill_step_size=512); stamps = []\n"
        f"    g.insert([prompt], max_tokens=[{tokens}])\n"
        "    done = False\n"
        "    while not done:\n"
        "        for r in g.next()[1]:\n"
        "            stamps.append(time.perf_counter()); done = r.finish_reason is not None\n"
        "    g.close(); rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))\n"
        "import statistics; print(json.dumps(statistics.median(rates[1:])))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return float(json.loads(out.stdout.decode().strip().splitlines()[-1]))


# -- the runtime ----------------------------------------------------------------------------


def runtime_decode(client: RuntimeClient, model_id: str, tokens: int) -> float:
    """Decode tok/s of one stream, read from the runtime's stdout."""
    stamps = []
    stream_id = client.call(
        "generate",
        {"model_id": model_id, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0},
    )["stream_id"]
    for frame in client.stream_events(stream_id):
        if frame["method"] == "stream.chunk":
            stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def variants(streams: int, round_: int) -> list[str]:
    """Prompts that share all but their last few tokens (the prompt cache serves most)."""
    return [f"{PROMPT} # variant {round_}.{i}" for i in range(streams)]


def distinct(streams: int, seed: int) -> list[str]:
    """Prompts of 20 random words: nothing shared, each prefilled from scratch."""
    words = "alpha beta gamma delta river stone cloud paper mouse lamp window green".split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(20)) for _ in range(streams)]


def runtime_aggregate(
    client: RuntimeClient, model_id: str, prompts: list[str], tokens: int
) -> float:
    started = time.perf_counter()
    ids = [
        client.call(
            "generate",
            {"model_id": model_id, "prompt": prompt, "max_tokens": tokens, "temperature": 0},
        )["stream_id"]
        for prompt in prompts
    ]
    total = sum(
        client.collect(stream_id, timeout=600)["stats"]["tokens_generated"] for stream_id in ids
    )
    return total / (time.perf_counter() - started)


def aggregate_medians(
    server: MlxLmServer,
    client: RuntimeClient,
    prompts: Callable[[int], list[str]],
    tokens: int,
    rounds: int,
) -> dict[str, float]:
    """Both sides' aggregate tok/s over alternated rounds (a warm-up round first), each
    round's prompts (`prompts(round)`) new and the same to both sides."""
    return alternated_medians(
        {
            "server": lambda round_: server.aggregate(prompts(round_), tokens),
            "runtime": lambda round_: runtime_aggregate(client, "main", prompts(round_), tokens),
        },
        rounds,
        settle_s=AGGREGATE_SETTLE_S,
    )


def runtime_ttft(
    client: RuntimeClient, model_id: str, prefix: list[int], suffix: list[int]
) -> float:
    started = time.perf_counter()
    stream_id = client.call(
        "generate",
        {"model_id": model_id, "prompt_tokens": prefix + suffix, "max_tokens": 2, "temperature": 0},
    )["stream_id"]
    first = None
    for frame in client.stream_events(stream_id, timeout=600):
        if frame["method"] == "stream.chunk" and first is None:
            first = time.perf_counter()
    assert first is not None
    return first - started


def runtime_speculative(client: RuntimeClient, tokens: int) -> tuple[float, float, float]:
    """(plain tok/s, speculative tok/s, acceptance) of the target, greedy."""

    def run(extra: dict[str, Any]) -> dict[str, Any]:
        return client.generate(
            {
                "model_id": "target",
                "prompt": PROMPT,
                "max_tokens": tokens,
                "temperature": 0,
                **extra,
            },
            timeout=600,
        )

    run({})  # warm-up
    plain = run({})
    spec = run({"draft_model": "draft", "num_draft_tokens": 4})
    assert spec["tokens"] == plain["tokens"], "speculative output differs from plain greedy"
    accepted = spec["stats"]["draft_tokens_accepted"] / max(spec["stats"]["tokens_generated"], 1)
    return plain["stats"]["tokens_per_second"], spec["stats"]["tokens_per_second"], accepted


def idle_rss() -> int:
    with RuntimeClient() as client:
        time.sleep(0.5)
        return int(client.call("runtime/info")["memory"]["rss"])


# -- the TS client --------------------------------------------------------------------------


def ts_available() -> bool:
    built = (REPO_ROOT / "ts-client" / "dist" / "index.js").exists()
    return built and shutil.which("node") is not None


def ts_decoder(model_dir: Path) -> LineTimer:
    """The TS client's streams (bench/ts_stream.mjs, with a runtime of its own)."""
    script = REPO_ROOT / "bench" / "ts_stream.mjs"
    env = {**os.environ, "MLX_SERVING_PYTHON": sys.executable}
    return LineTimer(["node", str(script), str(model_dir), PROMPT], env)


# -- mlx_lm.server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlxLmServer:
    def __init__(self, model_dir: Path, parallel: int) -> None:
        self.port = free_port()
        code = PRELOAD + "import runpy; runpy.run_module('mlx_lm.server', run_name='__main__')"
        self.process = subprocess.Popen(
            [
                sys.executable, "-c", code,
                "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port),
                "--decode-concurrency", str(max(parallel, 1)),
                "--prompt-concurrency", str(max(min(parallel, 8), 1)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlx_lm.server did not start")

    def stream(self, prompt: str, tokens: int) -> int:
        body = json.dumps(
            {
                "prompt": prompt,
                "max_tokens": tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        for attempt in range(5):
            try:
                return self._stream_once(request)
            except ConnectionResetError:
                # ThreadingHTTPServer's listen backlog is 5: a burst of 32 connects is reset.
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError("mlx_lm.server kept resetting the connection")

    def _stream_once(self, request: urllib.request.Request) -> int:
        chunks, usage = 0, None
        with urllib.request.urlopen(request, timeout=600) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens")
                if event.get("choices") and event["choices"][0].get("text"):
                    chunks += 1
        return int(usage) if usage else chunks

    def aggregate(self, prompts: list[str], tokens: int) -> float:
        counts = [0] * len(prompts)

        def run(i: int) -> None:
            counts[i] = self.stream(prompts[i], tokens)

        self.stream(PROMPT, 4)  # warm-up
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - started)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# -- the table ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.tokens, args.hidden, args.layers, args.prefix = 24, 256, 4, 600
        args.streams = [1, 4]
    rounds = 1 if args.quick else 9
    aggregate_rounds = 1 if args.quick else 3
    rows: list[tuple[str, str, float, float, str]] = []

    def row(name: str, unit: str, value: float, baseline: float, target: str) -> None:
        rows.append((name, unit, value, baseline, target))
        print(f"  {name}: {value:.4g} vs {baseline:.4g} {unit}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mlx-serving-bench-") as tmp:
        models = make_models(Path(tmp), args.hidden, args.layers)

        print("single stream", file=sys.stderr)
        tokens = args.tokens * 2
        with ExitStack() as stack:
            client = stack.enter_context(RuntimeClient())
            client.call("load_model", {"model_id": "main", "local_path": str(models["main"])})
            client.call("load_model", {"model_id": "tiny", "local_path": str(models["tiny"])})
            base = stack.enter_context(closing(inprocess_decoder(models["main"])))
            timers: dict[str, Callable[[int], float]] = {
                "base": lambda _: base.rate(tokens),
                "python": lambda _: runtime_decode(client, "main", tokens),
            }
            if ts_available():
                ts = stack.enter_context(closing(ts_decoder(models["main"])))
                timers["ts"] = lambda _: ts.rate(tokens)
            median = alternated_medians(timers, rounds)
            row(
                "decode, 1 stream (Python client)",
                "tok/s",
                median["python"],
                median["base"],
                ">= 0.98",
            )
            if "ts" in median:
                row(
                    "decode, 1 stream (TS client)", "tok/s", median["ts"], median["base"], ">= 0.98"
                )

            print("per-token overhead", file=sys.stderr)
            tiny = stack.enter_context(closing(inprocess_decoder(models["tiny"])))
            median = alternated_medians(
                {
                    "base": lambda _: tiny.rate(256),
                    "runtime": lambda _: runtime_decode(client, "tiny", 256),
                },
                # A stream here takes ~0.2 s, and one OS hiccup moves its rate by percents.
                rounds * 3,
            )
            tiny_base, tiny_runtime = median["base"], median["runtime"]
            tiny_batch = inprocess_batch_decode(models["tiny"], 256, rounds)
            row("decode, tiny model", "tok/s", tiny_runtime, tiny_base, ">= 0.98")
            # Why a lone stream bypasses the batch (engine/solo_decoder.py).
            row("  in-process BatchGenerator, tiny model", "tok/s", tiny_batch, tiny_base, "")
            overhead_us = (1 / tiny_runtime - 1 / tiny_base) * 1e6
            rows.append(("  runtime cost per token", "µs", overhead_us, 0.0, "< 30 µs"))

            print("shared-prefix TTFT", file=sys.stderr)
            prefix = [10 + (i * 7) % 1000 for i in range(args.prefix)]
            uncached = runtime_ttft(client, "main", prefix, [5, 6, 7])
            cached = runtime_ttft(client, "main", prefix, [8, 9])
            row(f"TTFT, {args.prefix}-token shared prefix", "s", cached, uncached, "<= 0.2")

        print("aggregate", file=sys.stderr)
        server = MlxLmServer(models["main"], max(args.streams))
        try:
            with RuntimeClient() as client:
                client.call("load_model", {"model_id": "main", "local_path": str(models["main"])})
                for n in args.streams:
                    median = aggregate_medians(
                        server, client, partial(variants, n), args.tokens, aggregate_rounds
                    )
                    row(
                        f"aggregate, {n} streams (vs mlx_lm.server)",
                        "tok/s",
                        median["runtime"],
                        median["server"],
                        ">= 1.0",
                    )
                # Apps' users send unrelated prompts: nothing for a prompt cache to serve.
                n = max(args.streams)
                median = aggregate_medians(
                    server, client, partial(distinct, n), args.tokens, aggregate_rounds
                )
                row(
                    f"aggregate, {n} distinct prompts (vs mlx_lm.server)",
                    "tok/s",
                    median["runtime"],
                    median["server"],
                    ">= 1.0",
                )
        finally:
            server.close()

        print("speculative", file=sys.stderr)
        with RuntimeClient() as client:
            client.call("load_model", {"model_id": "target", "local_path": str(models["target"])})
            client.call(
                "load_model",
                {"model_id": "draft", "local_path": str(models["draft"]), "draft": True},
            )
            plain, spec, accepted = runtime_speculative(client, args.tokens * 2)
            row(f"speculative decode (draft accepts {accepted:.0%})", "tok/s", spec, plain, "> 1.0")

        rss = idle_rss()
        rows.append(("idle RSS, no model", "MiB", rss / 2**20, 0.0, "report"))

    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def print_table(rows: list[tuple[str, str, float, float, str]]) -> None:
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print("| measurement | runtime | baseline | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for name, unit, value, baseline, target in rows:
        if baseline:
            ratio = value / baseline
            print(
                f"| {name} | {value:.4g} {unit} | {baseline:.4g} {unit} | {ratio:.3f}× | {target} |"
            )
        else:
            print(f"| {name} | {value:.4g} {unit} | | | {target} |")


if __name__ == "__main__":
    raise SystemExit(main())
