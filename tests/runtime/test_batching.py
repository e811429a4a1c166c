"""Continuous batching, prompt-cache reuse and speculative decoding, through the runtime:
each must change speed only, never the tokens greedy decoding produces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlx_serving.testing import make_model
from mlx_serving.testing.client import RemoteError, RuntimeClient

PROMPTS = [
    "def parse_args(argv):",
    "class Queue:\n    def __init__(self, maxsize=0):",
    "import os",
    "The quick brown fox jumps over the lazy dog, and then it runs back home to sleep.",
    "x",
]


def greedy(model_id: str, prompt: str, max_tokens: int = 16, **extra: Any) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


@pytest.fixture(scope="module")
def draft_dirs(model_root: Path) -> dict[str, Path]:
    return {
        "small": make_model(model_root / "draft-small", "llama", num_layers=1, seed=7),
        "other-vocab": make_model(model_root / "draft-vocab", "llama", vocab_size=512, seed=7),
    }


@pytest.fixture
def client(llama_dir: Path) -> Iterator[RuntimeClient]:
    with RuntimeClient() as client:
        client.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        yield client


def test_batched_greedy_output_equals_one_at_a_time(client: RuntimeClient) -> None:
    alone = [client.generate(greedy("llama", p))["tokens"] for p in PROMPTS]
    # Same prompts, all in flight together; the later ones join a batch already decoding.
    ids = [
        client.call("generate", greedy("llama", p, stream_id=f"b{i}"))["stream_id"]
        for i, p in enumerate(PROMPTS)
    ]
    together = [client.collect(stream_id)["tokens"] for stream_id in ids]
    assert together == alone
    assert all(len(tokens) == 16 for tokens in alone)


def test_streams_joining_and_leaving_mid_batch_keep_their_tokens(client: RuntimeClient) -> None:
    expected = {p: client.generate(greedy("llama", p, 24))["tokens"] for p in PROMPTS[:3]}
    long = client.call("generate", greedy("llama", PROMPTS[0], 24, stream_id="long"))
    first = client.call("generate", greedy("llama", PROMPTS[1], 24, stream_id="join1"))
    cancel = client.call("generate", greedy("llama", PROMPTS[3], 2000, stream_id="leaver"))
    client.call("cancel", {"stream_id": cancel["stream_id"]})
    late = client.call("generate", greedy("llama", PROMPTS[2], 24, stream_id="join2"))
    assert client.collect(long["stream_id"])["tokens"] == expected[PROMPTS[0]]
    assert client.collect(first["stream_id"])["tokens"] == expected[PROMPTS[1]]
    assert client.collect(late["stream_id"])["tokens"] == expected[PROMPTS[2]]
    assert client.collect(cancel["stream_id"])["event"]["finish_reason"] == "cancelled"


def test_long_prompt_prefill_does_not_stall_decoding_streams(client: RuntimeClient) -> None:
    decoding = client.call("generate", greedy("llama", "import os", 400, stream_id="dec"))
    # Wait until it decodes, then send a prompt several prefill chunks long.
    events = client.stream_events(decoding["stream_id"])
    next(events)
    long_prompt = [10 + i % 1000 for i in range(1800)]  # four prefill chunks of 512
    client.call(
        "generate",
        {"model_id": "llama", "prompt_tokens": long_prompt, "max_tokens": 2, "stream_id": "pre"},
    )
    client.collect("pre")
    order = [
        n["params"]["stream_id"]
        for n in client.notifications
        if n["method"] == "stream.chunk" and n["params"]["stream_id"] in ("dec", "pre")
    ]
    # Between the long request's arrival and its first token the decoding stream got a
    # token per prefill chunk, not a pause for the whole prompt.
    before_first = order[: order.index("pre")]
    assert before_first.count("dec") >= 4
    client.call("cancel", {"stream_id": "dec"})
    client.collect("dec")


def test_prompt_cache_reuses_a_shared_prefix_with_identical_tokens(
    client: RuntimeClient, llama_dir: Path
) -> None:
    system = "You are a careful assistant. " * 20
    first = client.generate(greedy("llama", system + "Question one?"))
    assert first["stats"]["cached_prompt_tokens"] == 0
    again = client.generate(greedy("llama", system + "Question one?"))
    assert again["tokens"] == first["tokens"]
    assert again["stats"]["cached_prompt_tokens"] == again["stats"]["prompt_tokens"] - 1
    other = client.generate(greedy("llama", system + "Another question entirely?"))
    assert other["stats"]["cached_prompt_tokens"] >= 100

    with RuntimeClient() as fresh:  # the same request without any cache
        fresh.call("load_model", {"model_id": "llama", "local_path": str(llama_dir)})
        uncached = fresh.generate(greedy("llama", system + "Another question entirely?"))
    assert uncached["stats"]["cached_prompt_tokens"] == 0
    assert other["tokens"] == uncached["tokens"]


def test_speculative_greedy_equals_plain_greedy(
    client: RuntimeClient, draft_dirs: dict[str, Path], llama_dir: Path
) -> None:
    client.call(
        "load_model", {"model_id": "draft", "local_path": str(draft_dirs["small"]), "draft": True}
    )
    # The target itself as its own draft: every proposal is accepted.
    client.call("load_model", {"model_id": "twin", "local_path": str(llama_dir), "draft": True})
    for prompt in PROMPTS[:3]:
        plain = client.generate(greedy("llama", prompt, 20))
        drafted = client.generate(
            greedy("llama", prompt, 20, draft_model="draft", num_draft_tokens=3)
        )
        twin = client.generate(greedy("llama", prompt, 20, draft_model="twin"))
        assert drafted["tokens"] == plain["tokens"]
        assert twin["tokens"] == plain["tokens"]
        assert twin["stats"]["draft_tokens_accepted"] >= 10
        assert twin["event"]["finish_reason"] == "length"


def test_check_draft_and_mismatched_drafts(
    client: RuntimeClient, draft_dirs: dict[str, Path]
) -> None:
    client.call("load_model", {"model_id": "draft", "local_path": str(draft_dirs["small"])})
    client.call("load_model", {"model_id": "odd", "local_path": str(draft_dirs["other-vocab"])})
    ok = client.call("check_draft", {"primary_id": "llama", "draft_id": "draft"})
    assert ok["compatible"] is True and ok["errors"] == []
    assert ok["details"]["performance_estimate"]["size_ratio"] < 1
    bad = client.call("check_draft", {"primary_id": "llama", "draft_id": "odd"})
    assert bad["compatible"] is False
    assert "tokenizers differ" in bad["errors"][0]
    batch = client.call(
        "batch_check_draft",
        {
            "requests": [
                {"primary_id": "llama", "draft_id": "draft"},
                {"primary_id": "llama", "draft_id": "missing"},
            ]
        },
    )
    assert [r["success"] for r in batch["results"]] == [True, False]
    assert batch["results"][1]["error_code"] == -32005
    with pytest.raises(RemoteError) as caught:
        client.call("generate", greedy("llama", "x", draft_model="odd"))
    assert caught.value.code == -32602
    assert caught.value.error["data"]["field"] == "draft_model"
    with pytest.raises(RemoteError) as caught:
        client.call("generate", greedy("llama", "x", draft_model="nope"))
    assert "not loaded" in caught.value.error["message"]


def test_unloading_a_draft_ends_the_streams_using_it(
    client: RuntimeClient, draft_dirs: dict[str, Path]
) -> None:
    client.call("load_model", {"model_id": "draft", "local_path": str(draft_dirs["small"])})
    stream_id = client.call("generate", greedy("llama", "x", 3000, draft_model="draft"))[
        "stream_id"
    ]
    client.call("unload_model", {"model_id": "draft"})
    result = client.collect(stream_id)
    assert result["event"]["event"] == "error"
    assert "unloaded" in result["event"]["error"]
    assert client.generate(greedy("llama", "x", 4))["event"]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.9, "seed": 42},
        {"temperature": 0, "repetition_penalty": 1.3},
    ],
    ids=["seeded", "penalty"],
)
def test_a_stream_moved_into_the_batch_midway_keeps_its_tokens(
    client: RuntimeClient, sampling: dict[str, Any]
) -> None:
    params = {"model_id": "llama", "prompt": PROMPTS[0], "max_tokens": 300, **sampling}
    alone = client.generate(params)["tokens"]
    # Alone, a stream decodes outside the batch; a second stream moves it in mid-stream.
    first = client.call("generate", {**params, "stream_id": "moved"})["stream_id"]
    events = client.stream_events(first)
    seen = [next(events)["params"]["token_id"] for _ in range(10)]
    client.call("generate", greedy("llama", PROMPTS[1], 30, stream_id="joiner"))
    assert seen + client.collect(first)["tokens"] == alone
    assert len(client.collect("joiner")["tokens"]) == 30
