"""Streams through the real runtime: interleaving, cancel, stops, sampling, chat."""

from __future__ import annotations

from typing import Any

from mlx_serving.testing.client import RuntimeClient


def base(**extra: Any) -> dict[str, Any]:
    return {"model_id": "llama", "prompt": "import os\n", "temperature": 0, **extra}


def assert_well_formed(result: dict[str, Any]) -> None:
    """Chunks, then one stats, then one final event; deltas concatenate to the text."""
    assert result["stats"] is not None
    assert result["event"]["is_final"] is True
    assert all(c["stream_id"] == result["stream_id"] for c in result["chunks"])


def test_two_concurrent_streams_interleave_and_cancel_one(runtime: RuntimeClient) -> None:
    first = runtime.call("generate", base(max_tokens=2000, stream_id="long"))
    second = runtime.call("generate", base(max_tokens=30, stream_id="short", prompt="class A:"))
    assert (first["stream_id"], second["stream_id"]) == ("long", "short")
    short_result = runtime.collect("short")
    assert runtime.call("cancel", {"stream_id": "long"}) == {"stream_id": "long", "cancelled": True}
    long_result = runtime.collect("long")
    assert long_result["event"]["finish_reason"] == "cancelled"
    assert short_result["event"]["finish_reason"] == "length"
    assert len(short_result["chunks"]) == 30
    assert 0 < len(long_result["chunks"]) < 2000
    assert_well_formed(long_result)
    assert_well_formed(short_result)
    # Interleaved: the long stream kept producing while the short one ran.
    order = [
        n["params"]["stream_id"]
        for n in runtime.notifications
        if n["method"] == "stream.chunk" and n["params"]["stream_id"] in ("long", "short")
    ]
    first_short = order.index("short")
    last_short = len(order) - 1 - order[::-1].index("short")
    assert order[first_short:last_short].count("long") >= 20
    assert runtime.call("cancel", {"stream_id": "long"})["cancelled"] is False


def test_many_concurrent_streams_each_end_exactly_once(runtime: RuntimeClient) -> None:
    ids = [
        runtime.call("generate", base(max_tokens=8, stream_id=f"m{i}"))["stream_id"]
        for i in range(6)
    ]
    for stream_id in ids:
        result = runtime.collect(stream_id)
        assert len(result["chunks"]) == 8
        assert_well_formed(result)
    finals = [
        n
        for n in runtime.notifications
        if n["method"] == "stream.event" and n["params"]["stream_id"] in ids
    ]
    assert sorted(n["params"]["stream_id"] for n in finals) == sorted(ids)


def test_duplicate_live_stream_id_is_rejected(runtime: RuntimeClient) -> None:
    runtime.call("generate", base(max_tokens=200, stream_id="dup"))
    frame = runtime.request("generate", base(max_tokens=5, stream_id="dup"))
    assert frame["error"]["code"] == -32602
    assert frame["error"]["data"]["field"] == "stream_id"
    runtime.call("cancel", {"stream_id": "dup"})
    assert runtime.collect("dup")["event"]["finish_reason"] == "cancelled"


def test_stop_sequence_is_not_emitted_and_spans_tokens(runtime: RuntimeClient) -> None:
    free = runtime.generate(base(max_tokens=24))
    text = free["text"]
    # Pick a stop string that starts inside one token and ends in a later one.
    boundaries = []
    position = 0
    for chunk in free["chunks"]:
        position += len(chunk["token"])
        boundaries.append(position)
    cut = boundaries[3] - 1
    stop = text[cut : boundaries[4] + 1]
    assert len(stop) >= 2
    stopped = runtime.generate(base(max_tokens=24, stop_sequences=[stop]))
    assert stopped["event"]["finish_reason"] == "stop"
    assert stopped["text"] == text[: text.find(stop)]
    assert stop not in stopped["text"]


def test_stop_token_ids_end_the_stream(runtime: RuntimeClient) -> None:
    free = runtime.generate(base(max_tokens=12))
    target = free["tokens"][5]
    stopped = runtime.generate(base(max_tokens=12, stop_token_ids=[target]))
    assert stopped["event"]["finish_reason"] == "stop"
    assert stopped["tokens"] == free["tokens"][: free["tokens"].index(target)]


def test_same_seed_gives_same_tokens_while_other_streams_run(runtime: RuntimeClient) -> None:
    sampled = base(temperature=1.0, top_p=0.9, seed=1234, max_tokens=20)
    alone = runtime.generate(sampled)
    noise = runtime.call("generate", base(temperature=1.0, max_tokens=40, stream_id="noise"))
    beside = runtime.generate(sampled)
    runtime.collect(noise["stream_id"])
    other_seed = runtime.generate({**sampled, "seed": 99})
    assert alone["tokens"] == beside["tokens"]
    assert alone["tokens"] != other_seed["tokens"]


def test_logprobs_are_the_sampled_tokens(runtime: RuntimeClient) -> None:
    result = runtime.generate(base(max_tokens=6, logprobs=True, top_logprobs=3))
    for chunk in result["chunks"]:
        assert chunk["logprob"] <= 0.0
        top = chunk["top_logprobs"]
        assert len(top) == 3
        # Greedy picks the most likely token, so it heads the top list with the same value.
        assert top[0]["token_id"] == chunk["token_id"]
        assert abs(top[0]["logprob"] - chunk["logprob"]) < 1e-5


def test_logit_bias_forces_a_token(runtime: RuntimeClient) -> None:
    result = runtime.generate(base(max_tokens=5, logit_bias={"300": 100.0}))
    assert result["tokens"] == [300] * 5


def test_cumulative_text_only_when_asked(runtime: RuntimeClient) -> None:
    plain = runtime.generate(base(max_tokens=5))
    assert all("cumulative_text" not in c for c in plain["chunks"])
    full = runtime.generate(base(max_tokens=5, include_cumulative_text=True))
    assert full["chunks"][-1]["cumulative_text"] == full["text"]


def test_messages_use_the_chat_template(runtime: RuntimeClient) -> None:
    messages = [{"role": "user", "content": "hello"}]
    chat = runtime.generate(
        {"model_id": "llama", "messages": messages, "temperature": 0, "max_tokens": 6}
    )
    rendered = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    tokens = runtime.call("tokenize", {"model_id": "llama", "text": rendered})["tokens"]
    by_tokens = runtime.generate(
        {"model_id": "llama", "prompt_tokens": tokens, "temperature": 0, "max_tokens": 6}
    )
    assert chat["tokens"] == by_tokens["tokens"]
    assert chat["stats"]["prompt_tokens"] == len(tokens)


def test_tokenize_detokenize_round_trip(runtime: RuntimeClient) -> None:
    text = "Café 東京 😀 def f(x): return x**2"
    tokens = runtime.call("tokenize", {"model_id": "llama", "text": text})
    assert len(tokens["tokens"]) == len(tokens["token_strings"])
    back = runtime.call("detokenize", {"model_id": "llama", "tokens": tokens["tokens"]})
    assert back["text"] == text
    batch = runtime.call(
        "batch_tokenize",
        {"requests": [{"model_id": "llama", "text": "a"}, {"model_id": "nope", "text": "b"}]},
    )
    ok, failed = batch["results"]
    assert ok["success"] and ok["result"]["tokens"]
    assert not failed["success"] and failed["error_code"] == -32005
    assert isinstance(failed["error"], str)


def test_batch_generate_answers_in_input_order(runtime: RuntimeClient) -> None:
    result = runtime.call(
        "batch_generate",
        {
            "requests": [
                base(max_tokens=3, stream_id="b1"),
                {"model_id": "missing", "prompt": "x", "stream_id": "b2"},
                base(max_tokens=4, stream_id="b3"),
            ]
        },
    )
    first, missing, third = result["results"]
    assert first["success"] and first["result"]["stream_id"] == "b1"
    assert not missing["success"] and missing["error_code"] == -32005
    assert third["success"]
    assert len(runtime.collect("b1")["chunks"]) == 3
    assert len(runtime.collect("b3")["chunks"]) == 4
    frame = runtime.request(
        "batch_generate", {"requests": [base(stream_id="x"), base(stream_id="x")]}
    )
    assert frame["error"]["code"] == -32602
    assert frame["error"]["data"]["field"] == "requests[1].stream_id"
