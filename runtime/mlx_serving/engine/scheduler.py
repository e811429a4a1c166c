"""Runs every active stream on one engine thread.

The streams of a model share one continuous batch (`BatchLane`): each step decodes a token
for all of them and prefills one chunk of any waiting prompt. Streams with a draft model
run alone (`SpeculativeLane`) between batch steps. Request threads only queue work and set
flags; all MLX work happens here. The notifications of one step go to the sink together,
so the writer flushes them as one batch.

The `_lane_*`, `_decode_lane` and `_prefill_lane` hooks are where a distributed runtime
keeps its other ranks in step (distributed/scheduler.py); here they do nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import mlx.core as mx

from ..config import SchedulerConfig
from ..protocol.notifications import FinishReason, StreamFailed
from .batch_lane import BatchLane, LaneToken, new_lane
from .between_steps import BetweenSteps
from .detokenize import TextAssembler
from .loader import LoadedModel
from .pending_streams import PendingStreams
from .speculative_lane import SpeculativeLane
from .stream import StreamRequest, StreamSink
from .stream_outbox import StreamOutbox
from .stream_output import ActiveStream, Notification

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _ModelLane:
    model: LoadedModel
    lane: BatchLane


class Scheduler:
    # How long the engine thread sleeps with nothing to do; None: until woken.
    _idle_wait: float | None = None

    def __init__(
        self, sink: StreamSink, max_active_streams: int, batch: SchedulerConfig | None = None
    ) -> None:
        self._sink = sink
        self._batch = batch or SchedulerConfig()
        self._streams: dict[str, ActiveStream] = {}
        self._lanes: dict[str, _ModelLane] = {}  # model_id -> its batch
        self._speculative: dict[str, SpeculativeLane] = {}  # stream_id -> its lane
        self._admitted: list[StreamRequest] = []
        # Taken by the engine thread but not yet in _streams: unload must still see them.
        self._admitting: list[StreamRequest] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._pending = PendingStreams(self._cond, max_active_streams)
        # Models the registry let go of whose batch the engine thread still has to drop.
        self._retired_models: list[LoadedModel] = []
        self._outbox = StreamOutbox(sink)
        # Told the duration and prefill tokens of each batch step (the runtime's metrics).
        self.on_step: Callable[[float, int], None] | None = None
        # Told each stream id released, from any thread (the memory ledger frees its KV).
        self.on_release: Callable[[str], None] | None = None
        self._between_steps = BetweenSteps(self._cond)
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    # -- called from request threads -------------------------------------------------------

    def reserve(self, stream_id: str) -> None:
        """Claim a stream id before the request is acknowledged (pending_streams.py)."""
        self._pending.reserve(stream_id)

    def release(self, stream_id: str) -> None:
        self._pending.release(stream_id)
        if self.on_release is not None:
            self.on_release(stream_id)

    def start(self, request: StreamRequest) -> None:
        with self._cond:
            self._enqueue(request)

    def _enqueue(self, request: StreamRequest) -> None:
        """Hand a stream to the engine thread (the caller holds `_cond`)."""
        self._outbox.track(request)
        self._admitted.append(request)
        self._cond.notify()

    def cancel(self, stream_id: str, reason: str = "cancelled") -> bool:
        with self._cond:
            if stream_id not in self._pending:
                return False
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.cancel_reason = reason
            else:
                self._pending.cancel_on_admission(stream_id)
            self._cond.notify()
            return True

    def run_between_steps(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Run `work` on the engine thread between two batch steps (between_steps.py)."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the runtime is shutting down")
        return self._between_steps.submit(work, timeout)

    def fail_model(self, model: LoadedModel, reason: str) -> None:
        """End every stream of a model with an error (the model is unloaded or replaced),
        and drop its batch and prompt cache. Streams started later on it fail at admission
        (`LoadedModel.retirement`)."""
        with self._cond:
            for stream in self._streams.values():
                if stream.request.runs_on(model):
                    stream.failure = reason
            for request in self._admitted + self._admitting:
                if request.stream_id in self._streams:
                    continue  # already flagged above
                if request.runs_on(model):
                    self._pending.fail_on_admission(request.stream_id, reason)
            self._retired_models.append(model)
            self._cond.notify()

    @property
    def active_count(self) -> int:
        return len(self._pending)

    def prompt_cache_stats(self) -> dict[str, dict[str, float]]:
        with self._cond:
            lanes = dict(self._lanes)
        return {model_id: entry.lane.prompt_cache.stats() for model_id, entry in lanes.items()}

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel every stream (each still gets its final event), then end the thread.

        The thread notices between steps; a step can outlast `timeout` (a long prompt's
        prefill chunk on a slow machine), and then the streams end from here instead."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the engine thread is still in a step; ending its streams from here")
            with self._cond:
                generated = {sid: stream.generated for sid, stream in self._streams.items()}
            self._outbox.end_unfinished(generated)

    def _emit(self, out: list[Notification]) -> None:
        self._outbox.emit(out)

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_work():
                    if not self._cond.wait(self._idle_wait):
                        break  # idle for _idle_wait: an iteration with nothing to admit
                admitted, self._admitted = self._admitted, []
                self._admitting = admitted
                stopping = self._stopping
                retired, self._retired_models = self._retired_models, []
            out: list[Notification] = []
            try:
                if self._iterate(admitted, stopping, retired, out):
                    return
            except Exception as exc:
                # A bug here must not kill the engine thread: every stream would then wait
                # forever. End what is live with the reason and go on serving.
                log.exception("engine iteration failed")
                self._fail_everything(f"internal error: {type(exc).__name__}: {exc}")
            # While the thread waits for work, nothing of this pass may keep a model (and
            # its weights) alive after an unload.
            del admitted, retired, out

    def _fail_everything(self, reason: str) -> None:
        with self._cond:
            self._lanes.clear()
            self._speculative.clear()
            streams = list(self._streams.values())
            for request in self._admitting:
                if request.stream_id not in self._streams:
                    self.release(request.stream_id)
            self._admitting = []
        out: list[Notification] = []
        for stream in streams:
            try:
                stream.finish(out, failure=reason)
            except Exception:
                log.exception("could not end stream %s cleanly", stream.stream_id)
                out.append(("stream.event", StreamFailed(stream_id=stream.stream_id, error=reason)))
            with self._cond:
                self._streams.pop(stream.stream_id, None)
            self.release(stream.stream_id)
        try:
            self._emit(out)
        except Exception:
            log.exception("could not emit the final events of failed streams")

    def _has_work(self) -> bool:
        # A retired model wakes the thread too: its batch holds the weights until dropped.
        return bool(
            self._admitted
            or self._streams
            or self._stopping
            or self._retired_models
            or self._between_steps.pending()
        )

    def _iterate(
        self,
        admitted: list[StreamRequest],
        stopping: bool,
        retired: list[LoadedModel],
        out: list[Notification],
    ) -> bool:
        """One pass: end what is flagged, drop retired batches, admit, step every batch,
        emit. True at the end.

        Retired batches go before admission, so a stream of a reloaded model never meets
        the batch of the model it replaced."""
        self._between_steps.run()
        self._end_flagged(stopping, out)
        for model in retired:
            self._drop_lane(model)
        for request in admitted:
            self._admit(request, out)
        with self._cond:
            self._admitting = []
        self._end_flagged(stopping, out)
        self._step_batches(out)
        self._step_speculative(out)
        if out:
            self._emit(out)
        if stopping and not self._streams:
            with self._cond:
                if not self._admitted:
                    for entry in list(self._lanes.values()):
                        self._drop_lane(entry.model)
                    return True
        return False

    def _admit(self, request: StreamRequest, out: list[Notification]) -> None:
        stream = ActiveStream(
            request=request,
            assembler=TextAssembler(request.model.tokenizer.detokenizer, request.stop_sequences),
        )
        with self._cond:
            cancelled, failure = self._pending.take_verdicts(request.stream_id)
            stream.cancel_reason = "cancelled" if cancelled else None
            stream.failure = failure or request.retired()
            self._streams[request.stream_id] = stream
        if stream.cancel_reason is not None or stream.failure is not None:
            return  # ended by _end_flagged before it costs any compute
        try:
            if request.draft is not None:
                self._speculative[request.stream_id] = SpeculativeLane(
                    request, request.draft.model, request.num_draft_tokens
                )
            else:
                eos = set(request.model.tokenizer.eos_token_ids)
                stream.cached_prompt_tokens = self._lane_for(request.model).admit(request, eos)
                self._lane_admitted(request, stream.cached_prompt_tokens)
        except Exception as exc:
            log.exception("admitting stream %s failed", request.stream_id)
            stream.failure = f"generation failed: {type(exc).__name__}: {exc}"

    def _lane_for(self, model: LoadedModel) -> BatchLane:
        entry = self._lanes.get(model.model_id)
        if entry is not None and entry.model is not model:  # the id was loaded again
            # Retired batches are dropped before admission and retired models' streams fail
            # there, so this one is empty; replacing a batch with streams would strand them.
            if len(entry.lane):
                raise RuntimeError(f"the replaced batch of '{model.model_id}' still runs")
            self._drop_lane(entry.model)
            entry = None
        if entry is None:
            entry = self._lanes[model.model_id] = _ModelLane(model, self._new_lane(model))
            self._lane_opened(model.model_id)
        return entry.lane

    def _new_lane(self, model: LoadedModel) -> BatchLane:
        return new_lane(model.model, self._batch, persist_for=model)

    def _drop_lane(self, model: LoadedModel) -> None:
        model_id = model.model_id
        entry = self._lanes.get(model_id)
        if entry is None or entry.model is not model or len(entry.lane):
            return
        with self._cond:
            del self._lanes[model_id]
        entry.lane.close()
        # The batch's KV caches and the prompt cache go back to the system now, not at the
        # next allocation.
        mx.clear_cache()
        self._lane_dropped(model_id)

    def _end_flagged(self, stopping: bool, out: list[Notification]) -> None:
        for stream in list(self._streams.values()):
            if stopping and stream.cancel_reason is None and stream.failure is None:
                stream.cancel_reason = "cancelled"
            if stream.failure is not None:
                self._end(stream, out, failure=stream.failure)
            elif stream.cancel_reason is not None:
                self._end(stream, out, reason="cancelled")

    def _step_batches(self, out: list[Notification]) -> None:
        """Decode every batch, send those tokens, then prefill: a stream's token never
        waits for a chunk of somebody else's prompt."""
        lanes = [(m, e.lane) for m, e in list(self._lanes.items()) if len(e.lane)]
        decode_s: dict[str, float] = {}
        for model_id, lane in lanes:
            started = time.perf_counter()
            self._run_lane(model_id, out, partial(self._decode_lane, lane))
            decode_s[model_id] = time.perf_counter() - started
        if out:
            self._emit(out)
            out.clear()
        for model_id, lane in lanes:
            if self._lanes.get(model_id) is None or self._lanes[model_id].lane is not lane:
                continue  # the batch failed while decoding
            budget = self._prefill_budget(model_id, lane)
            started = time.perf_counter()
            self._run_lane(model_id, out, partial(self._prefill_lane, lane, budget))
            if self.on_step is not None:
                seconds = decode_s[model_id] + time.perf_counter() - started
                self.on_step(seconds, lane.last_prefill_tokens)

    def _run_lane(
        self, model_id: str, out: list[Notification], work: Callable[[], list[LaneToken]]
    ) -> None:
        try:
            tokens = work()
        except Exception as exc:
            log.exception("batch step failed for model %s", model_id)
            self._fail_lane(model_id, f"generation failed: {type(exc).__name__}: {exc}", out)
            return
        for token in tokens:
            self._on_token(self._streams[token.stream_id], token, out)

    def _step_speculative(self, out: list[Notification]) -> None:
        for stream_id, lane in list(self._speculative.items()):
            stream = self._streams[stream_id]
            try:
                token = lane.step()
            except Exception as exc:
                log.exception("speculative step failed for stream %s", stream_id)
                self._end(stream, out, failure=f"generation failed: {type(exc).__name__}: {exc}")
                continue
            stream.draft_tokens_accepted = lane.accepted
            if token is None:
                self._end(stream, out, reason="length")
            else:
                self._on_token(stream, token, out)

    def _on_token(self, stream: ActiveStream, token: LaneToken, out: list[Notification]) -> None:
        stream.count_token()
        if token.done == "stop":  # a stop or EOS token: it ends the text, it is not text
            self._end(stream, out, reason="stop")
            return
        stream.add_token(token.token_id, token.logprobs, out)
        if stream.assembler.stopped:
            self._end(stream, out, reason="stop")
        elif token.done == "length":
            self._end(stream, out, reason="length")

    def _end(
        self,
        stream: ActiveStream,
        out: list[Notification],
        *,
        reason: FinishReason | None = None,
        failure: str | None = None,
        leave_lane: bool = True,
    ) -> None:
        stream_id = stream.stream_id
        if leave_lane:
            self._leave_lane(stream, out)
        stream.finish(out, reason=reason, failure=failure)
        with self._cond:
            del self._streams[stream_id]
        self.release(stream_id)

    def _leave_lane(self, stream: ActiveStream, out: list[Notification]) -> None:
        if self._speculative.pop(stream.stream_id, None) is not None:
            return
        model_id = stream.request.model.model_id
        entry = self._lanes.get(model_id)
        if entry is None:
            return
        try:
            entry.lane.remove(stream.stream_id)
            self._lane_removed(model_id, stream.stream_id)
        except Exception as exc:
            log.exception("removing stream %s from its batch failed", stream.stream_id)
            reason = f"generation failed: {type(exc).__name__}: {exc}"
            self._fail_lane(model_id, reason, out, leaving=stream.stream_id)

    def _fail_lane(
        self, model_id: str, reason: str, out: list[Notification], leaving: str | None = None
    ) -> None:
        """A failed batch is in an unknown state: end its streams with the reason and let
        the model's next request start a fresh batch."""
        with self._cond:
            entry = self._lanes.pop(model_id, None)
        if entry is None:
            return
        for stream_id in entry.lane.stream_ids():
            stream = self._streams.get(stream_id)
            if stream is not None and stream_id != leaving:
                self._end(stream, out, failure=reason, leave_lane=False)

    # -- hooks: the lane changes and steps the other ranks of a group replay -------------

    def _lane_opened(self, model_id: str) -> None:
        pass

    def _lane_admitted(self, request: StreamRequest, cached_tokens: int) -> None:
        pass

    def _lane_removed(self, model_id: str, stream_id: str) -> None:
        pass

    def _lane_dropped(self, model_id: str) -> None:
        pass

    def _prefill_budget(self, model_id: str, lane: BatchLane) -> int:
        return lane.budget.tokens(decoding=lane.decoding > 0)

    def _decode_lane(self, lane: BatchLane) -> list[LaneToken]:
        return lane.decode()

    def _prefill_lane(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]:
        return lane.prefill(prefill_tokens)
