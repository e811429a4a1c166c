"""The result of `runtime/metrics`: metric families in the shape of Prometheus's data model.

Each family has a name, a help text and one sample per label set; the TS client renders
them as text exposition (`toPrometheus`) without knowing any metric by name. Durations are
seconds, sizes bytes. docs/TELEMETRY.md lists the families.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class MetricSample(msgspec.Struct, kw_only=True):
    labels: dict[str, str] = {}
    value: float


class CounterFamily(msgspec.Struct, kw_only=True):
    """Monotonic totals since the runtime started; the name ends in `_total`."""

    name: str
    help: str
    samples: list[MetricSample]


class GaugeFamily(msgspec.Struct, kw_only=True):
    """Values read when the metrics were asked for."""

    name: str
    help: str
    samples: list[MetricSample]


class HistogramBucket(msgspec.Struct, kw_only=True):
    """`cumulative` observations were at most `le` (one exactly on a bound counts in the
    bucket above: the collector's buckets are half-open); the last `le` is "+Inf"."""

    le: float | Literal["+Inf"]
    cumulative: int


class HistogramSample(msgspec.Struct, kw_only=True):
    labels: dict[str, str] = {}
    count: int
    sum: float
    # Interpolated from the collector's fine buckets (within 6.25%); null while empty.
    p50: float | None
    p90: float | None
    p99: float | None
    buckets: list[HistogramBucket]


class HistogramFamily(msgspec.Struct, kw_only=True):
    name: str
    help: str
    samples: list[HistogramSample]


class RuntimeMetrics(msgspec.Struct, kw_only=True):
    counters: list[CounterFamily]
    gauges: list[GaugeFamily]
    histograms: list[HistogramFamily]
    # Which latency collector records the histograms: "native" (the C++ extension) or
    # "python" (its pure-Python twin); both keep the same buckets.
    collector: Literal["native", "python"]
