"""What a distributed group adds to the scheduler: the hooks the scheduler calls.

A single process runs its batches alone (`SingleProcess`: each hook does the plain thing).
Rank 0 of a distributed group (distributed/lockstep.py) must keep its other ranks in step:
it journals every lane change, shares each step's plan (which batches step, how many
prompt tokens each prefills, as rank 0 decided) before the step runs, bounds every
collective, and gives the whole group up on any failure. The scheduler does not know
which it has; it calls, on its engine thread:

- `open_lane`, `admitted`, `removed`, `closed` as a batch opens, gains or loses a stream,
  and closes;
- each pass, `begin_step` before any batch steps, then `decode` and `prefill` for each
  batch (the work itself goes through the hook);
- `stopped` after the last pass of a stop;
- `lane_failed` when a batch failed (raising fails the whole pass), `pass_failed` when a
  pass failed (True: the engine thread ends).

`attach` gives the lockstep the scheduler's public controls (`end_everything`, `wake`,
`run_between_steps`); `close` is called once the scheduler has stopped. A hook may raise
`EngineAbandoned` (between_steps.py) after another thread took the engine's streams over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..config import SchedulerConfig
from .batch_lane import BatchLane, LaneToken, new_lane
from .loader import LoadedModel
from .stream import StreamRequest

if TYPE_CHECKING:
    from .lanes import ModelLane
    from .scheduler import Scheduler


class Lockstep(Protocol):
    # How long the engine thread sleeps with nothing to do; None: until woken.
    idle_wait_s: float | None

    def attach(self, scheduler: Scheduler) -> None: ...

    def open_lane(self, model: LoadedModel, settings: SchedulerConfig) -> BatchLane: ...

    def admitted(self, request: StreamRequest, cached_tokens: int) -> None: ...

    def removed(self, model_id: str, stream_id: str) -> None: ...

    def closed(self, model_id: str) -> None: ...

    def begin_step(self, lanes: list[ModelLane], idle: bool) -> list[int] | None:
        """Before the batches with streams (`lanes`, in stepping order) step; `idle`: no
        batch has a stream and nothing waits. Returns the prompt tokens each prefills, or
        None to size each prefill after its decode."""
        ...

    def decode(self, lane: BatchLane) -> list[LaneToken]: ...

    def prefill(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]: ...

    def stopped(self) -> None: ...

    def lane_failed(self, model_id: str, reason: str) -> None: ...

    def pass_failed(self, exc: Exception) -> bool: ...

    def close(self) -> None: ...


class SingleProcess:
    """The lockstep of a process alone: nothing to keep in step."""

    idle_wait_s: float | None = None

    def attach(self, scheduler: Scheduler) -> None:
        pass

    def open_lane(self, model: LoadedModel, settings: SchedulerConfig) -> BatchLane:
        return new_lane(model.model, settings, persist_for=model)

    def admitted(self, request: StreamRequest, cached_tokens: int) -> None:
        pass

    def removed(self, model_id: str, stream_id: str) -> None:
        pass

    def closed(self, model_id: str) -> None:
        pass

    def begin_step(self, lanes: list[ModelLane], idle: bool) -> list[int] | None:
        return None

    def decode(self, lane: BatchLane) -> list[LaneToken]:
        return lane.decode()

    def prefill(self, lane: BatchLane, prefill_tokens: int) -> list[LaneToken]:
        return lane.prefill(prefill_tokens)

    def stopped(self) -> None:
        pass

    def lane_failed(self, model_id: str, reason: str) -> None:
        pass  # the batch's streams end with the reason; the model's next stream opens anew

    def pass_failed(self, exc: Exception) -> bool:
        return False  # the scheduler ends the live streams and goes on serving

    def close(self) -> None:
        pass
