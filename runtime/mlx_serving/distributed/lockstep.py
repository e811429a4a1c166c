"""Rank 0's lockstep: every lane change journaled and sent to the other ranks before the
batch step that needs it, and a bound on every collective.

What rank 0 decides (which streams join a batch with which tokens, sampling settings and
seed, which leave, which lanes open and close, how many prompt tokens each batch prefills,
which models load) goes into the journal (ops.py) through the scheduler's lockstep hooks
(engine/lockstep.py). Before each batch step the journal and the list of lanes to step go
to every rank in one broadcast; followers (follower.py) replay it and run the identical
step. An idle rank 0 still sends an empty step every idle tick, so a rank that is gone is
noticed without traffic, and the other ranks sleep until the next tick instead of spinning
inside the collective. Loads and unloads run on the engine thread between steps, after
every rank has been told.

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
from contextlib import contextmanager
from functools import partial
from typing import TypeVar

import msgspec

from ..config import DistributedConfig, SchedulerConfig
from ..engine.batch_lane import BatchLane, LaneToken, new_lane
from ..engine.between_steps import EngineAbandoned, EngineStopped
from ..engine.lanes import ModelLane
from ..engine.loader import LoadedModel
from ..engine.scheduler import Scheduler
from ..engine.stream import StreamRequest
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


class GroupLockstep:
    """The `Lockstep` (engine/lockstep.py) of rank 0 in a distributed group."""

    def __init__(self, group: Group, config: DistributedConfig) -> None:
        self.idle_wait_s: float | None = config.idle_tick_s
        self._group = group
        self._config = config
        self._scheduler: Scheduler | None = None  # attached before its engine thread starts
        # The engine thread's alone.
        self._journal: list[Op] = []
        self._reported_at = time.monotonic()
        self._task_failure: Exception | None = None  # a load or unload broke the group
        # Whether the engine thread or the watchdog ends the streams is decided once,
        # under _abort_lock.
        self._abort_lock = threading.Lock()
        self._abandoned = False
        self._watchdog = Watchdog(self._expire)
        group.on_failure(self._on_group_failure)

    def attach(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    @property
    def _engine(self) -> Scheduler:
        assert self._scheduler is not None, "attach() the scheduler first"
        return self._scheduler

    # -- called from request threads -------------------------------------------------------

    def run_task(self, op: Load | Unload, work: Callable[[], T]) -> T:
        """Run `work` on the engine thread, between batch steps, once every rank has `op`
        (which makes each of them run the same work)."""
        if self._group.failure is not None:
            raise GroupFailed(failure_message(self._group.failure))
        try:
            return self._engine.run_between_steps(partial(self._run_task, op, work))
        except EngineStopped as exc:  # shutting down, or the group was given up
            raise GroupFailed(str(exc)) from exc

    def _on_group_failure(self, reason: str) -> None:
        # From the launcher's watch (a rank exited): stop waiting on the collective under
        # way, or wake an idle engine thread to end the streams (before the scheduler is
        # attached, its first idle tick will).
        self._watchdog.expire_now()
        if self._scheduler is not None:
            self._scheduler.wake()

    # -- hooks, on the engine thread -------------------------------------------------------

    def open_lane(self, model: LoadedModel, settings: SchedulerConfig) -> BatchLane:
        self._journal.append(OpenLane(model.model_id))
        return lockstep_lane(model, settings)

    def admitted(self, request: StreamRequest, cached_tokens: int) -> None:
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

    def removed(self, model_id: str, stream_id: str) -> None:
        self._journal.append(Remove(model_id, stream_id))

    def closed(self, model_id: str) -> None:
        self._journal.append(DropLane(model_id))

    def begin_step(self, lanes: list[ModelLane], idle: bool) -> list[int]:
        """Every rank gets the journal and the step: which batches step and how many
        prompt tokens each prefills, measured here alone."""
        if self._task_failure is not None:
            failure, self._task_failure = self._task_failure, None
            raise failure
        if self._group.failure is not None:
            raise GroupFailed(self._group.failure)
        budgets = [entry.lane.prefill_budget() for entry in lanes]
        step = Step(
            [entry.model.model_id for entry in lanes],
            prefill_tokens=budgets,
            idle_s=self._config.idle_tick_s if idle else 0.0,
        )
        report = time.monotonic() - self._reported_at >= STATUS_INTERVAL_S
        # The gather comes first on every rank: followers apply the ops in this order.
        self._share([Report(), step] if report else [step])
        if report:
            with self._collective("gathering the ranks' status", self._config.step_timeout_s):
                self._group.record_ranks(gather_status(self._group.channel))
            self._reported_at = time.monotonic()
        return budgets

    def decode(self, lane: BatchLane) -> list[LaneToken]:
        with self._collective("a batch step", self._config.step_timeout_s):
            return lane.decode()

    def prefill(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]:
        with self._collective("a prefill chunk", self._config.step_timeout_s):
            return lane.prefill(prefill_tokens)

    def stopped(self) -> None:
        self._group.stopping()
        self._share([Stop()])

    def lane_failed(self, model_id: str, reason: str) -> None:
        # Alone, a failed batch would leave this rank's batches unlike the others'.
        raise GroupFailed(reason)

    def pass_failed(self, exc: Exception) -> bool:
        reason = self._group.failure or _describe(exc)
        if not isinstance(exc, GroupFailed):
            log.exception("the distributed group failed")
        with self._abort_lock:
            ending = not self._abandoned
            self._abandoned = True
        self._group.fail(reason)  # on record first, as in _expire
        if ending:
            with self._abort_lock:
                self._engine.end_everything(failure_message(reason), for_good=True)
        return True

    def close(self) -> None:
        self._watchdog.close()

    def _run_task(self, op: Load | Unload, work: Callable[[], T]) -> T:
        """Between steps: share `op`, then run `work` bounded. A failure the ranks did not
        all refuse alike breaks the group: the caller gets it now, the pass at its step."""
        if self._task_failure is not None or self._group.failure is not None:
            reason = self._group.failure or _describe(self._task_failure)
            raise GroupFailed(failure_message(reason))
        what = f"loading '{op.model_id}'" if isinstance(op, Load) else "unloading"
        try:
            self._share([op])
        except Exception as exc:
            self._task_failure = exc
            raise GroupFailed(failure_message(self._group.failure or _describe(exc))) from exc
        try:
            with self._collective(what, self._config.load_timeout_s):
                return work()
        except RanksRefused:  # every rank refused alike: the group is intact
            raise
        except Exception as exc:
            self._task_failure = exc
            raise GroupFailed(failure_message(f"{what} failed: {exc}")) from exc

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
                    raise EngineAbandoned

    def _expire(self, token: int, reason: str) -> None:
        """The watchdog's verdict on a collective that outlived its bound."""
        with self._abort_lock:
            if self._abandoned or not self._watchdog.is_armed(token):
                return  # the engine thread came back (or already failed the group)
            self._abandoned = True
            reason = self._group.failure or reason
        # The failure is on record before the streams hear of it: a generate sent after
        # their error events is refused, not started on a group that is gone. (Outside the
        # lock: the group's listeners expire the watchdog, which takes it.)
        self._group.fail(reason)
        with self._abort_lock:
            # The engine thread is stuck inside the collective, or back and abandoned:
            # either way it touches nothing now, so its streams and notifications are ours.
            self._engine.end_everything(failure_message(reason), for_good=True)


def _describe(exc: Exception | None) -> str:
    return f"{type(exc).__name__}: {exc}"


def failure_message(reason: str) -> str:
    return f"distributed group failed: {reason}; the runtime must be restarted"
