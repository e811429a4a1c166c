"""Write the protocol's JSON Schemas and transcripts: `python -m mlx_serving.protocol.export`.

The schemas in `protocol/schemas/` are generated, never edited; a test regenerates them and
fails on any difference, and the TypeScript types are generated from these files.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from ..config import Settings
from .envelope import ErrorFrame, NotificationFrame, RequestFrame, ResultFrame
from .errors import ERROR_CODE_NAMES, ErrorObject, ModelErrorData, ValidationErrorData
from .methods import METHODS
from .notifications import NOTIFICATIONS
from .transcripts import TRANSCRIPTS

REF_TEMPLATE = "#/$defs/{name}"


def canonical(node: Any) -> Any:
    """The schema in one form whichever msgspec release produced it: every `description`
    with its docstring indentation removed, and `null` last in every `anyOf`.

    Releases differ in both (0.23 stopped dedenting docstrings; 0.21 puts `null` first in
    an optional field's `anyOf`); the committed files must not depend on the release.
    """
    if isinstance(node, dict):
        return {key: _canonical_member(key, value) for key, value in node.items()}
    if isinstance(node, list):
        return [canonical(item) for item in node]
    return node


def _canonical_member(key: str, value: Any) -> Any:
    if key == "description" and isinstance(value, str):
        return inspect.cleandoc(value).strip()
    if key == "anyOf" and isinstance(value, list):
        null = {"type": "null"}
        return [canonical(v) for v in value if v != null] + [null] * value.count(null)
    return canonical(value)


def _document(title: str, entries: dict[str, Any]) -> dict[str, Any]:
    names = list(entries)
    schemas, defs = msgspec.json.schema_components(
        [entries[n] for n in names], ref_template=REF_TEMPLATE
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "properties": dict(zip(names, schemas, strict=True)),
        "$defs": defs,
    }


def _notifications() -> dict[str, Any]:
    shapes = {f"{name}#{i}": t for name, ts in NOTIFICATIONS.items() for i, t in enumerate(ts)}
    document = _document("mlx-serving notifications: params per notification method", shapes)
    flat = document.pop("properties")
    document["properties"] = {
        name: {"anyOf": [flat[f"{name}#{i}"] for i in range(len(ts))]}
        if len(ts) > 1
        else flat[f"{name}#0"]
        for name, ts in NOTIFICATIONS.items()
    }
    return document


def _runtime_config() -> dict[str, Any]:
    """The schema of runtime.yaml itself (for editors and for checking a file in CI)."""
    document = msgspec.json.schema(Settings, ref_template=REF_TEMPLATE)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mlx-serving runtime.yaml",
        **document,
    }


def build_schemas() -> dict[str, dict[str, Any]]:
    params = {f"{name}.params": spec.params for name, spec in METHODS.items()}
    results = {f"{name}.result": spec.result for name, spec in METHODS.items()}
    methods = _document("mlx-serving methods: params and result per method", params | results)
    methods["methods"] = {
        name: {
            "params": f"{name}.params",
            "result": f"{name}.result",
            "origin": spec.origin,
        }
        for name, spec in METHODS.items()
    }
    envelope = _document(
        "JSON-RPC 2.0 frames and error data",
        {
            "request": RequestFrame,
            "result": ResultFrame,
            "error": ErrorFrame,
            "notification": NotificationFrame,
            "error_object": ErrorObject,
            "validation_error_data": ValidationErrorData,
            "model_error_data": ModelErrorData,
        },
    )
    envelope["error_codes"] = {str(code): name for code, name in sorted(ERROR_CODE_NAMES.items())}
    return {
        "methods.json": methods,
        "notifications.json": _notifications(),
        "envelope.json": envelope,
        "runtime_config.json": _runtime_config(),
    }


def render(schema: dict[str, Any]) -> str:
    text = json.dumps(canonical(schema), indent=2, sort_keys=True, ensure_ascii=False)
    return text + "\n"


def build_files() -> dict[str, str]:
    """Every generated file under protocol/, by its path relative to that folder."""
    files = {f"schemas/{name}": render(schema) for name, schema in build_schemas().items()}
    for name, steps in TRANSCRIPTS.items():
        files[f"fixtures/{name}"] = "".join(json.dumps(step) + "\n" for step in steps())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path("protocol"), help="the repository's protocol/ folder"
    )
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    stale = []
    for name, text in build_files().items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"protocol files out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
