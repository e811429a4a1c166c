"""Bad params get -32602 (or an application error) naming the field; serving goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

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


# -- what the tokenizer is handed: bounded by what can be answered --------------------------

LINE_LIMIT = 1 << 20
PROMPT_LIMIT = 2 << 20
# What one tokenize answer line holds in the worst case: (line - 64 KiB) / 16 bytes.
TOKENIZE_LIMIT = (LINE_LIMIT - 64 * 1024 - 128) // 16


@pytest.fixture(scope="module")
def limited(llama_dir: Path) -> Iterator[RuntimeClient]:
    env = {
        "MLX_SERVING_JSON_RPC__MAX_OUTPUT_LINE_BYTES": str(LINE_LIMIT),
        "MLX_SERVING_JSON_RPC__MAX_PROMPT_BYTES": str(PROMPT_LIMIT),
    }
    with RuntimeClient(env=env) as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        yield client


def one_token_per_byte(size: int) -> str:
    """Text the test tokenizer splits into one token per byte: the costliest answer."""
    return ("\x01~\x02`\x03^\x04|" * (size // 8 + 1))[:size]


def test_tokenize_refuses_text_its_answer_could_not_hold(limited: RuntimeClient) -> None:
    english = ("The quick brown fox jumps over the lazy dog. " * 5000)[: TOKENIZE_LIMIT + 1]
    frame = limited.request("tokenize", {"model_id": "llama", "text": english})
    error = frame["error"]
    assert error["code"] == -32602, error
    assert error["data"]["field"] == "text"
    assert str(TOKENIZE_LIMIT) in error["message"]
    # The costliest text at the limit is answered, on a line within the limit.
    text = one_token_per_byte(TOKENIZE_LIMIT)
    result = limited.call("tokenize", {"model_id": "llama", "text": text})
    assert len(result["tokens"]) >= TOKENIZE_LIMIT - 1
    assert max(len(line) for line in limited.stdout_lines) <= LINE_LIMIT


def test_batch_tokenize_entries_share_one_answer_line(limited: RuntimeClient) -> None:
    # Each fits alone; together they would not: the first is answered, the others fail
    # alone instead of the whole call failing on its answer's size.
    text = one_token_per_byte(TOKENIZE_LIMIT // 2 + 1000)
    requests = [{"model_id": "llama", "text": text} for _ in range(3)]
    results = limited.call("batch_tokenize", {"requests": requests})["results"]
    assert results[0]["success"]
    for index in (1, 2):
        assert not results[index]["success"]
        assert results[index]["error_code"] == -32602
        assert results[index]["error_data"]["field"] == f"requests[{index}].text"


def test_detokenize_refuses_tokens_whose_text_its_answer_could_not_hold(
    limited: RuntimeClient, llama_dir: Path
) -> None:
    tokenizer = Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
    longest = max(range(tokenizer.get_vocab_size()), key=lambda i: len(tokenizer.decode([i])))
    per_token = len(json.dumps(tokenizer.decode([longest]))) - 1
    fits = (LINE_LIMIT - 64 * 1024) // per_token
    frame = limited.request("detokenize", {"model_id": "llama", "tokens": [longest] * (fits + 1)})
    assert frame["error"]["code"] == -32602, frame["error"]
    assert frame["error"]["data"]["field"] == "tokens"
    text = limited.call("detokenize", {"model_id": "llama", "tokens": [longest] * fits})["text"]
    assert len(text) >= fits


def test_the_prompt_is_bounded_by_max_prompt_bytes(limited: RuntimeClient) -> None:
    info = limited.call("runtime/info")
    assert info["limits"]["max_prompt_bytes"] == PROMPT_LIMIT
    # Over the old fixed 1 MiB but within the setting: refused only for the context.
    frame = limited.request("generate", {"model_id": "llama", "prompt": "ab " * 400_000})
    assert "context length" in frame["error"]["message"], frame["error"]
    for params, field in (
        ({"prompt": "é" * (PROMPT_LIMIT // 2) + "x"}, "prompt"),
        ({"messages": [{"role": "user", "content": "x" * (PROMPT_LIMIT // 2)}] * 2}, "messages"),
    ):
        frame = limited.request("generate", {"model_id": "llama", **params})
        assert frame["error"]["code"] == -32602, frame["error"]
        assert frame["error"]["data"]["field"] == field
        assert str(PROMPT_LIMIT) in frame["error"]["message"]
