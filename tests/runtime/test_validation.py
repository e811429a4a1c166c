"""Bad params get -32602 (or an application error) naming the field; serving goes on."""

from __future__ import annotations

from typing import Any

import pytest

from mlx_serving.testing.client import RuntimeClient

CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("generate", {"prompt": "x"}, -32602, "model_id"),
    ("generate", {"model_id": "llama", "prompt": "x", "max_tokens": 0}, -32602, "max_tokens"),
    ("generate", {"model_id": "llama", "prompt": "x", "max_tokens": 10**6}, -32602, "max_tokens"),
    ("generate", {"model_id": "llama", "prompt": "x", "temperature": -1}, -32602, "temperature"),
    ("generate", {"model_id": "llama", "prompt": "x", "temperature": 2.5}, -32602, "temperature"),
    ("generate", {"model_id": "llama", "prompt": "x", "top_p": 0}, -32602, "top_p"),
    ("generate", {"model_id": "llama", "prompt": 5}, -32602, "prompt"),
    ("generate", {"model_id": "llama"}, -32602, "prompt"),
    ("generate", {"model_id": "llama", "prompt": "x", "prompt_tokens": [1]}, -32602, "prompt"),
    ("generate", {"model_id": "llama", "prompt_tokens": [1, 99999]}, -32602, "prompt_tokens[1]"),
    ("generate", {"model_id": "llama", "prompt": "x", "seed": -1}, -32602, "seed"),
    (
        "generate",
        {"model_id": "llama", "prompt": "x", "stop_sequences": ["a"] * 11},
        -32602,
        "stop_sequences",
    ),
    (
        "generate",
        {"model_id": "llama", "prompt": "x", "logit_bias": {"abc": 1}},
        -32602,
        "logit_bias",
    ),
    (
        "generate",
        {"model_id": "llama", "messages": [{"role": "user"}]},
        -32602,
        "messages[0].content",
    ),
    (
        "generate",
        {"model_id": "llama", "messages": [{"role": "robot", "content": "hi"}]},
        -32602,
        "messages[0].role",
    ),
    ("generate", {"model_id": "nope", "prompt": "x"}, -32005, ""),
    ("tokenize", {"model_id": "llama", "text": 3}, -32602, "text"),
    ("detokenize", {"model_id": "llama", "tokens": [-1]}, -32602, "tokens[0]"),
    ("load_model", {"model_id": ""}, -32602, "model_id"),
    ("load_model", {"model_id": "x", "local_path": "/does/not/exist"}, -32001, ""),
    ("cancel", {}, -32602, "stream_id"),
    ("generate", ["positional"], -32602, "params"),
]


@pytest.mark.parametrize(("method", "params", "code", "field"), CASES)
def test_bad_params_name_the_field(
    runtime: RuntimeClient, method: str, params: Any, code: int, field: str
) -> None:
    frame = runtime.request(method, params)
    error = frame["error"]
    assert error["code"] == code, error
    if code == -32602:
        assert error["data"]["type"] == "ValidationError"
        assert error["data"]["field"] == field
        assert error["data"]["issues"][0]["path"] == field
    else:
        assert "model_id" in error["data"]
    # The runtime keeps serving after every bad request.
    assert runtime.call("runtime/info")["protocol"] == "json-rpc-2.0"


def test_unknown_fields_are_ignored(runtime: RuntimeClient) -> None:
    result = runtime.generate(
        {
            "model_id": "llama",
            "prompt": "x",
            "max_tokens": 2,
            "temperature": 0,
            "streaming": True,
            "draft": False,
        }
    )
    assert len(result["chunks"]) == 2


def test_prompt_longer_than_context_is_rejected(runtime: RuntimeClient) -> None:
    frame = runtime.request(
        "generate", {"model_id": "llama", "prompt_tokens": [5] * 4000, "max_tokens": 200}
    )
    assert frame["error"]["code"] == -32602
    assert "context length" in frame["error"]["message"]


def test_methods_of_later_features_answer_a_clear_error(runtime: RuntimeClient) -> None:
    frame = runtime.request("runtime/telemetry")
    assert frame["error"]["code"] == -32099
    assert "not available" in frame["error"]["message"]
    info = runtime.call("runtime/info")
    assert "runtime/telemetry" not in info["capabilities"]
    assert "generate" in info["capabilities"]
