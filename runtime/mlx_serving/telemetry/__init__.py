"""What the runtime measures and announces: the metric families behind `runtime/metrics`
and the `runtime.event` notifications.

Figures are taken where data already passes, never by polling: request counts and
latencies from the dispatcher (`request_received` / `request_answered`), stream figures
from the notification batches on their way to the writer (`observe`, see streams.py), and
the few lifecycle calls handlers make (`stream_started`, `model_loaded`, …). Gauges that
belong to the engine are read by the metrics handler when asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from ..config import TelemetryConfig
from ..native_bridge.metrics import collector_status
from ..protocol.errors import (
    CANCELLED,
    GENERATION_ERROR,
    GUIDANCE_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MODEL_LOAD_ERROR,
    MODEL_NOT_LOADED,
    OVERLOADED,
    PARSE_ERROR,
    RUNTIME_ERROR,
    TOKENIZER_ERROR,
    ErrorObject,
)
from ..protocol.metrics import GaugeFamily, RuntimeMetrics
from ..protocol.notifications import (
    GenerationStartedEvent,
    ModelLoadedEvent,
    ModelUnloadedEvent,
    RuntimeErrorEvent,
    RuntimeStatusEvent,
)
from .registry import Counter, Histogram, gauge
from .streams import StreamMetrics, StreamObserver

__all__ = ["Telemetry"]

Notification = tuple[str, msgspec.Struct]

OUTCOMES = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal_error",
    MODEL_LOAD_ERROR: "model_load_error",
    GENERATION_ERROR: "generation_error",
    TOKENIZER_ERROR: "tokenizer_error",
    GUIDANCE_ERROR: "guidance_error",
    MODEL_NOT_LOADED: "model_not_loaded",
    OVERLOADED: "overloaded",
    CANCELLED: "cancelled",
    RUNTIME_ERROR: "runtime_error",
}
# Request errors that are the runtime's (or the model's) failure, not the caller's mistake.
EVENT_CODES = frozenset(
    {INTERNAL_ERROR, MODEL_LOAD_ERROR, GENERATION_ERROR, TOKENIZER_ERROR, GUIDANCE_ERROR}
)


class Telemetry:
    def __init__(self, config: TelemetryConfig | None = None) -> None:
        config = config or TelemetryConfig()
        self.enabled = config.enabled
        self.events = config.events
        self._send: Callable[[list[Notification]], None] = lambda _: None
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.requests = Counter(
            "mlx_serving_requests_total",
            "Requests answered, by method and outcome (ok or the error's name).",
            ("method", "outcome"),
        )
        self.request_duration = Histogram(
            "mlx_serving_request_duration_seconds",
            "From a request's arrival to its answer, by method.",
            ("method",),
        )
        self.streams_started = Counter(
            "mlx_serving_streams_started_total", "Generation streams started."
        )
        self.stream_metrics = StreamMetrics(
            generated_tokens=Counter(
                "mlx_serving_generated_tokens_total", "Tokens generated (stop tokens included)."
            ),
            prompt_tokens=Counter("mlx_serving_prompt_tokens_total", "Prompt tokens processed."),
            cached_prompt_tokens=Counter(
                "mlx_serving_cached_prompt_tokens_total",
                "Prompt tokens served from the prompt cache instead of prefilled.",
            ),
            draft_tokens_accepted=Counter(
                "mlx_serving_draft_tokens_accepted_total",
                "Draft-model tokens accepted by speculative decoding.",
            ),
            completed=Counter(
                "mlx_serving_streams_completed_total",
                "Streams that ended normally, by finish reason (stop, length).",
                ("finish_reason",),
            ),
            cancelled=Counter("mlx_serving_streams_cancelled_total", "Streams cancelled."),
            errored=Counter("mlx_serving_streams_errored_total", "Streams that ended in an error."),
            time_to_first_token=Histogram(
                "mlx_serving_time_to_first_token_seconds",
                "From a generate request to its stream's first token.",
            ),
            inter_token_latency=Histogram(
                "mlx_serving_inter_token_latency_seconds",
                "Between two token chunks of one stream, as sent.",
            ),
            queue_wait=Histogram(
                "mlx_serving_queue_wait_seconds",
                "From a generate request to its admission into the model's batch.",
            ),
            generation_duration=Histogram(
                "mlx_serving_generation_duration_seconds",
                "From a generate request to its stream's end.",
            ),
        )
        self._streams = StreamObserver(self.stream_metrics, self.events)
        self.engine_steps = Counter(
            "mlx_serving_engine_steps_total", "Batch steps run (one per model with streams)."
        )
        self.prefill_tokens = Counter(
            "mlx_serving_prefill_tokens_total",
            "Prompt tokens prefilled by batch steps (over engine steps: tokens per step).",
        )
        self.evictions = Counter(
            "mlx_serving_model_evictions_total",
            "Models evicted under the memory budget, by reason (evicted for room, expired).",
            ("reason",),
        )
        self.step_duration = Histogram(
            "mlx_serving_engine_step_seconds",
            "One batch step: a token for every decoding stream plus a prefill chunk; the gap "
            "a decoding stream sees between tokens.",
        )
        self._step_seconds = self.step_duration.labels()  # observed every token

    @property
    def active(self) -> bool:
        """Whether anything is measured or announced at all."""
        return self.enabled or self.events

    def attach(self, send: Callable[[list[Notification]], None]) -> None:
        """Where events go (the notification sink, which is made after this)."""
        self._send = send

    # -- the dispatcher --------------------------------------------------------------------

    def request_received(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_answered(self, method: str, error: ErrorObject | None, seconds: float) -> None:
        with self._lock:
            self._in_flight -= 1
        outcome = "ok" if error is None else OUTCOMES.get(error.code, "error")
        self.requests.inc(method, outcome)
        self.request_duration.labels(method).observe(seconds)
        if error is not None and error.code in EVENT_CODES:
            data = error.data
            self._publish(
                RuntimeErrorEvent(
                    timestamp=time.time(),
                    code=error.code,
                    message=error.message,
                    method=method,
                    model_id=getattr(data, "model_id", None),
                    stream_id=getattr(data, "stream_id", None),
                )
            )

    # -- streams ---------------------------------------------------------------------------

    def observe(self, notifications: list[Notification]) -> list[Notification]:
        """Record a batch on its way to the writer; returns the events to send after it."""
        return self._streams.observe(notifications)

    def stream_started(
        self, stream_id: str, model_id: str, prompt_tokens: int, max_tokens: int
    ) -> None:
        """A stream was acknowledged and goes to the scheduler now."""
        if not self.active:
            return  # nothing would observe its end
        self.streams_started.inc()
        self._streams.started(stream_id, model_id)
        self._publish(
            GenerationStartedEvent(
                timestamp=time.time(),
                stream_id=stream_id,
                model_id=model_id,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
            )
        )

    # -- models and the runtime ------------------------------------------------------------

    def engine_step(self, seconds: float, prefill_tokens: int) -> None:
        """Called by the engine thread after each batch step."""
        if not self.enabled:
            return
        self.engine_steps.inc()
        if prefill_tokens:
            self.prefill_tokens.inc(by=prefill_tokens)
        self._step_seconds.observe(seconds)

    def model_loaded(self, event: ModelLoadedEvent) -> None:
        self._publish(event)

    def model_unloaded(
        self,
        model_id: str,
        reason: Literal["unloaded", "replaced", "evicted", "expired"],
        detail: str | None = None,
        nbytes: int | None = None,
    ) -> None:
        if reason in ("evicted", "expired") and self.enabled:
            self.evictions.inc(reason)
        self._publish(
            ModelUnloadedEvent(
                timestamp=time.time(),
                model_id=model_id,
                reason=reason,
                detail=msgspec.UNSET if detail is None else detail,
                bytes=msgspec.UNSET if nbytes is None else nbytes,
            )
        )

    def runtime_stopping(self, active_streams: int, loaded_models: int) -> None:
        self._publish(
            RuntimeStatusEvent(
                timestamp=time.time(),
                status="stopping",
                active_streams=active_streams,
                loaded_models=loaded_models,
            )
        )

    def _publish(self, event: msgspec.Struct) -> None:
        if self.events:
            self._send([("runtime.event", event)])

    # -- runtime/metrics -------------------------------------------------------------------

    def snapshot(self, engine_gauges: list[GaugeFamily]) -> RuntimeMetrics:
        m = self.stream_metrics
        with self._lock:
            in_flight = self._in_flight
        own_gauges = [
            gauge(
                "mlx_serving_requests_in_flight",
                "Requests received and not yet answered (this one included).",
                in_flight,
            ),
            gauge(
                "mlx_serving_queued_streams",
                "Streams started that have sent nothing yet (awaiting admission or prefill).",
                self._streams.waiting_count,
            ),
            gauge(
                "mlx_serving_uptime_seconds",
                "Seconds since the runtime started.",
                time.monotonic() - self._started,
            ),
        ]
        native, _ = collector_status()
        return RuntimeMetrics(
            counters=[
                self.requests.snapshot(),
                self.streams_started.snapshot(),
                m.completed.snapshot(),
                m.cancelled.snapshot(),
                m.errored.snapshot(),
                m.generated_tokens.snapshot(),
                m.prompt_tokens.snapshot(),
                m.cached_prompt_tokens.snapshot(),
                m.draft_tokens_accepted.snapshot(),
                self.engine_steps.snapshot(),
                self.prefill_tokens.snapshot(),
                self.evictions.snapshot(),
            ],
            gauges=engine_gauges + own_gauges,
            histograms=[
                m.time_to_first_token.snapshot(),
                m.inter_token_latency.snapshot(),
                m.queue_wait.snapshot(),
                m.generation_duration.snapshot(),
                self.request_duration.snapshot(),
                self.step_duration.snapshot(),
            ],
            collector="native" if native else "python",
        )
