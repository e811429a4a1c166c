"""What a vision request can ask for: images in messages, raw prompts, and the sampling
parameters, max_tokens, stop sequences, stop token ids and seed of text requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx_vlm", reason="the vision tests need the `vision` extra (mlx-vlm)")

from mlx_vlm import apply_chat_template, load, stream_generate  # noqa: E402
from tests.vision.images import b64, data_uri, flat_png, noise_png  # noqa: E402

from mlx_serving.testing.client import RuntimeClient  # noqa: E402

PROMPT = "Describe the image."


def run(client: RuntimeClient, method: str, params: dict[str, Any]) -> dict[str, Any]:
    result = client.collect(client.call(method, {"model_id": "vlm", **params})["stream_id"])
    result["generated"] = result["tokens"][: result["stats"]["tokens_generated"]]
    return result


def greedy(client: RuntimeClient, **params: Any) -> dict[str, Any]:
    image = data_uri(noise_png())
    return run(
        client,
        "generate_with_image",
        {"prompt": PROMPT, "image": image, "max_tokens": 16, "temperature": 0, **params},
    )


def test_runtime_advertises_and_reports_the_vision_model(vision_runtime: RuntimeClient) -> None:
    info = vision_runtime.call("runtime/info")
    assert {"load_vision_model", "generate_with_image"} <= set(info["capabilities"])
    state = vision_runtime.call("runtime/state")
    types = {m["model_id"]: m["type"] for m in state["loaded_models"]}
    assert types == {"vlm": "vision", "llama": "text"}


def test_load_replace_and_unload(vision_dir: Path, llama_dir: Path) -> None:
    image = data_uri(flat_png())
    with RuntimeClient() as client:
        result = client.call("load_vision_model", {"model_id": "m", "local_path": str(vision_dir)})
        assert result["is_vision_model"] is True
        assert result["processor_type"] == "Qwen2VLProcessor"
        assert result["state"] == "ready" and result["parameter_count"] > 0
        # The same id loaded by load_model becomes a text model, which takes no images.
        client.call("load_model", {"model_id": "m", "local_path": str(llama_dir)})
        assert client.call("runtime/state")["loaded_models"][0]["type"] == "text"
        error = client.request(
            "generate_with_image", {"model_id": "m", "prompt": "x", "image": image}
        )["error"]
        assert error["code"] == -32602 and error["data"]["field"] == "model_id"
        error = client.request(
            "generate",
            {
                "model_id": "m",
                "messages": [{"role": "user", "content": [{"type": "image", "image": image}]}],
            },
        )["error"]
        assert error["code"] == -32602 and error["data"]["field"] == "messages[0].content[0]"
        # And back; unload_model unloads vision models too.
        client.call("load_vision_model", {"model_id": "m", "local_path": str(vision_dir)})
        assert client.call("runtime/state")["loaded_models"][0]["type"] == "vision"
        client.call("unload_model", {"model_id": "m"})
        assert client.call("runtime/state")["loaded_models"] == []
        error = client.request(
            "load_vision_model", {"model_id": "t", "local_path": str(llama_dir)}
        )["error"]
        assert error["code"] == -32001


def test_image_in_messages(vision_runtime: RuntimeClient, vision_dir: Path) -> None:
    image = data_uri(flat_png())
    messages = [
        {"role": "system", "content": "You describe images."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "image": image},
            ],
        },
    ]
    result = run(
        vision_runtime, "generate", {"messages": messages, "max_tokens": 16, "temperature": 0}
    )
    model, processor = load(str(vision_dir))
    rendered = [
        messages[0],
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image"}]},
    ]
    prompt = apply_chat_template(processor, model.config, rendered, num_images=1)
    assert prompt.count("<|image_pad|>") == 1 and "You describe images." in prompt
    expected = list(
        stream_generate(model, processor, prompt, image=[image], max_tokens=16, temperature=0.0)
    )[-1].token_ids
    assert result["generated"] == expected
    # The same content through generate_with_image's messages gives the same tokens.
    again = run(
        vision_runtime,
        "generate_with_image",
        {"messages": messages, "max_tokens": 16, "temperature": 0},
    )
    assert again["generated"] == expected


def test_raw_prompt_is_not_templated(vision_runtime: RuntimeClient) -> None:
    raw = "<|vision_start|><|image_pad|><|vision_end|>Describe."
    templated = greedy(vision_runtime, prompt="Describe.")
    plain = greedy(vision_runtime, prompt=raw, raw_prompt=True)
    # 4 image tokens + "Describe." only, versus the chat-formatted prompt.
    assert plain["stats"]["prompt_tokens"] < templated["stats"]["prompt_tokens"]
    assert plain["event"]["finish_reason"] == "length"


def test_images_that_would_go_unused_are_refused(vision_runtime: RuntimeClient) -> None:
    image = data_uri(flat_png())

    def refused(method: str, params: dict[str, Any]) -> str:
        response = vision_runtime.request(method, {"max_tokens": 4, **params})
        error = response.get("error")
        assert error is not None and error["code"] == -32602, response
        field: str = error["data"]["field"]
        return field

    # generate takes images only as parts of messages: image/images are not ignored.
    for model_id in ("vlm", "llama"):
        assert refused("generate", {"model_id": model_id, "prompt": "x", "image": image}) == "image"
        params = {"model_id": model_id, "prompt": "x", "images": [image]}
        assert refused("generate", params) == "images"
    # A raw prompt carries the placeholders itself: one per image, or an image is dropped.
    raw = {"model_id": "vlm", "raw_prompt": True, "image": image}
    assert refused("generate_with_image", {**raw, "prompt": "Describe."}) == "image"
    one_placeholder = {**raw, "prompt": "<|image_pad|>Describe.", "images": [image]}
    assert refused("generate_with_image", one_placeholder) == "images"
    assert vision_runtime.call("runtime/state")["active_streams"] == 0


def test_plain_base64_equals_data_uri(vision_runtime: RuntimeClient) -> None:
    assert (
        greedy(vision_runtime, image=b64(noise_png()))["generated"]
        == (greedy(vision_runtime)["generated"])
    )


def test_max_tokens_stop_sequences_and_stop_token_ids(vision_runtime: RuntimeClient) -> None:
    full = greedy(vision_runtime)
    assert len(full["generated"]) == 16 and full["event"]["finish_reason"] == "length"
    short = greedy(vision_runtime, max_tokens=5)
    assert short["generated"] == full["generated"][:5]

    # A stop sequence from the middle of the greedy text cuts the text before it.
    text = full["text"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = text.index(stop)
    stopped = greedy(vision_runtime, stop_sequences=[stop])
    assert stopped["event"]["finish_reason"] == "stop"
    assert stopped["text"] == text[:cut]

    # A stop token id ends the stream where that token is sampled, without its text.
    index = next(i for i, t in enumerate(full["generated"]) if i >= 3)
    token = full["generated"][index]
    first = full["generated"].index(token)
    by_id = greedy(vision_runtime, stop_token_ids=[token])
    assert by_id["event"]["finish_reason"] == "stop"
    assert by_id["generated"] == full["generated"][:first]
    assert by_id["stats"]["tokens_generated"] == first + 1


def test_seed_temperature_and_penalties(vision_runtime: RuntimeClient) -> None:
    sampled = {"temperature": 1.5, "top_k": 50, "seed": 7}
    first = greedy(vision_runtime, **sampled)
    assert greedy(vision_runtime, **sampled)["generated"] == first["generated"]
    others = [greedy(vision_runtime, **{**sampled, "seed": s})["generated"] for s in (8, 9)]
    assert any(o != first["generated"] for o in others)
    assert first["generated"] != greedy(vision_runtime)["generated"]
    # A repetition penalty and a logit bias change what greedy decoding picks.
    plain = greedy(vision_runtime)["generated"]
    banned = plain[0]
    biased = greedy(vision_runtime, logit_bias={str(banned): -100.0})["generated"]
    assert banned not in biased
    penalised = greedy(vision_runtime, repetition_penalty=5.0)["generated"]
    assert len(set(penalised)) >= len(set(plain))


def test_logprobs(vision_runtime: RuntimeClient) -> None:
    result = greedy(vision_runtime, logprobs=True, top_logprobs=3)
    chunk = result["chunks"][0]
    assert chunk["logprob"] <= 0
    assert len(chunk["top_logprobs"]) == 3
    assert chunk["top_logprobs"][0]["token_id"] == chunk["token_id"]  # greedy: the top one


def test_text_only_generate_on_a_vision_model(vision_runtime: RuntimeClient) -> None:
    result = run(vision_runtime, "generate", {"prompt": "Hello", "max_tokens": 8, "temperature": 0})
    assert result["event"]["finish_reason"] in ("length", "stop")
    assert result["stats"]["prompt_tokens"] > 0
    tokens = vision_runtime.call("tokenize", {"model_id": "vlm", "text": "Hello"})["tokens"]
    by_ids = run(
        vision_runtime, "generate", {"prompt_tokens": tokens, "max_tokens": 8, "temperature": 0}
    )
    assert by_ids["generated"] == result["generated"]
