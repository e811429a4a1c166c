"""Drive a runtime with arbitrary frames and check each answer against JSON-RPC 2.0."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from mlx_serving.protocol.methods import METHODS
from mlx_serving.testing.client import RuntimeClient

# `shutdown` would end the process under test; it has tests of its own.
FUZZED_METHODS = sorted(set(METHODS) - {"shutdown"})

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def field_names(method: str) -> list[str]:
    params = METHODS[method].params
    return list(getattr(params, "__struct_fields__", ()))


@st.composite
def wrong_typed_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request to a real method whose params hold arbitrary values."""
    method = draw(st.sampled_from(FUZZED_METHODS))
    names = field_names(method) + ["extra_field"]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    params = {name: draw(json_values) for name in chosen}
    frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if draw(st.booleans()) or True:
        frame["id"] = draw(st.one_of(st.integers(0, 2**53), st.text(max_size=10)))
    return frame


@st.composite
def envelope_variants(draw: st.DrawFn) -> Any:
    """Arbitrary JSON in the shape of (or near) a request, and batches of such."""
    base = {
        "jsonrpc": draw(st.sampled_from(["2.0", "1.0", 2, None])),
        "method": draw(st.one_of(st.sampled_from(FUZZED_METHODS), json_values)),
        "params": draw(json_values),
        "id": draw(json_values),
    }
    keys = draw(st.lists(st.sampled_from(list(base)), unique=True))
    frame = {k: base[k] for k in keys}
    return draw(st.one_of(st.just(frame), st.lists(st.just(frame), min_size=1, max_size=3)))


def nesting(depth: int, kind: str) -> bytes:
    """A JSON value `depth` levels deep: arrays, or objects."""
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def deeply_nested_requests(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A request with a readable id and, somewhere (params, an ignored member, before the
    id), nesting past what the decoder recurses into; and the id it must be answered with."""
    deep = nesting(draw(st.sampled_from([999, 1000, 5000, 50_000])), draw(st.sampled_from("[{")))
    request_id = draw(
        st.one_of(
            st.integers(-(2**53), 2**53),
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
        )
    )
    members = [
        b'"jsonrpc":"2.0"',
        b'"method":' + json.dumps(draw(st.sampled_from(FUZZED_METHODS))).encode(),
        b'"id":' + json.dumps(request_id).encode(),
    ]
    if draw(st.booleans()):
        members.append(b'"params":{"model_id":"llama","x":' + deep + b"}")
    else:
        members.append(b'"ignored":' + deep)
    return request_id, b"{" + b",".join(draw(st.permutations(members))) + b"}"


# The defaults: what one tokenize answer line holds in the worst case, and the prompt limit.
TOKENIZE_LIMIT = (16 * 2**20 - 64 * 1024 - 128) // 16
PROMPT_LIMIT = 2**20


@st.composite
def oversize_tokenizer_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """A request handing the tokenizer more than can be answered (or than a prompt may
    hold): (method, params, the field the -32602 must name)."""
    unit = draw(st.sampled_from(["a", "é", "東", "\x01", "😀", "ab "]))
    method = draw(st.sampled_from(["tokenize", "batch_tokenize", "generate", "messages"]))
    limit = PROMPT_LIMIT if method in ("generate", "messages") else TOKENIZE_LIMIT
    size = draw(st.integers(limit + 1, limit + 4096))
    text = unit * (size // len(unit.encode()) + 1)
    if method == "tokenize":
        return method, {"model_id": "llama", "text": text}, "text"
    if method == "batch_tokenize":
        return method, {"requests": [{"model_id": "llama", "text": text}]}, "requests[0].text"
    if method == "generate":
        return method, {"model_id": "llama", "prompt": text}, "prompt"
    messages = [{"role": "user", "content": text}]
    return "generate", {"model_id": "llama", "messages": messages}, "messages"


# The generated test model's vocabulary.
VOCAB = 1024


@st.composite
def out_of_vocabulary_ids(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """A request carrying one token id outside [0, VOCAB) in one of the fields a client
    can put ids in: (method, params, the field the -32602 must name)."""
    bad = draw(
        st.one_of(
            st.integers(-(2**63), -1),
            st.integers(VOCAB, 2**63 - 1),
            st.sampled_from([-1, VOCAB, -(2**31), 2**31, -50_000_000]),
        )
    )
    good = draw(st.lists(st.integers(0, VOCAB - 1), max_size=4))
    at = draw(st.integers(0, len(good)))
    ids = good[:at] + [bad] + good[at:]
    where = draw(st.sampled_from(["logit_bias", "stop_token_ids", "prompt_tokens", "tokens"]))
    base = {"model_id": "llama", "max_tokens": 2}
    if where == "logit_bias":
        return "generate", {**base, "prompt": "x", "logit_bias": {str(bad): 5}}, "logit_bias"
    if where == "stop_token_ids":
        return "generate", {**base, "prompt": "x", "stop_token_ids": ids}, "stop_token_ids"
    if where == "prompt_tokens":
        return "generate", {**base, "prompt_tokens": ids}, "prompt_tokens"
    return "detokenize", {"model_id": "llama", "tokens": ids}, "tokens"


raw_lines = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    wrong_typed_requests().map(lambda f: json.dumps(f).encode()[: -(len(json.dumps(f)) // 3)]),
)


@dataclass
class Fuzzer:
    client: RuntimeClient
    frames_sent: int = 0
    acknowledged_streams: set[str] = field(default_factory=set)
    _probes: itertools.count[int] = field(default_factory=itertools.count)

    def exchange(self, line: bytes, expect_reply_to: Any = None, timeout: float = 30) -> list[Any]:
        """Send one line, then a probe; return the frames that answered the line."""
        line = line.replace(b"\n", b" ")
        start = len(self.client.stdout_lines)
        self.client.send_raw(line + b"\n")
        self.frames_sent += 1
        probe = f"probe-{next(self._probes)}"
        self.client.send("runtime/state", request_id=probe)
        # The probe is answered inline; requests run on the worker pool may answer after
        # it, so those with a readable id are waited for by id.
        expected = _request_ids(line)
        if expect_reply_to is not None:
            expected.append(expect_reply_to)
        deadline = time.monotonic() + timeout
        while True:
            frames = [json.loads(raw) for raw in self.client.stdout_lines[start:]]
            answers = [f for f in frames if not _is_notification(f) and _id(f) != probe]
            probed = any(_id(f) == probe for f in frames)
            answered = {_id(item) for a in answers for item in (a if isinstance(a, list) else [a])}
            if probed and all(i in answered for i in expected):
                break
            assert self.client.process.poll() is None, "runtime died"
            assert time.monotonic() < deadline, f"no answer to {line[:200]!r}"
            time.sleep(0.002)
        for answer in answers:
            for item in answer if isinstance(answer, list) else [answer]:
                assert item["jsonrpc"] == "2.0"
                assert ("result" in item) != ("error" in item)
                if "error" in item:
                    assert isinstance(item["error"]["code"], int)
                    assert isinstance(item["error"]["message"], str)
                elif isinstance(item["result"], dict) and "started_at" in item["result"]:
                    # A generate acknowledgement (cancel results carry a stream_id too).
                    self.acknowledged_streams.add(item["result"]["stream_id"])
        return answers


def _request_ids(line: bytes) -> list[Any]:
    """Ids of the well-formed requests in a line (one, or a batch's): JSON-RPC 2.0 has each
    answered with its id, wherever it runs."""
    try:
        # Invalid UTF-8 (json.loads would let surrogates through), NaN and Infinity are
        # not JSON: the runtime answers such a line with null.
        value = json.loads(line.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return []
    ids = []
    for item in value if isinstance(value, list) else [value]:
        if (
            isinstance(item, dict)
            and item.get("jsonrpc") == "2.0"
            and isinstance(item.get("method"), str)
            and isinstance(item.get("id"), (str, int, float))
            and not isinstance(item.get("id"), bool)
        ):
            ids.append(item["id"])
    return ids


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def _is_notification(frame: Any) -> bool:
    return isinstance(frame, dict) and "method" in frame


def _id(frame: Any) -> Any:
    return frame.get("id", "<none>") if isinstance(frame, dict) else "<batch>"
