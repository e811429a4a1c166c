"""The memory budget through the real runtime: what many streams cost with and without KV
admission, what an eviction and a reload on demand cost, and how fast keep-alive gives
memory back.

    python bench/bench_memory.py [--streams 64] [--hidden 256 --layers 4] [--max-tokens 200]

Each scenario runs in a fresh runtime process; resident sizes come from /proc/PID/status
(VmHWM reset through /proc/PID/clear_refs), so this runs on Linux. Figures: docs/MEMORY.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from mlx_serving.testing import make_model
from mlx_serving.testing.client import RuntimeClient

MB = 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--admission-timeout", type=float, default=2.0)
    parser.add_argument("--keep-alive", type=float, default=1.0)
    return parser.parse_args(argv)


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def weight_bytes(model_dir: Path) -> int:
    path = model_dir / "model.safetensors"
    return path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[:8], "little")


def gauge(client: RuntimeClient, name: str) -> float:
    for family in client.call("runtime/metrics")["gauges"]:
        if family["name"] == name:
            return float(family["samples"][0]["value"])
    raise KeyError(name)


def streams_scenario(
    model_dir: Path, args: argparse.Namespace, budget: int | None
) -> dict[str, Any]:
    """`args.streams` streams sent at once; each completes or is refused."""
    env = {"MLX_SERVING_SCHEDULER__ADMISSION_TIMEOUT_S": str(args.admission_timeout)}
    if budget is not None:
        env["MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES"] = str(budget)
    params = {"model_id": "m", "max_tokens": args.max_tokens, "temperature": 0}
    with RuntimeClient(env=env) as client:
        pid = client.process.pid
        client.call("load_model", {"model_id": "m", "local_path": str(model_dir)})
        client.generate({**params, "prompt": "warm up " * 10})
        time.sleep(0.5)
        idle = status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        started = time.perf_counter()
        ids = [
            client.send("generate", {**params, "prompt": f"stream {i} " + "word " * 20})
            for i in range(args.streams)
        ]
        answers = [client.response(request_id, timeout=300) for request_id in ids]
        stream_ids = [a["result"]["stream_id"] for a in answers if "result" in a]
        refused = [a["error"] for a in answers if "error" in a]
        tokens = sum(len(client.collect(s, timeout=300)["tokens"]) for s in stream_ids)
        elapsed = time.perf_counter() - started
        return {
            "budget": budget,
            "idle_rss": idle,
            "peak_rss": status(pid, "VmHWM"),
            "mlx_peak": gauge(client, "mlx_serving_mlx_peak_memory_bytes"),
            "completed": len(stream_ids),
            "refused": len(refused),
            "retry_after_ms": sorted({e["data"]["retry_after_ms"] for e in refused}),
            "tokens_per_s": tokens / elapsed,
            "seconds": elapsed,
        }


def reload_scenario(model_dir: Path) -> dict[str, float]:
    """Load time, and the first token of a generate on a resident vs an evicted model."""
    env = {"MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES": str(int(1.5 * weight_bytes(model_dir)))}
    env["MLX_SERVING_SCHEDULER__PROMPT_CACHE_BYTES"] = "0"
    params = {"prompt": "hello there", "max_tokens": 1, "temperature": 0}
    with RuntimeClient(env=env) as client:
        started = time.perf_counter()
        client.call("load_model", {"model_id": "a", "local_path": str(model_dir)})
        load = time.perf_counter() - started
        client.generate({"model_id": "a", **params})
        started = time.perf_counter()
        client.generate({"model_id": "a", **params})
        resident = time.perf_counter() - started
        client.call("load_model", {"model_id": "b", "local_path": str(model_dir)})  # evicts a
        started = time.perf_counter()
        client.generate({"model_id": "a", **params})  # evicts b, loads a again
        evicted = time.perf_counter() - started
    return {"load_s": load, "resident_first_token_s": resident, "evicted_first_token_s": evicted}


def keep_alive_scenario(model_dir: Path, keep_alive: float) -> dict[str, float]:
    """From a model's last use to the resident size falling by its weights."""
    weights = weight_bytes(model_dir)
    with RuntimeClient() as client:
        pid = client.process.pid
        load = {"model_id": "m", "local_path": str(model_dir), "keep_alive_s": keep_alive}
        client.call("load_model", load)
        client.generate({"model_id": "m", "prompt": "hello", "max_tokens": 8})
        used = time.monotonic()
        loaded = status(pid, "VmRSS")
        while loaded - status(pid, "VmRSS") < 0.8 * weights:
            if time.monotonic() - used > keep_alive + 10:
                raise TimeoutError("the resident size did not fall")
            time.sleep(0.01)
        fell = time.monotonic() - used
        return {"rss_fell_after_s": fell, "freed": loaded - status(pid, "VmRSS")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(
            Path(tmp) / "model", "llama", hidden_size=args.hidden, num_layers=args.layers, seed=5
        )
        weights = weight_bytes(model_dir)
        heads = max(args.hidden // 32, 2)
        per_token = args.layers * max(heads // 2, 1) * 32 * 2 * 4
        charged = 256 * per_token * 2  # one cache step, twice for the batch (kv.py)
        budget = int((weights + args.streams * charged / 3) / 0.9)
        print(f"model: {weights / MB:.1f} MB of weights, {per_token} B of KV per token")
        print(f"{args.streams} streams of <=256 tokens, charged {charged / MB:.2f} MB each")
        print(f"budget: {budget / MB:.1f} MB (the streams' KV would need 3x the room left)\n")
        print("| budget | completed | refused | retry_after_ms | peak RSS - idle | bound | "
              "MLX peak | tok/s | s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for run_budget in (budget, None):
            r = streams_scenario(model_dir, args, run_budget)
            over_idle = (r["peak_rss"] - r["idle_rss"]) / MB
            bound = (1.1 * run_budget - weights) / MB if run_budget else float("nan")
            hint = f"{min(r['retry_after_ms'])}-{max(r['retry_after_ms'])}" if r["refused"] else "-"
            label = f"{run_budget / MB:.1f} MB" if run_budget else "default (0.75 RAM)"
            print(
                f"| {label} | {r['completed']} | {r['refused']} | {hint} | {over_idle:.1f} MB | "
                f"{bound:.1f} MB | {r['mlx_peak'] / MB:.1f} MB | {r['tokens_per_s']:.0f} | "
                f"{r['seconds']:.1f} |"
            )
        reload = reload_scenario(model_dir)
        print(
            f"\nload {reload['load_s'] * 1000:.0f} ms; first token on a resident model "
            f"{reload['resident_first_token_s'] * 1000:.0f} ms, on an evicted one "
            f"{reload['evicted_first_token_s'] * 1000:.0f} ms (eviction + reload included)"
        )
        expiry = keep_alive_scenario(model_dir, args.keep_alive)
        print(
            f"keep_alive_s {args.keep_alive:g}: resident size fell by "
            f"{expiry['freed'] / MB:.1f} MB {expiry['rss_fell_after_s']:.2f} s after last use"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
