"""msgspec's validation messages, pinned: the runtime reads the field path out of them
(mlx_serving/msgspec_errors.py), so a msgspec release that rewords one must fail here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest
from msgspec import Meta

from mlx_serving.msgspec_errors import ValidationFailure, read_failure


class Inner(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    required: int


class Regex(msgspec.Struct, kw_only=True, tag="regex", tag_field="mode"):
    pattern: str = ""


class Grammar(msgspec.Struct, kw_only=True, tag="grammar", tag_field="mode"):
    grammar: str = ""


class Document(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    count: Annotated[int, Meta(ge=1)] = 1
    share: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.5
    name: Annotated[str, Meta(max_length=3)] = ""
    level: Literal["low", "high"] = "low"
    bias: dict[int, float] = {}
    items: list[Inner] = []
    guidance: Regex | Grammar | None = None
    top: int = 0


CASES: list[tuple[Any, str, ValidationFailure]] = [
    (
        {"count": "x"},
        "Expected `int`, got `str` - at `$.count`",
        ValidationFailure("count", "Expected `int`, got `str`", "wrong_type"),
    ),
    (
        {"count": 0},
        "Expected `int` >= 1 - at `$.count`",
        ValidationFailure("count", "Expected `int` >= 1", "out_of_range"),
    ),
    (
        {"share": 0.0},
        "Expected `float` > 0.0 - at `$.share`",
        ValidationFailure("share", "Expected `float` > 0.0", "out_of_range"),
    ),
    (
        {"name": "long"},
        "Expected `str` of length <= 3 - at `$.name`",
        ValidationFailure("name", "Expected `str` of length <= 3", "out_of_range"),
    ),
    (
        {"level": "mid"},
        "Invalid enum value 'mid' - at `$.level`",
        ValidationFailure("level", "Invalid enum value 'mid'", "invalid"),
    ),
    (
        {"bias": {"a": 1.0}},
        "Expected `int`, got `str` - at `key` in `$.bias`",
        ValidationFailure("bias", "Expected `int`, got `str`", "wrong_type", in_key=True),
    ),
    (
        {"items": [{"required": 1}, {}]},
        "Object missing required field `required` - at `$.items[1]`",
        ValidationFailure(
            "items[1].required", "Object missing required field `required`", "missing_field"
        ),
    ),
    (
        {"items": [{"required": 1, "extra": 2}]},
        "Object contains unknown field `extra` - at `$.items[0]`",
        ValidationFailure(
            "items[0].extra", "Object contains unknown field `extra`", "unknown_field"
        ),
    ),
    (
        {"guidance": {"mode": "lark"}},
        "Invalid value 'lark' - at `$.guidance.mode`",
        ValidationFailure("guidance.mode", "Invalid value 'lark'", "invalid"),
    ),
    (
        {"typo": 1},
        "Object contains unknown field `typo`",
        ValidationFailure("typo", "Object contains unknown field `typo`", "unknown_field"),
    ),
    (
        [],
        "Expected `object`, got `array`",
        ValidationFailure("", "Expected `object`, got `array`", "wrong_type"),
    ),
]


@pytest.mark.parametrize(("document", "text", "failure"), CASES)
def test_message_and_reading(document: Any, text: str, failure: ValidationFailure) -> None:
    for decode in (
        lambda: msgspec.json.decode(msgspec.json.encode(document), type=Document),
        lambda: msgspec.convert(document, Document),
    ):
        with pytest.raises(msgspec.ValidationError) as raised:
            decode()
        assert str(raised.value) == text
        assert read_failure(raised.value) == failure


def test_json_only_forms() -> None:
    """Forms only the JSON decoder produces: a mapping's value, a number too large."""
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(b'{"bias": {"1": "x"}}', type=Document)
    assert str(raised.value) == "Expected `float`, got `str` - at `$.bias[...]`"
    assert read_failure(raised.value) == ValidationFailure(
        "bias[...]", "Expected `float`, got `str`", "wrong_type"
    )
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(b'{"top": 1e400}', type=Document)
    assert str(raised.value) == "Number out of range - at `$.top`"
    assert read_failure(raised.value) == ValidationFailure("top", "Number out of range", "invalid")


def test_missing_top_level_field() -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert({}, Inner)
    assert str(raised.value) == "Object missing required field `required`"
    assert read_failure(raised.value) == ValidationFailure(
        "required", "Object missing required field `required`", "missing_field"
    )
