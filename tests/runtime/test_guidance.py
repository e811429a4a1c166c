"""Structured output through the runtime process: JSON Schema, regex and grammar guidance on
a random-weight model, which never writes valid JSON on its own, so every valid output here
is the token mask's doing.

The schemas bound every string, array and object they contain, so each output fits the
token budget whatever the model picks (only the digits of a non-integer number are
unbounded; these seeds close them well within it).
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

import jsonschema
import pytest

from mlx_serving.testing.client import RemoteError, RuntimeClient

MODEL = "llama"

SCHEMAS: dict[str, dict[str, Any]] = {
    "required_fields": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 9999},
            "name": {"type": "string", "minLength": 1, "maxLength": 16},
            "active": {"type": "boolean"},
            "note": {"type": ["string", "null"], "maxLength": 8},
        },
        "required": ["id", "name", "active"],
        "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
            "level": {"enum": [1, 2, 3, None]},
        },
        "required": ["color", "size", "level"],
        "additionalProperties": False,
    },
    "bounded_array": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 99},
        "minItems": 2,
        "maxItems": 5,
    },
    "nested_objects": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 10},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "maxLength": 10},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        },
                        "required": ["city", "zip"],
                        "additionalProperties": False,
                    },
                },
                "required": ["name", "address"],
                "additionalProperties": False,
            },
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 6},
                "maxItems": 3,
            },
        },
        "required": ["user", "tags"],
        "additionalProperties": False,
    },
    "number_ranges": {
        "type": "object",
        "properties": {
            "celsius": {"type": "number", "minimum": -40, "maximum": 60},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["celsius", "ratio", "count"],
        "additionalProperties": False,
    },
    "string_patterns": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
            "date": {"type": "string", "format": "date"},
        },
        "required": ["code", "email", "date"],
        "additionalProperties": False,
    },
    "refs_and_alternatives": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -9, "maximum": 9},
                    "y": {"type": "integer", "minimum": -9, "maximum": 9},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "shape": {"anyOf": [{"const": "dot"}, {"enum": ["line", "polygon"]}]},
            "points": {"type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 3},
        },
        "required": ["shape", "points"],
        "additionalProperties": False,
    },
}

# Greedy once, then sampled with several seeds.
SAMPLINGS: list[dict[str, Any]] = [
    {"temperature": 0},
    {"temperature": 0.9, "seed": 1},
    {"temperature": 1.0, "seed": 2, "top_p": 0.95},
    {"temperature": 1.3, "seed": 3},
]

MAX_TOKENS = 160


def generate(client: RuntimeClient, guidance: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params = {"model_id": MODEL, "prompt": "Answer in JSON:", "max_tokens": MAX_TOKENS}
    return client.generate({**params, "guidance": guidance, **extra})


def assert_completed(result: dict[str, Any]) -> None:
    assert result["event"].get("finish_reason") == "stop", result["event"]
    assert result["stats"]["guidance_valid"] is True, result["text"]


def test_capabilities_list_the_guidance_modes(runtime: RuntimeClient) -> None:
    capabilities = runtime.call("runtime/info")["capabilities"]
    for mode in ("json_schema", "regex", "grammar"):
        assert f"guidance:{mode}" in capabilities


def test_the_model_alone_writes_no_json(runtime: RuntimeClient) -> None:
    result = runtime.generate(
        {"model_id": MODEL, "prompt": "Answer in JSON:", "max_tokens": 40, "temperature": 0}
    )
    with pytest.raises(ValueError):
        json.loads(result["text"])
    assert result["stats"]["guidance_valid"] is None


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_output_validates_against_the_schema(runtime: RuntimeClient, name: str) -> None:
    schema = SCHEMAS[name]
    texts = []
    for sampling in SAMPLINGS:
        result = generate(runtime, {"mode": "json_schema", "schema": schema}, **sampling)
        assert_completed(result)
        jsonschema.validate(json.loads(result["text"]), schema)
        texts.append(result["text"])
    assert len(set(texts)) > 1, texts  # the seeds did sample different outputs


def test_streams_with_and_without_schema_share_a_batch(runtime: RuntimeClient) -> None:
    free = {"model_id": MODEL, "prompt": "def main():", "max_tokens": 48, "temperature": 0}
    alone = runtime.generate(free)["tokens"]
    schema = SCHEMAS["nested_objects"]
    first = len(runtime.notifications)
    ids = [
        runtime.call("generate", {**free, "stream_id": "free"})["stream_id"],
        runtime.call(
            "generate",
            {
                "model_id": MODEL,
                "prompt": "JSON:",
                "max_tokens": MAX_TOKENS,
                "temperature": 0.8,
                "seed": 5,
                "stream_id": "constrained",
                "guidance": {"mode": "json_schema", "schema": schema},
            },
        )["stream_id"],
    ]
    free_result, constrained = (runtime.collect(stream_id) for stream_id in ids)
    assert free_result["tokens"] == alone  # the neighbour's mask never touches this row
    assert free_result["event"]["finish_reason"] == "length"
    assert free_result["stats"]["guidance_valid"] is None
    assert_completed(constrained)
    jsonschema.validate(json.loads(constrained["text"]), schema)
    # Both were decoding at once: their chunks interleave.
    order = [
        n["params"]["stream_id"]
        for n in runtime.notifications[first:]
        if n["method"] == "stream.chunk" and n["params"]["stream_id"] in ids
    ]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches >= 4, order


def test_many_constrained_streams_at_once(runtime: RuntimeClient) -> None:
    names = list(SCHEMAS)
    ids = [
        runtime.call(
            "generate",
            {
                "model_id": MODEL,
                "prompt": f"Item {i}:",
                "max_tokens": MAX_TOKENS,
                "temperature": 1.0,
                "seed": 100 + i,
                "stream_id": f"many-{i}",
                "guidance": {"mode": "json_schema", "schema": SCHEMAS[name]},
            },
        )["stream_id"]
        for i, name in enumerate(names)
    ]
    for stream_id, name in zip(ids, names, strict=True):
        result = runtime.collect(stream_id)
        assert_completed(result)
        jsonschema.validate(json.loads(result["text"]), SCHEMAS[name])


REGEXES = [
    r"[A-Z]{2}-[0-9]{3}",
    r"(yes|no|maybe)",
    r"[a-z]{1,10}@[a-z]{1,10}\.(com|net)",
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    r"(0|[1-9][0-9]{0,2})(\.[0-9]{1,2})?",
    r"The answer is (42|forty-two)\.",
]


@pytest.mark.parametrize("pattern", REGEXES)
def test_output_matches_the_regex(runtime: RuntimeClient, pattern: str) -> None:
    for sampling in SAMPLINGS:
        result = generate(runtime, {"mode": "regex", "pattern": pattern}, **sampling)
        assert_completed(result)
        assert re.fullmatch(pattern, result["text"]), (pattern, result["text"])


ARITHMETIC = r"""
start: expr
expr: term (OP term){0,3}
term: NUMBER | "(" NUMBER (OP NUMBER){1,2} ")"
OP: " + " | " - " | " * "
NUMBER: /[1-9][0-9]{0,2}/
"""

# llama.cpp's GBNF is accepted too (llguidance converts it to Lark).
KEY_VALUES_GBNF = r"""
root ::= pair ("; " pair){0,2}
pair ::= [a-z]{1,6} "=" ("true" | "false" | [0-9]{1,3})
"""


def test_output_parses_with_the_lark_grammar(runtime: RuntimeClient) -> None:
    for sampling in SAMPLINGS:
        result = generate(runtime, {"mode": "grammar", "grammar": ARITHMETIC}, **sampling)
        assert_completed(result)
        # An independent parser: Python's own, for the arithmetic the grammar describes.
        tree = ast.parse(result["text"], mode="eval")
        allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult)
        assert all(isinstance(node, allowed) for node in ast.walk(tree)), result["text"]
        assert isinstance(eval(compile(tree, "<output>", "eval")), int)


def test_output_parses_with_a_gbnf_grammar(runtime: RuntimeClient) -> None:
    for sampling in SAMPLINGS:
        result = generate(runtime, {"mode": "grammar", "grammar": KEY_VALUES_GBNF}, **sampling)
        assert_completed(result)
        pairs = result["text"].split("; ")
        assert 1 <= len(pairs) <= 3
        assert all(re.fullmatch(r"[a-z]{1,6}=(true|false|[0-9]{1,3})", p) for p in pairs)


def test_budget_spent_before_the_schema_closes(runtime: RuntimeClient) -> None:
    result = generate(
        runtime, {"mode": "json_schema", "schema": SCHEMAS["nested_objects"]}, max_tokens=4
    )
    assert result["event"]["finish_reason"] == "length"
    assert result["stats"]["guidance_valid"] is False


def test_logprobs_stay_finite_under_a_mask(runtime: RuntimeClient) -> None:
    result = generate(
        runtime,
        {"mode": "regex", "pattern": r"(yes|no)"},
        temperature=0,
        logprobs=True,
        top_logprobs=20,
    )
    assert_completed(result)
    for chunk in result["chunks"]:
        assert math.isfinite(chunk["logprob"])
        assert 1 <= len(chunk["top_logprobs"]) <= 20
        assert all(math.isfinite(t["logprob"]) for t in chunk["top_logprobs"])


@pytest.mark.parametrize(
    ("guidance", "field", "reason"),
    [
        ({"mode": "json_schema", "schema": {"type": "wat"}}, "guidance.schema.type", "wat"),
        (
            {"mode": "json_schema", "schema": {"properties": {"a": {"maxLength": -1}}}},
            "guidance.schema.properties.a.maxLength",
            "-1",
        ),
        (
            {"mode": "json_schema", "schema": {"type": "array", "uniqueItems": True}},
            "guidance.schema",
            "uniqueItems",
        ),
        (
            {"mode": "json_schema", "schema": {"type": "string", "format": "no-such-format"}},
            "guidance.schema",
            "no-such-format",
        ),
        (
            {"mode": "json_schema", "schema": {"type": "integer", "minimum": 5, "maximum": 3}},
            "guidance.schema",
            "minimum",
        ),
        ({"mode": "json_schema", "schema": {"$ref": "#/$defs/none"}}, "guidance.schema", "none"),
        ({"mode": "regex", "pattern": "a(b"}, "guidance.pattern", "unclosed group"),
        ({"mode": "grammar", "grammar": "start: missing_rule"}, "guidance.grammar", "missing"),
        ({"mode": "grammar", "grammar": 'start: "a" ('}, "guidance.grammar", "invalid grammar"),
        ({"mode": "xml", "schema": {}}, "guidance.mode", "xml"),
        # Compiles, but the matcher gives up some tokens in: found by a short walk.
        ({"mode": "regex", "pattern": "([a-z]{1,50}){1,50}x"}, "guidance.pattern", "hold"),
        (
            {"mode": "grammar", "grammar": 'start: "id=" WORDS\nWORDS: /([a-z]{1,50}){1,50}x/'},
            "guidance.grammar",
            "too many expressions",
        ),
        (
            {
                "mode": "json_schema",
                "schema": {"type": "string", "pattern": "^([a-z]{1,50}){1,50}x$"},
            },
            "guidance.schema",
            "too many expressions",
        ),
    ],
)
def test_invalid_guidance_is_rejected_up_front(
    runtime: RuntimeClient, guidance: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(RemoteError) as raised:
        runtime.call("generate", {"model_id": MODEL, "prompt": "x", "guidance": guidance})
    error = raised.value.error
    assert error["code"] == -32602
    assert error["data"]["field"] == field, error
    assert reason in error["message"], error


def test_a_matcher_that_gives_up_mid_stream_ends_the_stream_with_an_error(
    runtime: RuntimeClient,
) -> None:
    # Past the short walk's reach (300 letters first), the matcher gives up as the
    # refused regex above does: the runtime must not call the forced end a `stop`.
    pattern = "[a-z]{300}([a-z]{1,50}){1,50}x"
    result = generate(runtime, {"mode": "regex", "pattern": pattern}, max_tokens=1000)
    event = result["event"]
    assert event["event"] == "error", event
    assert "too many expressions" in event["error"]
    assert result["stats"]["guidance_valid"] is not True


def test_guidance_with_a_draft_model_is_rejected(runtime: RuntimeClient) -> None:
    with pytest.raises(RemoteError) as raised:
        runtime.call(
            "generate",
            {
                "model_id": MODEL,
                "prompt": "x",
                "draft_model": MODEL,
                "guidance": {"mode": "regex", "pattern": "a"},
            },
        )
    assert raised.value.code == -32602
    assert raised.value.error["data"]["field"] == "draft_model"
