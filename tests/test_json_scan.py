"""The top level of JSON text read without recursion, for frames nested past the decoder."""

from __future__ import annotations

import json

import pytest

from mlx_serving import json_scan

DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":7,"x":' + DEEP + b"}", b"7"),
        (b'{"x":' + DEEP_OBJECT + b', "id" : "a\\"b" }', b'"a\\"b"'),
        (b'{"params":{"a":' + DEEP + b'},"id":-1.5e3,"method":"m"}', b"-1.5e3"),
        # Brackets and escapes inside strings are no structure.
        (b'{"x":"]]}}\\\\","y":["\\"]"],"id":"k"}', b'"k"'),
        (b'{"id":1,"id":2}', b"2"),
        (b' {"id" :\t[1] } ', b"[1]"),
    ],
)
def test_member_reads_the_top_level_only(text: bytes, expected: bytes) -> None:
    assert json_scan.member(text, "id") == expected


@pytest.mark.parametrize(
    "text",
    [
        b'{"x":' + DEEP + b"}",  # no id
        b'{"x":' + DEEP + b',"id":1',  # not closed
        b'{"x":' + DEEP + b',"id":1} trailing',
        b'{"x":' + b"[" * 5000 + b',"id":1}',  # a nested value that never ends
        b'{"x":1 "id":2}',
        b'["id", 1]',
        b"",
    ],
)
def test_member_gives_up_on_text_that_is_not_a_well_formed_object(text: bytes) -> None:
    assert json_scan.member(text, "id") is None


def test_elements_split_the_top_level_array() -> None:
    entries = [b'{"id":1}', b'{"id":2,"x":' + DEEP + b"}", b"3", b'"]"']
    assert json_scan.elements(b"[" + b" , ".join(entries) + b"]") == entries
    assert json_scan.elements(b"[ ]") == []
    assert json_scan.elements(b"[1,2") is None
    assert json_scan.elements(b'{"a":1}') is None


def test_scalars_and_strings_round_trip() -> None:
    values = [1, -2.5e10, 'a\\b"c]}', None, True, "é😀"]
    text = json.dumps([*values, json.loads("[" * 10 + "]" * 10)]).encode()
    elements = json_scan.elements(text)
    assert elements is not None
    assert [json.loads(e) for e in elements[:-1]] == values


def test_hostile_text_costs_a_bounded_number_of_steps() -> None:
    # Brackets opening and closing in turn, or a long flat array: given up on, not walked.
    assert json_scan.member(b'{"x":[' + b"[]," * 300_000 + b'1],"id":2}', "id") is None
    assert json_scan.elements(b"[" + b"1," * 400_000 + b"1]") is None
    # Levels by the ten thousand, or escapes by the hundred thousand, are a few steps each
    # (a string holding a bracket is a step of its own).
    for level, end, depth in (
        (b"[", b"]", 100_000),
        (b'{"k":', b"}", 100_000),
        (b"[1,", b"]", 100_000),
        (b'[{"k":"[",', b"}]", 2_000),
    ):
        deep = level * depth + b"0" + end * depth
        assert json_scan.member(b'{"x":' + deep + b',"id":2}', "id") == b"2"
    assert json_scan.member(b'{"x":"' + b'a\\"' * 300_000 + b'","id":3}', "id") == b"3"


def test_text_longer_than_the_bound_is_not_scanned() -> None:
    padding = b" " * json_scan.MAX_TEXT_BYTES
    assert json_scan.member(b'{"id":1}' + padding, "id") is None
    assert json_scan.member(b'{"id":1}' + padding[:-8], "id") == b"1"
