"""Runs every active stream on one engine thread.

The streams of a model share one continuous batch (`BatchLane`): each step decodes a token
for all of them and prefills one chunk of any waiting prompt. Streams with a draft model
run alone (`SpeculativeLane`) between batch steps (lanes.py). Request threads only queue
work (intake.py) and leave verdicts (pending_streams.py); all MLX work happens here. The
notifications of one step go to the sink together (on a thread of their own in the
runtime: emit_thread.py), so the writer flushes them as one batch. A distributed runtime
keeps its other ranks in step through the `Lockstep` it injects (lockstep.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from ..config import SchedulerConfig
from ..protocol.notifications import FinishReason, StreamFailed
from .batch_lane import LaneToken
from .between_steps import BetweenSteps, EngineAbandoned, EngineStopped
from .detokenize import TextAssembler
from .intake import Intake, Taken
from .lanes import Lanes, ModelLane
from .loader import LoadedModel
from .lockstep import Lockstep, SingleProcess
from .pending_streams import PendingStreams, Verdict
from .stream import StreamRequest, StreamSink
from .stream_outbox import StreamOutbox
from .stream_output import ActiveStream, Outgoing, final_events

log = logging.getLogger(__name__)

T = TypeVar("T")


class Scheduler:
    def __init__(
        self,
        sink: StreamSink,
        max_active_streams: int,
        batch: SchedulerConfig | None = None,
        lockstep: Lockstep | None = None,
        emit_on_thread: bool = False,
    ) -> None:
        """`emit_on_thread`: the sink is called on a thread of its own (emit_thread.py),
        as the runtime wants it; tests see each pass's notifications as it ends."""
        self._lockstep: Lockstep = lockstep or SingleProcess()
        # Guards what other threads share with the engine thread, and wakes it.
        self._cond = threading.Condition()
        # Engine thread's; it writes them under _cond, other threads read them under it.
        self._streams: dict[str, ActiveStream] = {}
        # Engine thread only (Lanes locks what runtime/metrics reads of it). While the
        # engine thread is stuck in a collective, end_everything takes these over.
        self._lanes = Lanes(self._lockstep, batch or SchedulerConfig())
        self._out: list[Outgoing] = []  # the pass's notifications not sent yet
        # Stream ids and verdicts, shared with the vision lane (under _cond).
        self.pending = PendingStreams(self._cond, max_active_streams)
        self._between_steps = BetweenSteps(self._cond)
        # Written by any thread under _cond; the engine thread takes it under _cond.
        self._intake = Intake(self.pending, self._between_steps)
        self._outbox = StreamOutbox(sink, on_thread=emit_on_thread)
        # Told the duration and prefill tokens of each batch step (the runtime's metrics).
        # Set once while the runtime is built, before any stream; read by the engine thread.
        self.on_step: Callable[[float, int], None] | None = None
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._lockstep.attach(self)

    def start_engine_thread(self) -> None:
        """Once whoever built the scheduler has wired it up (on_step, the listeners)."""
        self._thread.start()

    # -- called from request threads -------------------------------------------------------

    def reserve(self, stream_id: str) -> None:
        """Claim a stream id before the request is acknowledged (pending_streams.py)."""
        self.pending.reserve(stream_id)

    def release(self, stream_id: str) -> None:
        self.pending.release(stream_id)

    def start(self, request: StreamRequest) -> None:
        with self._cond:
            ended = self._intake.ended
            if ended is None:
                self._outbox.track(request)
                self._intake.admitted.append(request)
                self._cond.notify()
                return
        # The engine thread is gone: the stream ends here, still with its final event.
        out: list[Outgoing] = []
        final_events(request, out, reason="cancelled", failure=ended.failure)
        self.release(request.stream_id)
        self._outbox.emit(out)

    def cancel(self, stream_id: str) -> bool:
        return self.pending.cancel(stream_id)

    def run_between_steps(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Run `work` on the engine thread between two batch steps (between_steps.py)."""
        with self._cond:
            ended = self._intake.ended
            if self._intake.stopping or ended is not None:
                failure = ended.failure if ended is not None else None
                raise EngineStopped(failure or "the runtime is shutting down")
            done = self._between_steps.post(work)
        return done.result(timeout)

    def fail_model(self, model: LoadedModel, reason: str) -> None:
        """End every stream of a model with an error (the model is unloaded or replaced),
        and drop its batch and prompt cache. Streams started later on it fail at admission
        (`LoadedModel.retirement`)."""
        with self._cond:
            running = [stream.request for stream in self._streams.values()]
            for request in running + self._intake.unstarted():
                if request.runs_on(model):
                    self.pending.fail(request.stream_id, reason)
            self._intake.retired.append(model)
            self._cond.notify()

    def wake(self) -> None:
        """Run a pass now even with nothing to do (the lockstep's group failed)."""
        with self._cond:
            self._intake.woken = True
            self._cond.notify()

    @property
    def active_count(self) -> int:
        return len(self.pending)

    def prompt_cache_stats(self) -> dict[str, dict[str, float]]:
        return self._lanes.prompt_cache_stats()

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel every stream (each still gets its final event), then end the thread.

        The thread notices between steps; a step can outlast `timeout` (a long prompt's
        prefill chunk on a slow machine), and then the streams end from here instead."""
        with self._cond:
            self._intake.stopping = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.ident is None or self._thread.is_alive():
            log.warning("the engine thread is in a step (or never ran): its streams end here")
            with self._cond:
                # Counted by the engine thread without the lock: one token behind at worst.
                generated = {sid: stream.generated for sid, stream in self._streams.items()}
            self._outbox.end_unfinished(generated)
        self._outbox.close(timeout)
        self._lockstep.close()

    def end_everything(self, reason: str, *, for_good: bool = False) -> None:
        """End every stream, and every started stream not admitted yet, with `reason`.
        `for_good`: the engine thread stops serving (a distributed group was given up):
        streams started later end at once and work waiting for the thread fails.

        On the engine thread, or from another thread while the engine thread is stuck in
        a collective and touches nothing until told (lockstep.py)."""
        with self._cond:
            unstarted = list(self._intake.admitting)  # never in _streams (_admit)
            self._intake.admitting.clear()
            if for_good:
                self._intake.ended = Verdict(failure=reason)
                unstarted += self._intake.admitted
                self._intake.admitted = []
                self._between_steps.fail_all(EngineStopped(reason))
            streams, self._streams = self._streams, {}
        self._lanes.clear()
        out, self._out = self._out, []
        for stream in streams.values():
            try:
                stream.finish(out, failure=reason)
            except Exception:
                log.exception("could not end stream %s cleanly", stream.stream_id)
                out.append(("stream.event", StreamFailed(stream_id=stream.stream_id, error=reason)))
        for request in unstarted:
            final_events(request, out, failure=reason)
        for stream_id in [*streams, *(request.stream_id for request in unstarted)]:
            self.release(stream_id)
        try:
            self._outbox.emit(out)
        except Exception:
            log.exception("could not emit the final events of ended streams")

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        intake = self._intake
        while True:
            with self._cond:
                while not intake.has_work(self._streams):
                    if not self._cond.wait(self._lockstep.idle_wait_s):
                        break  # idle for idle_wait_s: a pass with nothing to admit
                intake.woken = False
                # Under the lock the wait holds, unless work between steps runs first.
                taken = None if self._between_steps.pending() else intake.take(self._streams)
            try:
                if self._pass(taken):
                    self._lockstep.stopped()
                    return
            except EngineAbandoned:
                return
            except Exception as exc:
                if self._lockstep.pass_failed(exc):
                    return
                # A bug here must not kill the engine thread: every stream would then wait
                # forever. End what is live with the reason and go on serving.
                log.exception("engine iteration failed")
                self.end_everything(f"internal error: {type(exc).__name__}: {exc}")
            taken = None  # a retired model in it must not stay resident while the thread waits

    def _pass(self, taken: Taken | None) -> bool:
        """Run the work between steps (`taken` is None then); end what has a verdict; drop
        retired batches; admit; step every batch; emit. True once stopped. Verdicts and
        retired models are taken after the work between steps (a distributed unload runs
        there)."""
        if taken is None:
            self._between_steps.run()
            with self._cond:
                taken = self._intake.take(self._streams)
        admitted, stopping, retired, verdicts = taken
        out = self._out = []
        if verdicts or stopping:
            self._end_judged(verdicts, stopping, out)
        for model in retired:
            self._drop_lane(model)
        for _ in admitted:
            self._admit(stopping, out)
        self._step_batches(out)
        self._step_speculative(out)
        if out:
            self._outbox.emit(out)
            out.clear()
        if stopping and not self._streams:
            with self._cond:
                if self._intake.admitted or self._between_steps.pending():
                    return False
                self._intake.ended = Verdict()  # later streams end cancelled, at once
            for model in self._lanes.models():
                self._drop_lane(model)
            return True
        return False

    def _admit(self, stopping: bool, out: list[Outgoing]) -> None:
        """Admit the oldest stream taken for admission."""
        request = self._intake.admitting[0]
        stream = ActiveStream(
            request=request,
            assembler=TextAssembler(request.model.tokenizer.detokenizer, request.stop_sequences),
        )
        with self._cond:
            self._intake.admitting.popleft()
            verdict = self.pending.take_verdict(request.stream_id)
            failure = (verdict.failure if verdict is not None else None) or request.retired()
            runs = failure is None and verdict is None and not stopping
            if runs:
                self._streams[request.stream_id] = stream
        if not runs:  # ended before it costs any compute
            stream.finish(out, reason="cancelled", failure=failure)
            self.release(request.stream_id)
            return
        try:
            stream.cached_prompt_tokens = self._lanes.admit(request)
        except Exception as exc:
            log.exception("admitting stream %s failed", request.stream_id)
            self._end(stream, out, failure=_failed(exc))

    def _drop_lane(self, model: LoadedModel) -> None:
        if not self._lanes.close(model):  # its streams end first, then it goes
            with self._cond:
                self._intake.retired.append(model)

    def _end_judged(
        self, verdicts: dict[str, Verdict], stopping: bool, out: list[Outgoing]
    ) -> None:
        if stopping:
            for stream_id in self._streams:
                verdicts.setdefault(stream_id, Verdict())
        for stream_id, verdict in verdicts.items():
            stream = self._streams.get(stream_id)
            if stream is not None:  # else it ended meanwhile
                self._end(stream, out, reason="cancelled", failure=verdict.failure)

    def _step_batches(self, out: list[Outgoing]) -> None:
        """Decode every batch, send those tokens, then prefill: a stream's token never
        waits for a chunk of somebody else's prompt."""
        entries = self._lanes.busy()
        idle = not entries and self._nothing_queued()
        planned = self._lockstep.begin_step(entries, idle)
        decode_s: list[float] = []
        for entry in entries:
            started = time.perf_counter()
            self._run_lane(entry, out, partial(self._lockstep.decode, entry.lane))
            decode_s.append(time.perf_counter() - started)
        if out:
            self._outbox.emit(out)
            out.clear()
        for index, entry in enumerate(entries):
            lane, seconds, fed = entry.lane, decode_s[index], 0
            if not self._lanes.holds(entry):
                continue  # the batch failed while decoding
            # Nothing waits: no prefill bookkeeping (a lockstep's ranks always prefill).
            if planned is not None or lane.prefilling:
                budget = planned[index] if planned is not None else lane.prefill_budget()
                started = time.perf_counter()
                self._run_lane(entry, out, partial(self._lockstep.prefill, lane, budget))
                seconds, fed = seconds + time.perf_counter() - started, lane.last_prefill_tokens
            if self.on_step is not None:
                self.on_step(seconds, fed)

    def _nothing_queued(self) -> bool:
        with self._cond:
            return not self._intake.admitted and not self._between_steps.pending()

    def _run_lane(
        self, entry: ModelLane, out: list[Outgoing], work: Callable[[], list[LaneToken]]
    ) -> None:
        try:
            tokens = work()
        except Exception as exc:
            log.exception("batch step failed for model %s", entry.model.model_id)
            self._fail_lane(entry.model, _failed(exc), out)
            return
        for token in tokens:
            self._on_token(self._streams[token.stream_id], token, out)

    def _step_speculative(self, out: list[Outgoing]) -> None:
        for stream_id, lane in self._lanes.speculative():
            stream = self._streams[stream_id]
            try:
                token = lane.step()
            except Exception as exc:
                log.exception("speculative step failed for stream %s", stream_id)
                self._end(stream, out, failure=_failed(exc))
                continue
            stream.draft_tokens_accepted = lane.accepted
            if token is None:
                self._end(stream, out, reason="length")
            else:
                self._on_token(stream, token, out)

    def _on_token(self, stream: ActiveStream, token: LaneToken, out: list[Outgoing]) -> None:
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
        out: list[Outgoing],
        *,
        reason: FinishReason | None = None,
        failure: str | None = None,
        leave_lane: bool = True,
    ) -> None:
        stream_id = stream.stream_id
        if leave_lane:
            try:
                self._lanes.remove(stream.request)
            except Exception as exc:
                log.exception("removing stream %s from its batch failed", stream_id)
                self._fail_lane(stream.request.model, _failed(exc), out, leaving=stream_id)
        stream.finish(out, reason=reason, failure=failure)
        with self._cond:
            del self._streams[stream_id]
        self.release(stream_id)

    def _fail_lane(
        self, model: LoadedModel, reason: str, out: list[Outgoing], leaving: str | None = None
    ) -> None:
        """A failed batch is in an unknown state: end its streams with the reason and let
        the model's next request start a fresh batch (unless the lockstep raises)."""
        self._lockstep.lane_failed(model.model_id, reason)
        for stream_id in self._lanes.discard(model):
            stream = self._streams.get(stream_id)
            if stream is not None and stream_id != leaving:
                self._end(stream, out, failure=reason, leave_lane=False)


def _failed(exc: Exception) -> str:
    return f"generation failed: {type(exc).__name__}: {exc}"
