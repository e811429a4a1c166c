"""The memory budget through the real runtime process: LRU eviction around a pinned model,
reloads on demand, the refusal when nothing can be evicted, KV admission of many streams
under a small budget with the process's peak RSS, and keep-alive expiry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlx_serving.testing import make_model
from mlx_serving.testing.client import RuntimeClient

# What one stream of the KV test holds, as the runtime charges it (engine/memory/kv.py):
# prompt + max_tokens within one 256-token cache step, 4 layers x 4 KV heads x 32 dims x
# key and value x float32, twice for the batch.
KV_TOKENS_PER_STREAM = 256
KV_BYTES_PER_TOKEN = 4 * 4 * 32 * 2 * 4
KV_CHARGE = KV_TOKENS_PER_STREAM * KV_BYTES_PER_TOKEN * 2


def _weights(model_dir: Path) -> int:
    """Bytes of tensor data in the model's safetensors file (its size less the header)."""
    path = model_dir / "model.safetensors"
    header = int.from_bytes(path.read_bytes()[:8], "little")
    return path.stat().st_size - 8 - header


def _status(pid: int, key: str) -> int:
    """A figure of /proc/PID/status in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _models(client: RuntimeClient) -> dict[str, dict[str, Any]]:
    return {m["model_id"]: m for m in client.call("runtime/state")["loaded_models"]}


def _unloaded_events(client: RuntimeClient) -> list[dict[str, Any]]:
    return [
        n["params"]
        for n in list(client.notifications)
        if n["method"] == "runtime.event" and n["params"]["event"] == "model_unloaded"
    ]


@pytest.fixture(scope="module")
def kv_model_dir(model_root: Path) -> Path:
    """Big enough that KV caches and weights stand out of the process's own RSS: 11.5 MB
    of weights, 4 KiB of KV cache per token."""
    return make_model(model_root / "kv-llama", "llama", hidden_size=256, num_layers=4, seed=5)


def test_lru_eviction_spares_the_pinned_model_and_reloads_on_demand(llama_dir: Path) -> None:
    weights = _weights(llama_dir)
    env = {
        # About two and a half models; without prompt caches a model costs its weights.
        "MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES": str(int(2.5 * weights)),
        "MLX_SERVING_SCHEDULER__PROMPT_CACHE_BYTES": "0",
    }
    greedy = {"prompt": "The memory of the sea", "max_tokens": 12, "temperature": 0}
    with RuntimeClient(env=env) as client:
        path = str(llama_dir)
        client.call("load_model", {"model_id": "p", "local_path": path, "pin": True})
        client.call("load_model", {"model_id": "a", "local_path": path})
        before = client.generate({"model_id": "a", **greedy})
        assert before["event"]["finish_reason"] == "length"
        assert not _unloaded_events(client)

        client.call("load_model", {"model_id": "b", "local_path": path})
        client.call("load_model", {"model_id": "c", "local_path": path})
        evicted = _unloaded_events(client)
        assert [(e["model_id"], e["reason"]) for e in evicted] == [
            ("a", "evicted"),
            ("b", "evicted"),
        ]
        assert "loading 'b'" in evicted[0]["detail"] and evicted[0]["bytes"] == weights
        models = _models(client)
        assert {m: s["resident"] for m, s in models.items()} == {
            "p": True,
            "a": False,
            "b": False,
            "c": True,
        }
        assert models["p"]["pinned"] and models["a"]["state"] == "evicted"
        assert models["c"]["bytes"] == weights
        memory = client.call("runtime/state")["memory"]
        assert memory["budget_bytes"] == int(2.5 * weights)
        assert memory["used_bytes"] == 2 * weights and memory["kv_reserved_bytes"] == 0

        # The evicted model comes back for a generate, with its load progress, and answers
        # with the same greedy tokens; the least recently used unpinned model makes room.
        progress_before = sum(1 for n in client.notifications if n["method"] == "runtime.progress")
        after = client.generate({"model_id": "a", **greedy})
        assert after["tokens"] == before["tokens"]
        reloads = [
            n["params"]
            for n in client.notifications[progress_before:]
            if n["method"] == "runtime.progress"
        ]
        assert reloads and reloads[-1]["model_id"] == "a" and reloads[-1]["stage"] == "ready"
        assert _unloaded_events(client)[-1]["model_id"] == "c"
        # So does a tokenize.
        tokens = client.call("tokenize", {"model_id": "b", "text": "hello"})["tokens"]
        assert tokens
        models = _models(client)
        assert models["p"]["resident"] and models["b"]["resident"]
        assert not models["a"]["resident"]

        # Pinned models are never evicted: with two of them nothing can make room, and the
        # load is refused naming the budget and what holds it, evicting nothing.
        client.call("load_model", {"model_id": "b", "local_path": path, "pin": True})
        refused = client.request("load_model", {"model_id": "d", "local_path": path})
        error = refused["error"]
        assert error["code"] == -32001 and "memory budget" in error["message"]
        data = error["data"]
        assert data["budget_bytes"] == int(2.5 * weights) and data["needed_bytes"] == weights
        holders = {h["model_id"]: h for h in data["holders"] if h["kind"] == "model"}
        assert set(holders) == {"p", "b"} and all(h["pinned"] for h in holders.values())
        assert {m for m, s in _models(client).items() if s["resident"]} == {"p", "b"}

        # unload_model forgets a model for good: no longer listed, not loaded on demand.
        client.call("unload_model", {"model_id": "a"})
        assert "a" not in _models(client)
        gone = client.request("generate", {"model_id": "a", "prompt": "x", "max_tokens": 2})
        assert gone["error"]["code"] == -32005


def test_max_loaded_models_still_bounds_resident_models(llama_dir: Path) -> None:
    env = {
        "MLX_SERVING_MODELS__MAX_LOADED_MODELS": "2",
        "MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES": str(10 * _weights(llama_dir)),
    }
    with RuntimeClient(env=env) as client:
        for model_id in ("a", "b"):
            client.call("load_model", {"model_id": model_id, "local_path": str(llama_dir)})
        refused = client.request("load_model", {"model_id": "c", "local_path": str(llama_dir)})
        assert "models.max_loaded_models" in refused["error"]["message"]
        assert not _unloaded_events(client)  # a count is never made room for by eviction


def test_streams_whose_kv_would_need_three_budgets_complete_or_are_refused(
    kv_model_dir: Path,
) -> None:
    streams = 64
    weights = _weights(kv_model_dir)
    # Room for a third of the streams' KV beside the weights and the prompt cache's tenth.
    budget = int((weights + streams * KV_CHARGE / 3) / 0.9)
    env = {
        "MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES": str(budget),
        # Shorter than two waves of streams take: the last wave cannot all wait it out.
        "MLX_SERVING_SCHEDULER__ADMISSION_TIMEOUT_S": "0.5",
    }
    params = {"model_id": "m", "max_tokens": 200, "temperature": 0}
    with RuntimeClient(env=env) as client:
        pid = client.process.pid
        client.call("load_model", {"model_id": "m", "local_path": str(kv_model_dir)})
        warm = client.generate({**params, "prompt": "warm up " * 10})
        assert warm["stats"]["prompt_tokens"] + 200 <= KV_TOKENS_PER_STREAM
        time.sleep(0.5)  # the warm-up stream's release settles
        idle_rss = _status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on

        ids = [
            client.send("generate", {**params, "prompt": f"stream {i} " + "word " * 20})
            for i in range(streams)
        ]
        started, refused = [], []
        for request_id in ids:
            answer = client.response(request_id, timeout=120)
            if "error" in answer:
                refused.append(answer["error"])
            else:
                started.append(answer["result"]["stream_id"])
        for stream_id in started:
            result = client.collect(stream_id, timeout=120)
            assert result["event"]["event"] == "completed", result["event"]
            assert result["stats"]["prompt_tokens"] + 200 <= KV_TOKENS_PER_STREAM
        peak = _status(pid, "VmHWM")

        print(f"[kv budget] {len(started)} started, {len(refused)} refused")
        assert started and refused, (len(started), len(refused))
        for error in refused:
            assert error["code"] == -32006, error
            assert error["data"]["retry_after_ms"] > 0
            assert "memory budget" in error["message"]
        memory = client.call("runtime/state")["memory"]
        assert memory["kv_reserved_bytes"] == 0 and memory["streams_waiting"] == 0
        # The weights are in the idle figure and in the budget: count them once.
        assert peak <= idle_rss - weights + 1.1 * budget, (peak, idle_rss, budget)


def test_a_model_unused_past_keep_alive_is_evicted_and_rss_falls(kv_model_dir: Path) -> None:
    weights = _weights(kv_model_dir)
    keep_alive = 1.0
    with RuntimeClient() as client:
        pid = client.process.pid
        client.call(
            "load_model",
            {"model_id": "m", "local_path": str(kv_model_dir), "keep_alive_s": keep_alive},
        )
        assert _models(client)["m"]["keep_alive_s"] == keep_alive
        client.generate({"model_id": "m", "prompt": "hello there", "max_tokens": 8})
        used = time.monotonic()
        loaded_rss = _status(pid, "VmRSS")

        fell = None
        while time.monotonic() - used < keep_alive + 1.0:
            if loaded_rss - _status(pid, "VmRSS") >= 0.8 * weights:
                fell = time.monotonic() - used
                break
            time.sleep(0.02)
        assert fell is not None, (loaded_rss, _status(pid, "VmRSS"))
        assert fell >= keep_alive
        (event,) = _unloaded_events(client)
        assert event["reason"] == "expired" and event["model_id"] == "m"
        assert not _models(client)["m"]["resident"]
        # Expired is not forgotten: the next request loads it again.
        assert "text" in client.call("detokenize", {"model_id": "m", "tokens": [5, 6]})
        assert _models(client)["m"]["resident"]
