"""The committed schemas and transcripts are exactly what the Structs generate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec

from mlx_serving.handlers import RuntimeContext, build_methods
from mlx_serving.protocol.export import build_files, build_schemas, render
from mlx_serving.protocol.methods import METHODS, GenerateParams

ROOT = Path(__file__).resolve().parents[2]


def test_committed_protocol_files_match_the_structs() -> None:
    out = ROOT / "protocol"
    for name, text in build_files().items():
        path = out / name
        assert path.exists(), f"{name} is missing: run python -m mlx_serving.protocol.export"
        assert path.read_text() == text, (
            f"{name} drifted: run python -m mlx_serving.protocol.export"
        )


def test_schemas_are_valid_and_agree_with_msgspec() -> None:
    methods = build_schemas()["methods.json"]
    jsonschema.Draft202012Validator.check_schema(methods)
    schema = {**methods["properties"]["generate.params"], "$defs": methods["$defs"]}
    good = {
        "model_id": "m",
        "prompt": "hi",
        "max_tokens": 5,
        "guidance": {"mode": "regex", "pattern": "a+"},
    }
    jsonschema.validate(good, schema)
    msgspec.convert(good, GenerateParams)
    bad = {"model_id": "m", "max_tokens": 0}
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)


def test_method_table_serves_exactly_the_declared_methods() -> None:
    class _Residency:
        def reload_with(self, _: object) -> None: ...
        def on_evicted(self, _: object) -> None: ...

    class _Engine:
        scheduler = None
        models: list[object] = []
        residency = _Residency()

        def distributed_status(self) -> object:
            return msgspec.UNSET

    from mlx_serving.config import Settings

    context = RuntimeContext(engine=_Engine(), settings=Settings(), request_shutdown=lambda: None)  # type: ignore[arg-type]
    table = build_methods(context)
    assert set(table) == set(METHODS)
    for name, method in table.items():
        assert method.params is METHODS[name].params, name


def test_transcripts_are_json_lines() -> None:
    for path in (ROOT / "protocol" / "fixtures").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            assert {"send", "expect"} <= json.loads(line).keys()


def test_descriptions_do_not_depend_on_how_msgspec_copied_the_docstring() -> None:
    """One msgspec release dedents docstrings, another keeps their indentation."""
    indented = {
        "description": "First line (compat clients do\n    `new Error(error)`); more.",
        "properties": {"description": {"type": "string", "description": "  Name.\n  "}},
        "anyOf": [{"description": "A\n        b"}],
    }
    clean = {
        "description": "First line (compat clients do\n`new Error(error)`); more.",
        "properties": {"description": {"type": "string", "description": "Name."}},
        "anyOf": [{"description": "A\nb"}],
    }
    assert render(indented) == render(clean)

    class Documented(msgspec.Struct):
        """Two lines,
        the second indented as a docstring is."""

        name: str

    schema = msgspec.json.schema(Documented)
    assert "the second indented" in render(schema)
    assert "\\n        the second" not in render(schema)
    assert "Two lines,\\nthe second indented" in render(schema)


def test_null_comes_last_in_any_of_whatever_order_msgspec_chose() -> None:
    """msgspec 0.21 puts null first in an optional field's anyOf, 0.22 and later last."""
    null_first = {"anyOf": [{"type": "null"}, {"type": "string"}], "default": None}
    null_last = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert render(null_first) == render(null_last)
