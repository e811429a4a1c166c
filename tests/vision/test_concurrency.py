"""Vision streams run on their own lane: a text stream of another model is not held up by
one, several vision streams of a model queue in order, and cancel ends any of them."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from tests.vision.images import data_uri, noise_png  # noqa: E402

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

LONG = 3000  # tokens: seconds of decoding for the tiny model, longer than a short text stream


def start_vision(client: RuntimeClient, eos: int, stream_id: str, **params: Any) -> None:
    client.call(
        "generate_with_image",
        {
            "model_id": "vlm",
            "prompt": "Describe the image.",
            "image": data_uri(noise_png()),
            "max_tokens": LONG,
            "temperature": 0,
            "logit_bias": {str(eos): -100.0},  # never ends early on EOS
            "stream_id": stream_id,
            **params,
        },
    )


def first_event(client: RuntimeClient, stream_id: str) -> dict[str, Any]:
    return next(client.stream_events(stream_id, timeout=60))


def final_index(client: RuntimeClient, stream_id: str) -> int:
    return next(
        i
        for i, frame in enumerate(client.notifications)
        if frame["method"] == "stream.event" and frame["params"]["stream_id"] == stream_id
    )


def chunk_indices(client: RuntimeClient, stream_id: str) -> list[int]:
    indices = []
    for i, frame in enumerate(client.notifications):
        if frame["method"] != "stream.chunk":
            continue
        params = frame["params"]
        entries = params["tokens"] if params.get("is_batch") else [params]
        if any(entry["stream_id"] == stream_id for entry in entries):
            indices.append(i)
    return indices


def test_text_stream_runs_beside_a_vision_stream(
    vision_runtime: RuntimeClient, vision_eos: int
) -> None:
    client = vision_runtime
    start_vision(client, vision_eos, "vision-long")
    assert first_event(client, "vision-long")["method"] == "stream.chunk"
    # Greedy: sampled at the default temperature, the random model sometimes draws its EOS.
    text = client.generate(
        {"model_id": "llama", "prompt": "def f(x):", "max_tokens": 16, "temperature": 0}
    )
    assert text["event"]["finish_reason"] == "length"
    vision = client.collect("vision-long")
    assert vision["event"]["finish_reason"] == "length"
    assert vision["stats"]["tokens_generated"] == LONG
    # The text stream began and ended while the vision stream was producing tokens.
    text_end = final_index(client, text["stream_id"])
    vision_chunks = chunk_indices(client, "vision-long")
    text_chunks = chunk_indices(client, text["stream_id"])
    assert vision_chunks[0] < text_chunks[0] < text_end < final_index(client, "vision-long")
    assert any(i > text_end for i in vision_chunks)


def test_cancel_a_running_and_a_queued_vision_stream(
    vision_runtime: RuntimeClient, vision_eos: int
) -> None:
    client = vision_runtime
    start_vision(client, vision_eos, "vision-a")
    assert first_event(client, "vision-a")["method"] == "stream.chunk"
    # A second stream of the same model waits for the first; a third is cancelled waiting.
    start_vision(client, vision_eos, "vision-b", max_tokens=8)
    start_vision(client, vision_eos, "vision-c", max_tokens=8)
    assert client.call("cancel", {"stream_id": "vision-c"}) == {
        "stream_id": "vision-c",
        "cancelled": True,
    }
    queued = client.collect("vision-c")
    assert queued["event"]["finish_reason"] == "cancelled" and queued["tokens"] == []
    assert queued["stats"]["tokens_generated"] == 0

    assert client.call("cancel", {"stream_id": "vision-a"})["cancelled"] is True
    running = client.collect("vision-a")
    assert running["event"]["finish_reason"] == "cancelled"
    assert 0 < running["stats"]["tokens_generated"] < LONG
    waited = client.collect("vision-b")
    assert waited["event"]["finish_reason"] == "length"
    assert waited["stats"]["tokens_generated"] == 8
    # Ends are final: a second cancel finds nothing, and the ids are free again.
    assert client.call("cancel", {"stream_id": "vision-a"})["cancelled"] is False
    assert client.call("runtime/state")["active_streams"] == 0


def test_unload_ends_vision_streams_with_an_error(
    vision_dir: Any, vision_eos: int, llama_dir: Any
) -> None:
    with RuntimeClient() as client:
        client.call("load_vision_model", {"model_id": "vlm", "local_path": str(vision_dir)})
        start_vision(client, vision_eos, "vision-x")
        assert first_event(client, "vision-x")["method"] == "stream.chunk"
        start_vision(client, vision_eos, "vision-y")
        client.call("unload_model", {"model_id": "vlm"})
        for stream_id in ("vision-x", "vision-y"):
            event = client.collect(stream_id)["event"]
            assert event["event"] == "error" and "unloaded" in event["error"], event
        assert client.call("runtime/state")["active_streams"] == 0


def test_shutdown_cancels_vision_streams(vision_dir: Any, vision_eos: int) -> None:
    client = RuntimeClient()
    client.call("load_vision_model", {"model_id": "vlm", "local_path": str(vision_dir)})
    start_vision(client, vision_eos, "vision-s")
    assert first_event(client, "vision-s")["method"] == "stream.chunk"
    start_vision(client, vision_eos, "vision-t")
    assert client.call("shutdown") == {"success": True}
    for stream_id in ("vision-s", "vision-t"):
        assert client.collect(stream_id)["event"]["finish_reason"] == "cancelled"
    assert client.process.wait(10) == 0
    client.close()
