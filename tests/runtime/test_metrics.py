"""runtime/metrics, runtime.event and load progress through the real runtime process."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlx_serving.testing.client import RemoteError, RuntimeClient


@pytest.fixture()
def client() -> Iterator[RuntimeClient]:
    """A runtime of its own: the counters start at zero."""
    with RuntimeClient() as runtime_client:
        yield runtime_client


def family(metrics: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found = [f for f in metrics[kind] if f["name"] == name]
    assert len(found) == 1, f"{name} missing from {kind}"
    return found[0]


def value(metrics: dict[str, Any], kind: str, name: str, **labels: str) -> float:
    samples = [s for s in family(metrics, kind, name)["samples"] if s["labels"] == labels]
    return float(samples[0]["value"]) if samples else 0.0


def histogram(metrics: dict[str, Any], name: str, **labels: str) -> dict[str, Any]:
    samples = family(metrics, "histograms", name)["samples"]
    return next(s for s in samples if s["labels"] == labels)


def frames(client: RuntimeClient) -> list[dict[str, Any]]:
    """Every single frame written so far, in the order the runtime wrote them."""
    return [f for f in (json.loads(line) for line in client.stdout_lines) if isinstance(f, dict)]


def events(client: RuntimeClient) -> list[dict[str, Any]]:
    return [f["params"] for f in frames(client) if f.get("method") == "runtime.event"]


def assert_well_formed(sample: dict[str, Any]) -> None:
    buckets = sample["buckets"]
    assert buckets[-1] == {"le": "+Inf", "cumulative": sample["count"]}
    bounds = [b["le"] for b in buckets[:-1]]
    assert bounds == sorted(bounds)
    counts = [b["cumulative"] for b in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    if sample["count"]:
        assert sample["p50"] <= sample["p90"] <= sample["p99"]
    else:
        assert sample["p50"] is None


def test_counters_and_histograms_add_up(client: RuntimeClient, llama_dir: Path) -> None:
    client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
    runs = [
        client.generate({"model_id": "llama", "prompt": prompt, "max_tokens": n, "temperature": 0})
        for prompt, n in (("Hello", 5), ("Hello there", 9), ("A longer prompt here", 3), ("x", 1))
    ]
    with pytest.raises(RemoteError):
        client.call("generate", {"model_id": "llama", "prompt": "x", "max_tokens": 0})
    with pytest.raises(RemoteError):
        client.call("generate", {"model_id": "absent", "prompt": "x"})
    with pytest.raises(RemoteError):
        client.call("no_such_method")
    metrics = client.call("runtime/metrics")
    stats = [r["stats"] for r in runs]

    def counter(name: str, **labels: str) -> float:
        return value(metrics, "counters", name, **labels)

    assert counter("mlx_serving_generated_tokens_total") == sum(
        s["tokens_generated"] for s in stats
    )
    assert counter("mlx_serving_prompt_tokens_total") == sum(s["prompt_tokens"] for s in stats)
    assert counter("mlx_serving_cached_prompt_tokens_total") == sum(
        s["cached_prompt_tokens"] for s in stats
    )
    assert counter("mlx_serving_streams_started_total") == len(runs)
    assert counter("mlx_serving_streams_completed_total", finish_reason="length") == len(runs)
    assert counter("mlx_serving_streams_cancelled_total") == 0
    assert counter("mlx_serving_streams_errored_total") == 0
    assert counter("mlx_serving_requests_total", method="load_model", outcome="ok") == 1
    assert counter("mlx_serving_requests_total", method="generate", outcome="ok") == len(runs)
    assert counter("mlx_serving_requests_total", method="generate", outcome="invalid_params") == 1
    assert counter("mlx_serving_requests_total", method="generate", outcome="model_not_loaded") == 1
    assert counter("mlx_serving_requests_total", method="unknown", outcome="method_not_found") == 1

    ttft = histogram(metrics, "mlx_serving_time_to_first_token_seconds")
    assert ttft["count"] == len(runs)  # every stream here produced a token
    assert math.isclose(ttft["sum"], sum(s["time_to_first_token"] for s in stats), rel_tol=1e-9)
    queue = histogram(metrics, "mlx_serving_queue_wait_seconds")
    assert queue["count"] == len(runs)
    assert math.isclose(queue["sum"], sum(s["queue_time"] for s in stats), rel_tol=1e-9)
    for s in stats:
        assert 0 <= s["queue_time"] <= s["time_to_first_token"]
    itl = histogram(metrics, "mlx_serving_inter_token_latency_seconds")
    assert itl["count"] == sum(len(r["chunks"]) - 1 for r in runs)
    duration = histogram(metrics, "mlx_serving_generation_duration_seconds")
    assert math.isclose(duration["sum"], sum(s["total_time"] for s in stats), rel_tol=1e-9)
    generate_latency = histogram(metrics, "mlx_serving_request_duration_seconds", method="generate")
    assert generate_latency["count"] == len(runs) + 2
    for fam in metrics["histograms"]:
        for sample in fam["samples"]:
            assert_well_formed(sample)

    def gauge(name: str, **labels: str) -> float:
        return value(metrics, "gauges", name, **labels)

    assert gauge("mlx_serving_loaded_models") == 1
    assert gauge("mlx_serving_active_streams") == 0
    assert gauge("mlx_serving_queued_streams") == 0
    assert gauge("mlx_serving_requests_in_flight") == 1  # the metrics call itself
    assert gauge("mlx_serving_resident_memory_bytes") > 0
    assert gauge("mlx_serving_prompt_cache_entries", model_id="llama") >= 1
    info = client.call("runtime/info")
    assert "runtime/metrics" in info["capabilities"]
    native = info["native"]["metrics_collector"]
    assert metrics["collector"] == ("native" if native else "python")


def test_cancelled_and_failed_streams_are_counted(client: RuntimeClient, llama_dir: Path) -> None:
    client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
    long = {"model_id": "llama", "prompt": "Hello", "max_tokens": 3000, "temperature": 0}
    cancelled = client.call("generate", {**long, "stream_id": "c"})["stream_id"]
    client.call("cancel", {"stream_id": cancelled})
    ended = client.collect(cancelled)["event"]
    failed = client.call("generate", {**long, "stream_id": "f"})["stream_id"]
    client.call("unload_model", {"model_id": "llama"})
    lost = client.collect(failed)["event"]
    metrics = client.call("runtime/metrics")
    reasons = [ended.get("finish_reason"), lost.get("finish_reason")]
    assert value(metrics, "counters", "mlx_serving_streams_cancelled_total") == reasons.count(
        "cancelled"
    )
    errors = [e for e in (ended, lost) if e["event"] == "error"]
    assert value(metrics, "counters", "mlx_serving_streams_errored_total") == len(errors)
    assert ended.get("finish_reason") == "cancelled"  # 3000 tokens outlast a cancel
    assert lost["event"] == "error"
    error_events = [e for e in events(client) if e["event"] == "error"]
    assert [e["stream_id"] for e in error_events] == ["f"]
    assert error_events[0]["model_id"] == "llama"
    assert error_events[0]["message"] == lost["error"]


def test_events_arrive_in_order(client: RuntimeClient, llama_dir: Path) -> None:
    client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
    run = client.generate({"model_id": "llama", "prompt": "Hi", "max_tokens": 4, "stream_id": "s"})
    client.call("unload_model", {"model_id": "llama"})
    client.call("unload_model", {"model_id": "llama"})  # idempotent: no second event
    kinds = [e["event"] for e in events(client)]
    assert kinds == ["model_loaded", "generation_started", "generation_completed", "model_unloaded"]
    loaded, started, completed, unloaded = events(client)
    assert loaded["model_id"] == "llama" and loaded["load_time"] > 0
    assert loaded["dtype"] == "float32" and loaded["parameter_count"] > 0
    assert started == {
        "event": "generation_started",
        "stream_id": "s",
        "model_id": "llama",
        "prompt_tokens": run["stats"]["prompt_tokens"],
        "max_tokens": 4,
        "timestamp": started["timestamp"],
    }
    assert completed["finish_reason"] == run["event"]["finish_reason"]
    assert completed["tokens_generated"] == run["stats"]["tokens_generated"]
    assert unloaded["reason"] == "unloaded"
    assert loaded["timestamp"] <= started["timestamp"] <= completed["timestamp"]

    # Within the stream: answer, started, chunks, stats, final event, completed.
    def about_s(frame: dict[str, Any]) -> bool:
        if "result" in frame:
            return isinstance(frame["result"], dict) and frame["result"].get("stream_id") == "s"
        return bool((frame.get("params") or {}).get("stream_id") == "s")

    stream = [f.get("method", "answer") for f in frames(client) if about_s(f)]
    assert stream[:2] == ["answer", "runtime.event"]
    assert stream[-3:] == ["stream.stats", "stream.event", "runtime.event"]
    assert set(stream[2:-3]) == {"stream.chunk"}


def test_load_progress_comes_before_the_answer(client: RuntimeClient, llama_dir: Path) -> None:
    request_id = client.send("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
    client.response(request_id)
    written = frames(client)
    answer = next(i for i, f in enumerate(written) if f.get("id") == request_id)
    progress = [
        (i, f["params"]) for i, f in enumerate(written) if f.get("method") == "runtime.progress"
    ]
    assert [p["stage"] for _, p in progress] == ["resolving", "loading_weights", "ready"]
    assert [(p["done"], p["total"]) for _, p in progress] == [(0, 2), (1, 2), (2, 2)]
    assert all(p["task"] == "load" and p["model_id"] == "llama" for _, p in progress)
    assert all(p["unit"] == "stages" for _, p in progress)
    loaded = next(i for i, f in enumerate(written) if f.get("method") == "runtime.event")
    assert progress[-1][0] < loaded < answer


def test_gguf_load_reports_its_conversion(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from tests.gguf.tiny_gguf import ByteVocab, TinyModel

    path = TinyModel().write(tmp_path / "model.gguf", ByteVocab())
    with RuntimeClient(env={"MLX_SERVING_CACHE_DIR": str(tmp_path / "cache")}) as client:
        client.call("load_model", {"model_id": "tiny", "local_path": str(path)})
        progress = [f["params"] for f in frames(client) if f.get("method") == "runtime.progress"]
    assert [(p["stage"], p["done"], p["total"]) for p in progress] == [
        ("resolving", 0, 3),
        ("converting_gguf", 1, 3),
        ("loading_weights", 2, 3),
        ("ready", 3, 3),
    ]


def test_a_failed_load_is_an_error_event(client: RuntimeClient, tmp_path: Path) -> None:
    with pytest.raises(RemoteError) as failure:
        client.call("load_model", {"model_id": "m", "local_path": str(tmp_path / "absent")})
    assert failure.value.code == -32001
    (event,) = events(client)
    assert event["event"] == "error" and event["code"] == -32001
    assert event["method"] == "load_model" and event["model_id"] == "m"
    metrics = client.call("runtime/metrics")
    assert (
        value(
            metrics,
            "counters",
            "mlx_serving_requests_total",
            method="load_model",
            outcome="model_load_error",
        )
        == 1
    )


def test_shutdown_announces_stopping(llama_dir: Path) -> None:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        client.call("shutdown")
        client.process.wait(10)
        client.close()
    status = [e for e in events(client) if e["event"] == "runtime_status"]
    assert status == [
        {
            "event": "runtime_status",
            "status": "stopping",
            "active_streams": 0,
            "loaded_models": 1,
            "timestamp": status[0]["timestamp"],
        }
    ]


def test_telemetry_off(llama_dir: Path) -> None:
    env = {"MLX_SERVING_TELEMETRY__ENABLED": "false", "MLX_SERVING_TELEMETRY__EVENTS": "false"}
    with RuntimeClient(env=env) as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        client.generate({"model_id": "llama", "prompt": "Hi", "max_tokens": 2})
        assert "runtime/metrics" not in client.call("runtime/info")["capabilities"]
        with pytest.raises(RemoteError) as missing:
            client.call("runtime/metrics")
        assert missing.value.code == -32601
        assert events(client) == []
        # Load progress belongs to the protocol, not to telemetry.
        assert any(f.get("method") == "runtime.progress" for f in frames(client))
