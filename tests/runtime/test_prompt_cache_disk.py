"""The prompt cache's disk tier through real runtime processes: a restart (or a crash)
keeps a served prefix, damaged block files are removed and never loaded, the folder stays
within its budget. Timing is bench/bench_disk_cache.py's job; these check correctness."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from mlx_serving.engine.kv_disk.block_file import read_metadata
from mlx_serving.testing.client import RuntimeClient

BLOCK = 256
PREFIX = [3 + (i * 37) % 997 for i in range(3000)]  # 11 full blocks and 184 tokens


def runtime(cache_dir: Path | str, disk_bytes: int = 1 << 30) -> RuntimeClient:
    return RuntimeClient(
        env={
            "MLX_SERVING_SCHEDULER__PROMPT_CACHE_DIR": str(cache_dir),
            "MLX_SERVING_SCHEDULER__PROMPT_CACHE_DISK_BYTES": str(disk_bytes),
        }
    )


def greedy(client: RuntimeClient, prompt: list[int], max_tokens: int = 12) -> dict[str, Any]:
    return client.generate(
        {
            "model_id": "llama",
            "prompt_tokens": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
    )


def load(client: RuntimeClient, model_dir: Path) -> None:
    client.call("load_model", {"model_id": "llama", "local_path": str(model_dir)})


def block_files(cache_dir: Path) -> list[Path]:
    """The block files in chain order (each one's parent first)."""
    by_parent = {read_metadata(p)["parent"]: p for p in cache_dir.glob("*/*.safetensors")}
    chain, parent = [], ""
    while parent in by_parent:
        chain.append(by_parent[parent])
        parent = chain[-1].name.split(".")[0]
    return chain


def cold_tokens(model_dir: Path, prompt: list[int], tmp_path: Path) -> list[int]:
    with runtime(tmp_path / "cold-empty") as cold:
        load(cold, model_dir)
        answer = greedy(cold, prompt)
    assert answer["stats"]["cached_prompt_tokens"] == 0
    tokens: list[int] = answer["tokens"]
    return tokens


def test_a_restarted_runtime_reuses_the_prefix_a_previous_one_served(
    llama_dir: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "prompt-cache"
    with runtime(cache_dir) as first:
        load(first, llama_dir)
        greedy(first, PREFIX + [11, 12, 13])
        info = first.call("runtime/info")["prompt_cache"]
        assert info["directory"] == str(cache_dir)
        assert info["persisted_models"] == ["llama"]
        assert info["not_persisted"] == {}
    assert len(block_files(cache_dir)) == len(PREFIX) // BLOCK + 1  # and the tail

    question = PREFIX + [21, 22, 23, 24]
    with runtime(cache_dir) as second:
        load(second, llama_dir)
        warm = greedy(second, question)
        gauges = {
            (g["name"], tuple(sorted(s.get("labels", {}).items()))): s["value"]
            for g in second.call("runtime/metrics")["gauges"]
            for s in g["samples"]
        }
    # 11 full blocks and the 184 tokens of the first runtime's tail this prompt shares.
    assert warm["stats"]["cached_prompt_tokens"] == len(PREFIX)
    assert warm["tokens"] == cold_tokens(llama_dir, question, tmp_path)
    model = (("model_id", "llama"),)
    assert gauges[("mlx_serving_prompt_cache_disk_hits", model)] == 1
    assert gauges[("mlx_serving_prompt_cache_disk_cached_tokens", model)] == len(PREFIX)
    assert gauges[("mlx_serving_prompt_cache_disk_restore_seconds", model)] > 0


def test_blocks_outlive_a_crash_once_written(llama_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    crashed = runtime(cache_dir)
    load(crashed, llama_dir)
    greedy(crashed, PREFIX, max_tokens=2)
    deadline = time.monotonic() + 30
    while len(list(cache_dir.glob("*/*.safetensors"))) < len(PREFIX) // BLOCK + 1:
        assert time.monotonic() < deadline, "the blocks were never written"
        time.sleep(0.05)
    crashed.process.send_signal(signal.SIGKILL)
    crashed.close()
    with runtime(cache_dir) as restarted:
        load(restarted, llama_dir)
        again = greedy(restarted, PREFIX + [5])
    assert again["stats"]["cached_prompt_tokens"] == len(PREFIX)


def test_damaged_block_files_are_removed_logged_once_and_never_loaded(
    llama_dir: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "prompt-cache"
    with runtime(cache_dir) as first:
        load(first, llama_dir)
        greedy(first, PREFIX)
    chain = block_files(cache_dir)
    flipped, cut = chain[2], chain[6]
    data = bytearray(flipped.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor bytes: the header still reads well
    flipped.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    question = PREFIX + [31, 32]
    with runtime(cache_dir) as second:
        load(second, llama_dir)
        warm = greedy(second, question)
        again = greedy(second, PREFIX + [41])
        logs = list(second.stderr_lines)
    # Blocks 0 and 1 came back; the flipped block ended the run and was deleted.
    assert warm["stats"]["cached_prompt_tokens"] == 2 * BLOCK
    assert warm["tokens"] == cold_tokens(llama_dir, question, tmp_path)
    assert again["stats"]["cached_prompt_tokens"] >= 2 * BLOCK
    for damaged in (flipped, cut):
        removed = [line for line in logs if "removed" in line and damaged.name in line]
        assert len(removed) == 1, logs
    # The second runtime wrote the missing blocks again from its own cache.
    assert len(block_files(cache_dir)) == len(PREFIX) // BLOCK + 1


def test_the_folder_stays_within_its_budget(llama_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    budget = 1 << 20  # 8 blocks of this model (128 KiB each)
    with runtime(cache_dir, disk_bytes=budget) as client:
        load(client, llama_dir)
        for start in range(4):
            prompt = [3 + (i * 13 + start * 101) % 997 for i in range(1200)]
            greedy(client, prompt, max_tokens=2)
    sizes = [p.stat().st_size for p in cache_dir.glob("*/*.safetensors")]
    assert sum(sizes) <= budget
    assert len(sizes) >= 4  # the latest prompt's blocks stayed


def test_an_empty_folder_setting_turns_the_disk_tier_off(llama_dir: Path, tmp_path: Path) -> None:
    with runtime("''") as client:
        load(client, llama_dir)
        greedy(client, PREFIX[:600], max_tokens=2)
        info = client.call("runtime/info")["prompt_cache"]
    assert info["directory"] is None
    assert info["not_persisted"] == {"llama": "the disk tier is off"}
