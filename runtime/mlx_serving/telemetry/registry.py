"""Metric families: counters and latency histograms keyed by label values, and their
snapshot in the wire's shape (protocol/metrics.py).

Histograms come from `native_bridge.metrics.make_histogram()`: the native collector when
the extension is built, its Python twin otherwise. They keep 434 fine buckets; the wire
carries a fixed coarse subset (one bound per power of two) so that a Prometheus series has
the same buckets in every scrape, and the percentiles are taken from the fine ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..native_bridge.metrics import UPPER_BOUNDS, LatencyHistogram, make_histogram
from ..protocol.metrics import (
    CounterFamily,
    GaugeFamily,
    HistogramBucket,
    HistogramFamily,
    HistogramSample,
    MetricSample,
)

# 2^-16 s (15 us) … 2^7 s (128 s): every one is a bound of the fine buckets, so a coarse
# bucket's cumulative count is exact.
EXPORT_BOUNDS: tuple[float, ...] = tuple(2.0**e for e in range(-16, 8))
_EXPORT_INDEXES: tuple[int, ...] = tuple(UPPER_BOUNDS.index(b) for b in EXPORT_BOUNDS)

Labels = tuple[str, ...]


class Counter:
    """One counter family: a running total per label-value tuple."""

    def __init__(self, name: str, help: str, label_names: Labels = ()) -> None:
        self.name = name
        self.help = help
        self.label_names = label_names
        self._values: dict[Labels, float] = {} if label_names else {(): 0.0}
        self._lock = threading.Lock()

    def inc(self, *labels: str, by: float = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + by

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def snapshot(self) -> CounterFamily:
        with self._lock:
            values = sorted(self._values.items())
        return CounterFamily(
            name=self.name,
            help=self.help,
            samples=[
                MetricSample(labels=dict(zip(self.label_names, key, strict=True)), value=value)
                for key, value in values
            ],
        )


class Histogram:
    """One histogram family: a latency histogram per label-value tuple, made on first use."""

    def __init__(self, name: str, help: str, label_names: Labels = ()) -> None:
        self.name = name
        self.help = help
        self.label_names = label_names
        self._series: dict[Labels, LatencyHistogram] = {}
        self._lock = threading.Lock()
        if not label_names:
            self._series[()] = make_histogram()

    def labels(self, *labels: str) -> LatencyHistogram:
        series = self._series.get(labels)
        if series is None:
            with self._lock:
                series = self._series.setdefault(labels, make_histogram())
        return series

    def snapshot(self) -> HistogramFamily:
        with self._lock:
            series = sorted(self._series.items(), key=lambda item: item[0])
        return HistogramFamily(
            name=self.name,
            help=self.help,
            samples=[_histogram_sample(self.label_names, key, h) for key, h in series],
        )


def _histogram_sample(names: Labels, key: Labels, histogram: LatencyHistogram) -> HistogramSample:
    snapshot = histogram.snapshot()
    cumulative = snapshot.cumulative
    buckets = [
        HistogramBucket(le=bound, cumulative=cumulative[index])
        for bound, index in zip(EXPORT_BOUNDS, _EXPORT_INDEXES, strict=True)
    ]
    buckets.append(HistogramBucket(le="+Inf", cumulative=snapshot.count))
    # Percentiles of the same moment as the buckets would need one lock for both; a
    # concurrent observation may land between them, which a scrape tolerates.
    return HistogramSample(
        labels=dict(zip(names, key, strict=True)),
        count=snapshot.count,
        sum=snapshot.sum,
        p50=histogram.percentile(50),
        p90=histogram.percentile(90),
        p99=histogram.percentile(99),
        buckets=buckets,
    )


def gauge(name: str, help: str, value: float) -> GaugeFamily:
    """A gauge family of one unlabelled sample."""
    return GaugeFamily(name=name, help=help, samples=[MetricSample(value=value)])


def labelled_gauge(
    name: str, help: str, label: str, values: Iterable[tuple[str, float]]
) -> GaugeFamily:
    """A gauge family with one sample per value of `label`."""
    return GaugeFamily(
        name=name,
        help=help,
        samples=[MetricSample(labels={label: key}, value=value) for key, value in values],
    )
