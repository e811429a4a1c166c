"""Rank 0's decisions, as every rank applies them: the lockstep journal.

Rank 0 records each change it makes to its batches (a lane opened, a stream admitted or
removed, a lane dropped) and each group-wide task (load, unload); before the next batch
step it sends the journal, ending with the `Step` that names the lanes to step, to every
rank in one message. The other ranks replay it in order, so all of them hold the same
batches and run the same step with the same collectives.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ..engine.sampling import SamplingSettings

Strategy = Literal["pipeline", "tensor"]


class OpenLane(msgspec.Struct, tag="open_lane"):
    model_id: str


class Admit(msgspec.Struct, tag="admit"):
    model_id: str
    stream_id: str
    prompt_tokens: list[int]
    max_tokens: int
    # With the seed rank 0 drew, so sampling draws the same tokens on every rank.
    sampling: SamplingSettings
    stop_token_ids: list[int]
    # Prompt tokens rank 0 took from its prompt cache; every rank must find as many.
    cached_tokens: int


class Remove(msgspec.Struct, tag="remove"):
    model_id: str
    stream_id: str


class DropLane(msgspec.Struct, tag="drop_lane"):
    model_id: str


class Step(msgspec.Struct, tag="step"):
    # The lanes that decode one step, in order; none when rank 0 is idle.
    model_ids: list[str]
    # Prompt tokens each of those lanes prefills in the step (rank 0 measures, all follow).
    prefill_tokens: list[int] = []
    # Idle: the next message comes no sooner than this; sleep until then rather than wait
    # inside the collective, where MLX's ring backend polls its sockets on a full core.
    idle_s: float = 0.0


class Load(msgspec.Struct, tag="load", kw_only=True):
    # Each rank resolves these on its own host, as load_model does.
    model_id: str
    local_path: str | None = None
    revision: str | None = None
    context_length: int | None = None
    trust_remote_code: bool = False
    draft: bool = False
    dtype: str | None = None
    strategy: Strategy | None = None


class Unload(msgspec.Struct, tag="unload"):
    model_id: str


class Report(msgspec.Struct, tag="report"):
    """Every rank contributes its host and memory to a gather."""


class Stop(msgspec.Struct, tag="stop"):
    """The runtime shuts down; the other ranks exit."""


Op = OpenLane | Admit | Remove | DropLane | Step | Load | Unload | Report | Stop


class Journal(msgspec.Struct, array_like=True):
    ops: list[Op]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Journal)


def encode(ops: list[Op]) -> bytes:
    return _encoder.encode(Journal(ops))


def decode(data: bytes) -> list[Op]:
    return _decoder.decode(data).ops
