"""Example transcripts of the wire, written to `protocol/fixtures/*.jsonl` by `export`.

Each line of a transcript is one step: `send` (a frame, or a raw string sent as is) and
`expect` (the frames that must come back, in any order across ids, in order within a
stream). In expected frames these strings are placeholders: `<int>`, `<number>`,
`<string>`, `<bool>`, `<any>`; `$MODEL_DIR` in a sent frame is the path of a generated test
model. Both the Python and the TypeScript suites replay these files against the runtime.
"""

from __future__ import annotations

from typing import Any

Step = dict[str, Any]


def _request(method: str, request_id: Any, params: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        frame["params"] = params
    return frame


def _error(request_id: Any, code: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": "<string>"}}


def _info_result(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": "<any>"}


def jsonrpc_conformance() -> list[Step]:
    """The JSON-RPC 2.0 specification's examples (PROTOCOL.md appendix)."""
    return [
        {"send": _request("foobar", "1"), "expect": [_error("1", -32601)]},
        {
            "send": '{"jsonrpc":"2.0","method":"foobar, "params":"bar", "baz]',
            "expect": [_error(None, -32700)],
        },
        {"send": '{"jsonrpc":"2.0","method":1,"params":"bar"}', "expect": [_error(None, -32600)]},
        {
            "send": '[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},'
            '{"jsonrpc":"2.0","method"',
            "expect": [_error(None, -32700)],
        },
        {"send": "[]", "expect": [_error(None, -32600)]},
        {"send": "[1]", "expect": [[_error(None, -32600)]]},
        {"send": "[1,2,3]", "expect": [[_error(None, -32600)] * 3]},
        {
            "send": [
                _request("runtime/info", "1"),
                {"jsonrpc": "2.0", "method": "runtime/state"},
                _request("subtract", "2", {"minuend": 42}),
                {"foo": "boo"},
                _request("runtime/state", "9"),
            ],
            "expect": [
                [
                    _info_result("1"),
                    _error("2", -32601),
                    _error(None, -32600),
                    _info_result("9"),
                ]
            ],
        },
        {
            "send": [
                {"jsonrpc": "2.0", "method": "runtime/info"},
                {"jsonrpc": "2.0", "method": "foobar"},
            ],
            "expect": [],
        },
        {"send": {"jsonrpc": "2.0", "method": "foobar", "params": {}}, "expect": []},
        {"send": _request("foobar", 1.5), "expect": [_error(1.5, -32601)]},
        {"send": _request("foobar", None), "expect": [_error(None, -32601)]},
        # A readable id is echoed even when the request is invalid for another reason.
        {
            "send": {"jsonrpc": "1.0", "method": "runtime/info", "id": 5},
            "expect": [_error(5, -32600)],
        },
        {
            "send": _request("runtime/info", "readiness-probe"),
            "expect": [_info_result("readiness-probe")],
        },
    ]


def _notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def _load_progress(model_id: str, stage: str, done: int, total: int) -> dict[str, Any]:
    return _notification(
        "runtime.progress",
        {
            "task": "load",
            "model_id": model_id,
            "done": done,
            "total": total,
            "unit": "stages",
            "stage": stage,
        },
    )


def _event(event: str, **fields: Any) -> dict[str, Any]:
    return _notification("runtime.event", {"event": event, "timestamp": "<number>", **fields})


def generate_stream() -> list[Step]:
    """Load a model, stream four greedy tokens, tokenize, cancel an ended stream, unload;
    with the load's progress and the runtime.event notifications (telemetry.events)."""
    chunk = _notification(
        "stream.chunk", {"stream_id": "s1", "token": "<string>", "token_id": "<int>"}
    )
    return [
        {
            "send": _request(
                "load_model", "load", {"model_id": "tiny", "local_path": "$MODEL_DIR"}
            ),
            "expect": [
                _load_progress("tiny", "resolving", 0, 2),
                _load_progress("tiny", "loading_weights", 1, 2),
                _load_progress("tiny", "ready", 2, 2),
                _event(
                    "model_loaded",
                    model_id="tiny",
                    load_time="<number>",
                    context_length="<int>",
                    parameter_count="<int>",
                    dtype="float32",
                    draft=False,
                ),
                {
                    "jsonrpc": "2.0",
                    "id": "load",
                    "result": {
                        "model_id": "tiny",
                        "state": "ready",
                        "context_length": "<int>",
                        "parameter_count": "<int>",
                        "dtype": "float32",
                        "is_vision_model": False,
                        "cached_path": "<string>",
                        "draft": False,
                    },
                },
            ],
        },
        {
            "send": _request(
                "generate",
                "gen",
                {
                    "model_id": "tiny",
                    "prompt": "Hello",
                    "max_tokens": 4,
                    "temperature": 0,
                    "stream_id": "s1",
                },
            ),
            "expect": [
                {
                    "jsonrpc": "2.0",
                    "id": "gen",
                    "result": {"stream_id": "s1", "started_at": "<number>"},
                },
                _event(
                    "generation_started",
                    stream_id="s1",
                    model_id="tiny",
                    prompt_tokens="<int>",
                    max_tokens=4,
                ),
                chunk,
                chunk,
                chunk,
                chunk,
                {
                    "jsonrpc": "2.0",
                    "method": "stream.stats",
                    "params": {
                        "stream_id": "s1",
                        "tokens_generated": 4,
                        "tokens_per_second": "<number>",
                        "time_to_first_token": "<number>",
                        "total_time": "<number>",
                        "prompt_tokens": "<int>",
                        "cached_prompt_tokens": 0,
                        "draft_tokens_accepted": 0,
                        "guidance_valid": None,
                        "queue_time": "<number>",
                    },
                },
                {
                    "jsonrpc": "2.0",
                    "method": "stream.event",
                    "params": {
                        "stream_id": "s1",
                        "event": "completed",
                        "finish_reason": "length",
                        "is_final": True,
                    },
                },
                _event(
                    "generation_completed",
                    stream_id="s1",
                    model_id="tiny",
                    finish_reason="length",
                    tokens_generated=4,
                    time_to_first_token="<number>",
                    total_time="<number>",
                ),
            ],
        },
        {
            "send": _request("cancel", "c", {"stream_id": "s1"}),
            "expect": [
                {"jsonrpc": "2.0", "id": "c", "result": {"stream_id": "s1", "cancelled": False}}
            ],
        },
        {
            "send": _request("tokenize", "t", {"model_id": "tiny", "text": "Hello"}),
            "expect": [
                {
                    "jsonrpc": "2.0",
                    "id": "t",
                    "result": {"tokens": "<any>", "token_strings": "<any>"},
                }
            ],
        },
        {
            "send": _request(
                "generate", "bad", {"model_id": "tiny", "prompt": "x", "max_tokens": 0}
            ),
            "expect": [
                {
                    "jsonrpc": "2.0",
                    "id": "bad",
                    "error": {
                        "code": -32602,
                        "message": "<string>",
                        "data": {
                            "type": "ValidationError",
                            "field": "max_tokens",
                            "issues": "<any>",
                        },
                    },
                }
            ],
        },
        {
            "send": _request("generate", "nomodel", {"model_id": "absent", "prompt": "x"}),
            "expect": [
                {
                    "jsonrpc": "2.0",
                    "id": "nomodel",
                    "error": {
                        "code": -32005,
                        "message": "<string>",
                        "data": {"type": "ApplicationError", "model_id": "absent"},
                    },
                }
            ],
        },
        {
            "send": _request("unload_model", "u", {"model_id": "tiny"}),
            "expect": [
                _event("model_unloaded", model_id="tiny", reason="unloaded"),
                {"jsonrpc": "2.0", "id": "u", "result": {"success": True}},
            ],
        },
    ]


TRANSCRIPTS = {
    "jsonrpc_conformance.jsonl": jsonrpc_conformance,
    "generate_stream.jsonl": generate_stream,
}
