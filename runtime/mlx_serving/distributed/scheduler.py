"""Rank 0's scheduler: the single-process one, with every lane change journaled and sent
to the other ranks before the batch step that needs it, and a bound on every collective.

What rank 0 decides (which streams join a batch with which tokens, sampling settings and
seed, which leave, which lanes open and close, which models load) goes into the journal
(ops.py) through the scheduler's lane hooks. Before each batch step the journal and the
list of lanes to step go to every rank in one broadcast; followers (follower.py) replay
it and run the identical step. An idle rank 0 still sends an empty step every idle tick,
so a rank that is gone is noticed without traffic, and the other ranks sleep until the
next tick instead of spinning inside the collective.

When a rank fails, every live stream ends with an error event and later requests are
refused: either the engine thread sees the backend's error (a dead rank breaks its
connections at once), or the watchdog finds it stuck in a collective past its bound and
ends the streams from its own thread. `_abort_lock` and the watchdog's token decide which
of the two does it, so no stream is ended twice or left without its final event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from ..config import DistributedConfig, SchedulerConfig
from ..engine.batch_lane import BatchLane, LaneToken, new_lane
from ..engine.loader import LoadedModel
from ..engine.scheduler import Scheduler
from ..engine.stream import StreamRequest, StreamSink
from ..engine.stream_output import Notification, final_events
from ..protocol.errors import GroupFailed
from .group import Group, gather_status
from .loading import RanksRefused
from .ops import Admit, DropLane, Load, Op, OpenLane, Remove, Report, Step, Stop, Unload, encode
from .watchdog import Watchdog

log = logging.getLogger(__name__)

T = TypeVar("T")

# A byte bound would evict differently on ranks that hold different shares of a model
# (their caches differ in size), and then their batches would differ; an entry bound
# evicts alike everywhere.
_NO_BYTE_BOUND = 1 << 62
# How often the ranks' hosts and memory are gathered for runtime/info and runtime/state.
STATUS_INTERVAL_S = 2.0


def lockstep_lane(model: LoadedModel, settings: SchedulerConfig) -> BatchLane:
    """The batch of one model, built the same on every rank."""
    cache_bytes = _NO_BYTE_BOUND if settings.prompt_cache_bytes > 0 else 0
    return new_lane(
        model.model, msgspec.structs.replace(settings, prompt_cache_bytes=cache_bytes), solo=False
    )


class _Abandoned(BaseException):
    """The watchdog gave the group up while the engine thread was inside a collective;
    the thread leaves without touching any stream. A BaseException, so that the
    scheduler's handlers of model errors let it through."""


@dataclass
class _Task:
    op: Load | Unload
    work: Callable[[], Any]
    result: Future[Any] = field(default_factory=Future)


class LockstepScheduler(Scheduler):
    def __init__(
        self,
        group: Group,
        sink: StreamSink,
        max_active_streams: int,
        batch: SchedulerConfig,
        config: DistributedConfig,
    ) -> None:
        # Set before the base class starts the engine thread, which reads them.
        self._group = group
        self._config = config
        self._idle_wait = config.idle_tick_s
        self._journal: list[Op] = []
        self._tasks: list[_Task] = []
        self._task: _Task | None = None  # the one the engine thread runs now
        self._abort_lock = threading.Lock()
        self._abandoned = False
        self._pending_out: list[Notification] = []
        self._reported_at = time.monotonic()
        self._watchdog = Watchdog(self._expire)
        self._shared_budgets: dict[str, int] = {}  # prefill tokens of this step, per lane
        super().__init__(sink, max_active_streams, batch)
        group.on_failure(self._on_group_failure)

    # -- called from request threads -------------------------------------------------------

    def run_task(self, op: Load | Unload, work: Callable[[], T]) -> T:
        """Run `work` on the engine thread, between batch steps, once every rank has `op`
        (which makes each of them run the same work)."""
        task = _Task(op, work)
        with self._cond:
            self._refuse_if_failed()
            if self._stopping:
                raise GroupFailed("the runtime is shutting down")
            self._tasks.append(task)
            self._cond.notify()
        result: T = task.result.result()
        return result

    def start(self, request: StreamRequest) -> None:
        with self._cond:
            failure = self._group.failure
            # _abandoned is set before _abort_all empties _admitted (under this lock) and
            # before the group records its failure: checking both leaves no window in which
            # a request joins a queue nobody will read again.
            if failure is None and not self._abandoned:
                self._enqueue(request)
                return
        # The engine thread is gone: the stream ends here, still with its final event.
        out: list[Notification] = []
        reason = failure or "the engine stopped after a failed collective"
        self._finish_unstarted(request, failure_message(reason), out)
        self._emit(out)

    def stop(self, timeout: float = 2.0) -> None:
        super().stop(timeout)
        self._watchdog.close()

    def _refuse_if_failed(self) -> None:
        if self._group.failure is not None:
            raise GroupFailed(failure_message(self._group.failure))

    def _on_group_failure(self, reason: str) -> None:
        # From the launcher's watch (a rank exited): stop waiting on the collective under
        # way, or wake an idle engine thread to end the streams.
        self._watchdog.expire_now()
        with self._cond:
            self._cond.notify()

    # -- the engine thread -----------------------------------------------------------------

    def _has_work(self) -> bool:
        return super()._has_work() or bool(self._tasks) or self._group.failure is not None

    def _iterate(
        self,
        admitted: list[StreamRequest],
        stopping: bool,
        retired: list[LoadedModel],
        out: list[Notification],
    ) -> bool:
        self._pending_out = out
        try:
            if self._group.failure is not None:
                raise GroupFailed(self._group.failure)
            self._run_tasks()
            if super()._iterate(admitted, stopping, retired, out):
                self._group.stopping()
                self._share([Stop()])
                return True
            return False
        except _Abandoned:
            return True
        except Exception as exc:
            reason = self._group.failure or f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, GroupFailed):
                log.exception("the distributed group failed")
            with self._abort_lock:
                if not self._abandoned:
                    self._abandoned = True
                    self._abort_all(failure_message(reason), out)
                    self._emit(out)
            self._group.fail(reason)
            return True

    def _run_tasks(self) -> None:
        with self._cond:
            tasks, self._tasks = self._tasks, []
        for task in tasks:
            self._task = task
            self._share([task.op])
            what = f"loading '{task.op.model_id}'" if isinstance(task.op, Load) else "unloading"
            try:
                with self._collective(what, self._config.load_timeout_s):
                    result = task.work()
            except RanksRefused as exc:  # every rank refused alike: the group is intact
                task.result.set_exception(exc)
            except Exception as exc:
                task.result.set_exception(GroupFailed(failure_message(f"{what} failed: {exc}")))
                raise
            else:
                task.result.set_result(result)
            self._task = None

    def _new_lane(self, model: LoadedModel) -> BatchLane:
        return lockstep_lane(model, self._batch)

    def _step_batches(self, out: list[Notification]) -> None:
        steps = [model_id for model_id, entry in self._lanes.items() if len(entry.lane)]
        with self._cond:
            idle = not steps and not self._admitted and not self._tasks
        # Measured here alone; every rank prefills exactly what rank 0 decided.
        measure = super()._prefill_budget
        self._shared_budgets = {m: measure(m, self._lanes[m].lane) for m in steps}
        step = Step(
            steps,
            prefill_tokens=list(self._shared_budgets.values()),
            idle_s=self._config.idle_tick_s if idle else 0.0,
        )
        report = time.monotonic() - self._reported_at >= STATUS_INTERVAL_S
        # The gather comes first on every rank: followers apply the ops in this order.
        self._share([Report(), step] if report else [step])
        if report:
            with self._collective("gathering the ranks' status", self._config.step_timeout_s):
                self._group.record_ranks(gather_status(self._group.channel))
            self._reported_at = time.monotonic()
        super()._step_batches(out)

    def _prefill_budget(self, model_id: str, lane: BatchLane) -> int:
        return self._shared_budgets[model_id]

    def _decode_lane(self, lane: BatchLane) -> list[LaneToken]:
        with self._collective("a batch step", self._config.step_timeout_s):
            return lane.decode()

    def _prefill_lane(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]:
        with self._collective("a prefill chunk", self._config.step_timeout_s):
            return lane.prefill(prefill_tokens)

    def _fail_lane(
        self, model_id: str, reason: str, out: list[Notification], leaving: str | None = None
    ) -> None:
        # Alone, a failed batch would leave this rank's batches unlike the others'.
        raise GroupFailed(reason)

    def _lane_opened(self, model_id: str) -> None:
        self._journal.append(OpenLane(model_id))

    def _lane_admitted(self, request: StreamRequest, cached_tokens: int) -> None:
        assert request.sampling is not None
        self._journal.append(
            Admit(
                model_id=request.model.model_id,
                stream_id=request.stream_id,
                prompt_tokens=request.prompt_tokens,
                max_tokens=request.max_tokens,
                sampling=request.sampling,
                stop_token_ids=sorted(request.stop_token_ids),
                cached_tokens=cached_tokens,
            )
        )

    def _lane_removed(self, model_id: str, stream_id: str) -> None:
        self._journal.append(Remove(model_id, stream_id))

    def _lane_dropped(self, model_id: str) -> None:
        self._journal.append(DropLane(model_id))

    # -- collectives and failure -----------------------------------------------------------

    def _share(self, ops: list[Op]) -> None:
        message = encode(self._journal + ops)
        self._journal = []
        with self._collective("sharing decisions", self._config.step_timeout_s):
            self._group.channel.broadcast(message)

    @contextmanager
    def _collective(self, what: str, timeout: float) -> Iterator[None]:
        token = self._watchdog.arm(what, timeout)
        try:
            yield
        finally:
            with self._abort_lock:
                self._watchdog.disarm(token)
                if self._abandoned:
                    raise _Abandoned

    def _expire(self, token: int, reason: str) -> None:
        """The watchdog's verdict on a collective that outlived its bound."""
        with self._abort_lock:
            if self._abandoned or not self._watchdog.is_armed(token):
                return  # the engine thread came back (or already failed the group)
            self._abandoned = True
            reason = self._group.failure or reason
            # The engine thread is blocked inside the collective and touches nothing
            # until it takes the lock: its pending notifications and streams are ours.
            out = self._pending_out
            self._abort_all(failure_message(reason), out)
            self._emit(out)
        self._group.fail(reason)

    def _abort_all(self, reason: str, out: list[Notification]) -> None:
        """End every stream and task with `reason` (under `_abort_lock`)."""
        with self._cond:
            unstarted = [
                r for r in self._admitting + self._admitted if r.stream_id not in self._streams
            ]
            self._admitted, self._admitting = [], []
            tasks, self._tasks = self._tasks, []
        for stream in list(self._streams.values()):
            self._end(stream, out, failure=reason, leave_lane=False)
        for request in unstarted:
            self._finish_unstarted(request, reason, out)
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            if not task.result.done():
                task.result.set_exception(GroupFailed(reason))

    def _finish_unstarted(
        self, request: StreamRequest, reason: str, out: list[Notification]
    ) -> None:
        final_events(request, out, failure=reason)
        self.release(request.stream_id)


def failure_message(reason: str) -> str:
    return f"distributed group failed: {reason}; the runtime must be restarted"
