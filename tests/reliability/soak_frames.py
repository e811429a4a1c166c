"""Seeded frames for the soak: every kind the fuzz tests draw, each with its answer.

The kinds mirror the hypothesis strategies of fuzzing.py (wrong-typed params for every
method, broken envelopes, batches, notifications, random bytes, invalid UTF-8, truncated
lines, huge numbers, deep nesting, also around a readable id, tokenize text beyond what an
answer holds) plus real requests that start streams. A seeded
`random.Random` draws them rather than hypothesis: a soak run is one long sequence that a
seed reproduces, with no shrinking to pay for.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.fuzzing import FUZZED_METHODS, TOKENIZE_LIMIT, field_names, nesting


@dataclass
class Frame:
    line: bytes
    ids: list[str] = field(default_factory=list)  # must each be answered once, by id
    id_or_null: list[str] = field(default_factory=list)  # answered once, by id or null
    nulls: int = 0  # answers without an id this line must get
    kind: str = ""


class FrameSource:
    """Seeded frames of every kind, each with the answer it must get."""

    KINDS = (
        ("wrong_typed", 30),
        ("valid", 8),
        ("envelope", 12),
        ("batch", 5),
        ("notification", 10),
        ("garbage", 35),
    )

    def __init__(self, seed: int, model_id: str) -> None:
        self.rng = random.Random(seed)
        self.model_id = model_id
        self._ids = 0
        self._kinds = [k for k, _ in self.KINDS]
        self._weights = [w for _, w in self.KINDS]
        self.started_streams: list[str] = []

    def next(self) -> Frame:
        kind = self.rng.choices(self._kinds, self._weights)[0]
        frame: Frame = getattr(self, f"_{kind}")()
        frame.kind = kind
        frame.line = frame.line.replace(b"\n", b" ")
        if not frame.line.strip():
            frame.nulls = 0  # a blank line is skipped, not answered
        return frame

    # -- values ----------------------------------------------------------------------------

    def _id(self) -> str:
        self._ids += 1
        return f"s{self._ids}"

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        choice = r.randrange(9 if depth < 3 else 6)
        if choice == 0:
            return None
        if choice == 1:
            return r.random() < 0.5
        if choice == 2:
            return r.randint(-(2**70), 2**70)
        if choice == 3:
            return r.choice([0.0, -1.5, 1e308, -1e-308, r.uniform(-1e6, 1e6)])
        if choice in (4, 5):
            return "".join(
                chr(r.choice([r.randrange(32, 127), r.randrange(0x80, 0x3000)]))
                for _ in range(r.randrange(12))
            )
        if choice == 6:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        # Keys never spell a JSON-RPC member, so a random object is never a request.
        return {f"k{r.randrange(1000)}": self.value(depth + 1) for _ in range(r.randrange(4))}

    def _params(self, method: str) -> dict[str, Any]:
        names = (field_names(method) if method in FUZZED_METHODS else []) + ["extra_field"]
        chosen = self.rng.sample(names, self.rng.randrange(len(names) + 1))
        return {name: self.value() for name in chosen}

    # -- kinds -----------------------------------------------------------------------------

    def _request(self, method: str, params: Any) -> tuple[str, bytes]:
        request_id = self._id()
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        return request_id, json.dumps(frame).encode()

    def _wrong_typed(self) -> Frame:
        method = self.rng.choice(FUZZED_METHODS)
        request_id, line = self._request(method, self._params(method))
        return Frame(line, ids=[request_id])

    def _valid(self) -> Frame:
        r = self.rng
        m = self.model_id
        choice = r.randrange(6)
        if choice == 0:
            params: Any = {"model_id": m, "text": self.value() if r.random() < 0.2 else "hi there"}
            if r.random() < 0.05:
                # More text than an answer could hold: refused before it is tokenized.
                params["text"] = "é" * (TOKENIZE_LIMIT // 2 + r.randrange(1, 1000))
            method = "tokenize"
        elif choice == 1:
            method, params = (
                "detokenize",
                {"model_id": m, "tokens": [r.randrange(200) for _ in range(5)]},
            )
            if r.random() < 0.1:
                # An id outside the vocabulary: refused before it reaches MLX.
                params["tokens"][r.randrange(5)] = r.choice([-1, 1024, 2**31, -(2**40)])
        elif choice == 2:
            method, params = "runtime/state", None
        elif choice == 3 and self.started_streams:
            method, params = "cancel", {"stream_id": r.choice(self.started_streams)}
        else:
            method = "generate"
            params = {
                "model_id": m,
                "prompt": "x" * r.randrange(1, 40),
                "max_tokens": r.randrange(1, 6),
            }
            if r.random() < 0.1:
                # Out of the vocabulary: a -32602, never an unchecked scatter in MLX.
                bad = r.choice([-1, 1024, -50_000_000, 2**40])
                field = r.choice(["logit_bias", "stop_token_ids"])
                params[field] = {str(bad): 5.0} if field == "logit_bias" else [bad]
        request_id, line = self._request(method, params)
        return Frame(line, ids=[request_id])

    def _deep_member(self) -> bytes:
        """A member nesting past what the decoder recurses into."""
        depth = self.rng.choice([1000, 5000, 50_000])
        return b'"deep":' + nesting(depth, self.rng.choice("[{"))

    def _envelope(self) -> Frame:
        """A request with one envelope member wrong; answered with its id or with null."""
        r = self.rng
        request_id = self._id()
        frame: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": r.choice(FUZZED_METHODS),
            "params": {},
        }
        broken = r.choice(
            ["jsonrpc", "method", "params", "missing_method", "missing_jsonrpc", "nested"]
        )
        if broken == "nested":
            # Deep nesting in a member nobody reads: the id is still readable.
            line = json.dumps(frame).encode()
            if r.random() < 0.5:
                line = b"{" + self._deep_member() + b"," + line[1:]
            else:
                line = line[:-1] + b"," + self._deep_member() + b"}"
            return Frame(line, ids=[request_id])
        if broken == "jsonrpc":
            frame["jsonrpc"] = r.choice(["1.0", 2, None, ""])
        elif broken == "method":
            frame["method"] = r.choice([None, 7, [], {}, "no/such/method"])
        elif broken == "params":
            frame["params"] = r.choice([7, "x", [1, 2], True])
        elif broken == "missing_method":
            del frame["method"]
        else:
            del frame["jsonrpc"]
        line = json.dumps(frame).encode()
        # Params that are no object: the envelope is fine, so the answer carries the id.
        return (
            Frame(line, ids=[request_id])
            if broken == "params"
            else Frame(line, id_or_null=[request_id])
        )

    def _batch(self) -> Frame:
        entries: list[bytes] = []
        ids = []
        deep_notifications = 0
        for _ in range(self.rng.randrange(1, 5)):
            method = self.rng.choice(FUZZED_METHODS)
            entry: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
            entry["params"] = self._params(method)
            if self.rng.random() < 0.8:
                entry["id"] = self._id()
                ids.append(entry["id"])
            encoded = json.dumps(entry).encode()
            if self.rng.random() < 0.05:
                # An entry nested too deeply costs the batch only that entry's answer (by
                # id; null for a notification, which cannot be told from a bad request).
                encoded = encoded[:-1] + b"," + self._deep_member() + b"}"
                deep_notifications += "id" not in entry
            entries.append(encoded)
        # The soak counts lines answered without any id: such entries alone make one.
        nulls = 1 if deep_notifications and not ids else 0
        return Frame(b"[" + b",".join(entries) + b"]", ids=ids, nulls=nulls)

    def _notification(self) -> Frame:
        method = self.rng.choice(FUZZED_METHODS + ["no_such_method"])
        frame = {"jsonrpc": "2.0", "method": method, "params": self._params(method)}
        return Frame(json.dumps(frame).encode())

    def _garbage(self) -> Frame:
        r = self.rng
        choice = r.randrange(8)
        if choice == 0:
            line = r.randbytes(r.randrange(1, 64))
        elif choice == 1:  # invalid UTF-8 inside otherwise fine JSON
            line = b'{"jsonrpc":"2.0","id":"x","method":"runtime/info","p":"\xff\xfe"}'
        elif choice == 2:  # a request cut short
            _, whole = self._request(r.choice(FUZZED_METHODS), {"text": "abc", "n": 12345})
            line = whole[: r.randrange(1, len(whole) - 1)]
        elif choice == 3:  # a JSON value that is no request
            line = json.dumps(self.value()).encode()
        elif choice == 4:  # deep nesting
            depth = r.choice([100, 1000, 10_000, 50_000])
            line = (
                (b"[" * depth + b"]" * depth)
                if r.random() < 0.5
                else (b'{"a":' * depth + b"1" + b"}" * depth)
            )
        elif choice == 5:  # huge numbers
            line = r.choice([b"1e400", b"-" + b"9" * 5000, b'{"a":1e999999}'])
        elif choice == 6:  # an empty batch
            line = b"[]"
        else:  # random text, sometimes with lone surrogates
            text = "".join(chr(r.randrange(0x20, 0xE000)) for _ in range(r.randrange(1, 40)))
            line = text.encode("utf-8", "surrogatepass")
        return Frame(line, nulls=1)
