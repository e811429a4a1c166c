"""Ranks 1 … N-1: replay rank 0's journal and run the same batch steps.

A follower holds the same models (its shard of each) and the same batches as rank 0,
changed only by the ops rank 0 sends, in the order it sends them. It produces no output:
the tokens of a step are rank 0's to stream. Anything unexpected ends the process, which
breaks its connections, which rank 0 sees at once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..config import Settings
from ..engine.batch_lane import BatchLane
from ..engine.loader import LoadedModel
from ..engine.sampling import make_processors, make_sampler
from ..engine.stream import StreamRequest
from .channel import Channel
from .group import gather_status
from .loading import RanksRefused, load_on_all_ranks
from .lockstep import lockstep_lane
from .ops import (
    Admit,
    DropLane,
    Load,
    Op,
    OpenLane,
    Remove,
    Report,
    Step,
    Stop,
    Unload,
    decode,
)

log = logging.getLogger(__name__)

_NAP_MARGIN_S = 0.002


class LockstepError(Exception):
    """This rank's state no longer matches rank 0's."""


class Follower:
    def __init__(self, channel: Channel, settings: Settings) -> None:
        self._channel = channel
        self._settings = settings
        self._models: dict[str, LoadedModel] = {}
        self._lanes: dict[str, BatchLane] = {}

    def run(self) -> None:
        """Until rank 0 sends Stop (or the group breaks: the backend raises)."""
        while True:
            for op in decode(self._channel.broadcast()):
                if isinstance(op, Stop):
                    log.info("rank 0 stopped the group")
                    return
                self._apply(op)

    def _apply(self, op: Op) -> None:
        if isinstance(op, Step):
            # In rank 0's order: every batch decodes, then every batch prefills.
            for model_id in op.model_ids:
                self._lanes[model_id].decode()
            for model_id, tokens in zip(op.model_ids, op.prefill_tokens, strict=True):
                self._lanes[model_id].prefill(tokens)
            if op.idle_s > 0:
                # Back inside the collective just before rank 0's next tick; a request
                # that comes sooner waits for us inside rank 0's broadcast.
                time.sleep(max(op.idle_s - _NAP_MARGIN_S, 0.0))
        elif isinstance(op, Admit):
            self._admit(op)
        elif isinstance(op, Remove):
            self._lanes[op.model_id].remove(op.stream_id)
        elif isinstance(op, OpenLane):
            self._lanes[op.model_id] = lockstep_lane(
                self._models[op.model_id], self._settings.scheduler
            )
        elif isinstance(op, DropLane):
            self._lanes.pop(op.model_id).close()
        elif isinstance(op, Report):
            gather_status(self._channel)
        elif isinstance(op, Load):
            self._load(op)
        elif isinstance(op, Unload):
            self._models.pop(op.model_id, None)

    def _admit(self, op: Admit) -> None:
        loaded = self._models[op.model_id]
        request = StreamRequest(
            stream_id=op.stream_id,
            model=loaded,
            prompt_tokens=op.prompt_tokens,
            max_tokens=op.max_tokens,
            sampler=make_sampler(op.sampling),
            logits_processors=make_processors(op.sampling),
            stop_sequences=[],
            stop_token_ids=frozenset(op.stop_token_ids),
        )
        eos = set(loaded.tokenizer.eos_token_ids)
        cached = self._lanes[op.model_id].admit(request, eos)
        if cached != op.cached_tokens:
            raise LockstepError(
                f"stream {op.stream_id}: {cached} prompt tokens cached here, "
                f"{op.cached_tokens} on rank 0"
            )

    def _load(self, op: Load) -> None:
        try:
            loaded = load_on_all_ranks(self._channel, op, Path(self._settings.models.cache_dir))
        except RanksRefused as exc:
            log.info("load of %s refused on every rank: %s", op.model_id, exc)
            return
        self._models[op.model_id] = loaded
        log.info("loaded %s (%s)", op.model_id, loaded.sharding)
