"""Latency histograms for the runtime's metrics: native when built, pure Python otherwise.

:func:`make_histogram` returns ``mlx_serving._native.LatencyHistogram`` when the extension
carries it (native/metrics/latency_histogram.cpp) and :class:`PyLatencyHistogram` otherwise.
Both keep the same buckets and the same arithmetic, so counts, sums, percentiles and
snapshots agree exactly; tests/native/test_metrics.py holds them to it.

Buckets, in seconds: one for [0, 2^-20), then every power of two from 2^-20 (about 1 us) to
2^7 (128 s) cut into 16 equal parts, then one for [128 s, inf). A bucket is at most 1/16 of
its lower bound wide, so an interpolated percentile is within 6.25% of the true one. NaN and
infinities are rejected with ValueError; a negative duration counts as 0.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

SUB_BUCKETS = 16
MIN_EXPONENT = -20
MAX_EXPONENT = 7
BUCKET_COUNT = (MAX_EXPONENT - MIN_EXPONENT) * SUB_BUCKETS + 2


def _lower_bound(index: int) -> float:
    if index <= 0:
        return 0.0
    if index >= BUCKET_COUNT - 1:
        return math.ldexp(1.0, MAX_EXPONENT)
    octave, sub = divmod(index - 1, SUB_BUCKETS)
    return math.ldexp(1.0 + sub / SUB_BUCKETS, MIN_EXPONENT + octave)


# Every bound is an exact double, so bisecting them finds the same bucket as the native
# side's exponent-and-mantissa-bits arithmetic.
LOWER_BOUNDS: tuple[float, ...] = tuple(_lower_bound(i) for i in range(BUCKET_COUNT))
UPPER_BOUNDS: tuple[float, ...] = (*LOWER_BOUNDS[1:], math.inf)
_FINITE_UPPER = UPPER_BOUNDS[:-1]


class HistogramSnapshot(Protocol):
    """Cumulative bucket counts: ``cumulative[i]`` observations were ``<= le[i]``."""

    @property
    def le(self) -> Sequence[float]: ...
    @property
    def cumulative(self) -> Sequence[int]: ...
    @property
    def count(self) -> int: ...
    @property
    def sum(self) -> float: ...


class LatencyHistogram(Protocol):
    """What the native histogram and its Python twin both offer; durations in seconds."""

    def observe(self, seconds: float) -> None: ...
    def observe_many(self, seconds: Sequence[float]) -> None: ...
    def percentile(self, p: float) -> float | None: ...
    @property
    def count(self) -> int: ...
    @property
    def sum(self) -> float: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    def snapshot(self) -> HistogramSnapshot: ...
    def reset(self) -> None: ...


@dataclass(frozen=True)
class PyHistogramSnapshot:
    le: list[float]
    cumulative: list[int]
    count: int
    sum: float


def _checked(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError("a latency must be a finite number of seconds")
    return float(seconds) if seconds > 0.0 else 0.0


class PyLatencyHistogram:
    """The pure-Python histogram, used when the extension is absent; one lock per instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * BUCKET_COUNT
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def observe(self, seconds: float) -> None:
        value = _checked(seconds)
        index = bisect_right(_FINITE_UPPER, value)
        with self._lock:
            self._counts[index] += 1
            self._count += 1
            self._sum += value
            if value < self._min:
                self._min = value
            if value > self._max:
                self._max = value

    def observe_many(self, seconds: Sequence[float]) -> None:
        values = [_checked(s) for s in seconds]
        if not values:
            return
        # The batch's own running total, added once, as the native side does.
        total = 0.0
        for value in values:
            total += value
        indexes = [bisect_right(_FINITE_UPPER, value) for value in values]
        low, high = min(values), max(values)
        with self._lock:
            for index in indexes:
                self._counts[index] += 1
            self._count += len(values)
            self._sum += total
            if low < self._min:
                self._min = low
            if high > self._max:
                self._max = high

    def percentile(self, p: float) -> float | None:
        if not 0.0 <= p <= 100.0:
            raise ValueError("percentile must be within [0, 100]")
        with self._lock:
            counts, total = list(self._counts), self._count
            seen_min, seen_max = self._min, self._max
        if total == 0:
            return None
        target = p / 100.0 * float(total)
        below = 0
        for index, in_bucket in enumerate(counts):
            if in_bucket == 0:
                continue
            if float(below + in_bucket) >= target:
                lower, upper = LOWER_BOUNDS[index], UPPER_BOUNDS[index]
                lo = lower if lower > seen_min else seen_min
                hi = upper if upper < seen_max else seen_max
                fraction = (target - float(below)) / float(in_bucket)
                return lo + (hi - lo) * fraction
            below += in_bucket
        return seen_max  # unreachable: target <= total

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> float | None:
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        return self._max if self._count else None

    def snapshot(self) -> PyHistogramSnapshot:
        with self._lock:
            counts, total, seconds = list(self._counts), self._count, self._sum
        cumulative, running = [], 0
        for in_bucket in counts:
            running += in_bucket
            cumulative.append(running)
        return PyHistogramSnapshot(list(UPPER_BOUNDS), cumulative, total, seconds)

    def reset(self) -> None:
        with self._lock:
            self._counts = [0] * BUCKET_COUNT
            self._count = 0
            self._sum = 0.0
            self._min = math.inf
            self._max = -math.inf


def _load_native() -> tuple[type[LatencyHistogram] | None, str]:
    try:
        from .. import _native  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"Python fallback: extension not built ({exc})"
    native: type[LatencyHistogram] | None = getattr(_native, "LatencyHistogram", None)
    if native is None:
        return None, "Python fallback: the extension was built without the histogram"
    # An extension left from another checkout must not disagree with the twin on buckets.
    if list(native().snapshot().le) != list(UPPER_BOUNDS):
        return None, "Python fallback: the extension's buckets differ from this package's"
    return native, "native: mlx_serving._native.LatencyHistogram"


_NATIVE, _NOTE = _load_native()


def native_histogram_class() -> type[LatencyHistogram] | None:
    """The extension's histogram class, or None where the Python one serves."""
    return _NATIVE


def collector_status() -> tuple[bool, str]:
    """Whether histograms are native in this process, and a note saying which and why."""
    return _NATIVE is not None, _NOTE


def make_histogram() -> LatencyHistogram:
    """A new, empty histogram: the native one when it is built, else the Python twin."""
    return _NATIVE() if _NATIVE is not None else PyLatencyHistogram()
