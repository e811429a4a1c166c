"""The latency histogram: its buckets and percentiles, and native against Python fallback.

Where the package is installed (``pip install .``, as in CI) the extension must be there and
every test runs against both implementations. From a source checkout (PYTHONPATH=runtime)
without a built extension, the native half of each test is skipped with a reason that says
so, and the fallback is still held to the layout and the exact reference below.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mlx_serving
from mlx_serving.native_bridge.metrics import (
    BUCKET_COUNT,
    LOWER_BOUNDS,
    MAX_EXPONENT,
    MIN_EXPONENT,
    SUB_BUCKETS,
    UPPER_BOUNDS,
    LatencyHistogram,
    PyLatencyHistogram,
    collector_status,
    make_histogram,
    native_histogram_class,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_CHECKOUT = Path(mlx_serving.__file__ or ".").resolve().is_relative_to(REPO_ROOT / "runtime")
PERCENTILES = (0.0, 0.1, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0)


def native_class() -> type[LatencyHistogram]:
    """The native histogram; required when installed, skipped with a reason in a checkout."""
    native = native_histogram_class()
    if native is not None:
        return native
    note = collector_status()[1]
    if not SOURCE_CHECKOUT:
        pytest.fail(f"mlx_serving is installed ({mlx_serving.__file__}) but {note}")
    pytest.skip(f"source checkout without a built extension, fallback tested alone: {note}")


IMPLEMENTATIONS: dict[str, Callable[[], type[LatencyHistogram]]] = {
    "python": lambda: PyLatencyHistogram,
    "native": native_class,
}


@pytest.fixture(scope="module", params=sorted(IMPLEMENTATIONS))
def histogram_class(request: pytest.FixtureRequest) -> type[LatencyHistogram]:
    # A class, not an instance: each hypothesis example builds its own histogram.
    return IMPLEMENTATIONS[request.param]()


@pytest.fixture(scope="module")
def native() -> type[LatencyHistogram]:
    return native_class()


def reference_index(seconds: float) -> int:
    """The bucket of a clamped finite duration, from frexp rather than the bounds table."""
    if seconds < math.ldexp(1.0, MIN_EXPONENT):
        return 0
    if seconds >= math.ldexp(1.0, MAX_EXPONENT):
        return BUCKET_COUNT - 1
    mantissa, exponent = math.frexp(seconds)  # seconds = mantissa * 2^exponent, 0.5 <= m < 1
    sub = int((mantissa * 2.0 - 1.0) * SUB_BUCKETS)
    return 1 + (exponent - 1 - MIN_EXPONENT) * SUB_BUCKETS + sub


def clamped(values: Sequence[float]) -> list[float]:
    return [float(v) if v > 0 else 0.0 for v in values]


def feed(histogram: LatencyHistogram, batches: Sequence[Sequence[float]]) -> None:
    """One-element batches through observe(), the others through observe_many()."""
    for batch in batches:
        if len(batch) == 1:
            histogram.observe(batch[0])
        else:
            histogram.observe_many(batch)


def state(histogram: LatencyHistogram) -> dict[str, object]:
    snapshot = histogram.snapshot()
    return {
        "count": histogram.count,
        "sum": histogram.sum,
        "min": histogram.min,
        "max": histogram.max,
        "le": list(snapshot.le),
        "cumulative": list(snapshot.cumulative),
        "snapshot_count": snapshot.count,
        "snapshot_sum": snapshot.sum,
        "percentiles": [histogram.percentile(p) for p in PERCENTILES],
    }


# Finite durations of every kind: zero, negatives, subnormals, huge values, exact bucket
# bounds and their neighbours, and ints (both sides take them as floats).
bounds = st.sampled_from(LOWER_BOUNDS[1:])
durations = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-7, max_value=300.0),
    bounds,
    bounds.map(lambda b: math.nextafter(b, 0.0)),
    bounds.map(lambda b: math.nextafter(b, math.inf)),
    st.sampled_from([0.0, -0.0, -1.0, 5e-324, 1e300, 128.0, 1e-6]),
    st.integers(min_value=-5, max_value=200),
)
batches = st.lists(st.lists(durations, min_size=1, max_size=20), max_size=30)


def test_layout() -> None:
    assert BUCKET_COUNT == (MAX_EXPONENT - MIN_EXPONENT) * SUB_BUCKETS + 2
    assert LOWER_BOUNDS[0] == 0.0 and UPPER_BOUNDS[-1] == math.inf
    assert LOWER_BOUNDS[1] == 2.0**MIN_EXPONENT and LOWER_BOUNDS[-1] == 2.0**MAX_EXPONENT
    assert all(a < b for a, b in pairwise(LOWER_BOUNDS))
    assert UPPER_BOUNDS[:-1] == LOWER_BOUNDS[1:]
    # The 6.25% promise: no log bucket is wider than 1/16 of its lower bound.
    widths = [(u - lo) / lo for lo, u in zip(LOWER_BOUNDS[1:-1], UPPER_BOUNDS[1:-1], strict=True)]
    assert max(widths) == 1 / SUB_BUCKETS


def test_native_required_when_installed(native: type[LatencyHistogram]) -> None:
    assert collector_status()[0]
    assert isinstance(make_histogram(), native)


def test_status_names_the_active_histogram() -> None:
    active, note = collector_status()
    assert active == (native_histogram_class() is not None)
    assert note.startswith("native" if active else "Python fallback")
    assert isinstance(make_histogram(), native_histogram_class() or PyLatencyHistogram)


@settings(max_examples=200, deadline=None)
@given(batches=batches)
@example(batches=[])
@example(batches=[[0.0], [-0.0], [-3.0]])
@example(batches=[[1e308, 1e308], [5.0]])
def test_matches_reference(
    histogram_class: type[LatencyHistogram], batches: list[list[float]]
) -> None:
    histogram = histogram_class()
    feed(histogram, batches)
    values = clamped([v for batch in batches for v in batch])
    expected = [0] * BUCKET_COUNT
    for value in values:
        expected[reference_index(value)] += 1
    snapshot = histogram.snapshot()
    assert list(snapshot.le) == list(UPPER_BOUNDS)
    running = 0
    for index, in_bucket in enumerate(expected):
        running += in_bucket
        assert snapshot.cumulative[index] == running, index
    assert histogram.count == snapshot.count == len(values)
    assert histogram.min == (min(values) if values else None)
    assert histogram.max == (max(values) if values else None)
    try:
        total = math.fsum(values)
    except OverflowError:  # two values near 1e308: both sides' sums are inf as well
        total = math.inf
    assert histogram.sum == pytest.approx(total, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=2.0**MIN_EXPONENT, max_value=127.9), min_size=1),
    p=st.floats(min_value=0.0, max_value=100.0),
)
def test_percentile_within_a_bucket_width(
    histogram_class: type[LatencyHistogram], values: list[float], p: float
) -> None:
    histogram = histogram_class()
    histogram.observe_many(values)
    estimate = histogram.percentile(p)
    assert estimate is not None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(values)))  # the sample the estimate stands for
    truth = ordered[rank - 1]
    assert abs(estimate - truth) <= truth / SUB_BUCKETS * (1 + 1e-12)
    assert ordered[0] <= estimate <= ordered[-1]
    assert histogram.percentile(0) == ordered[0] and histogram.percentile(100) == ordered[-1]


@settings(max_examples=300, deadline=None)
@given(batches=batches, p=st.floats(min_value=0.0, max_value=100.0))
@example(batches=[[1e300], [2e-7, 3.0]], p=50.0)
@example(batches=[[b] for b in LOWER_BOUNDS[1:40]], p=37.5)
def test_native_matches_fallback(
    native: type[LatencyHistogram], batches: list[list[float]], p: float
) -> None:
    fast, fallback = native(), PyLatencyHistogram()
    feed(fast, batches)
    feed(fallback, batches)
    # Same bucket layout, same summation order, same interpolation: equal to the last bit.
    assert state(fast) == state(fallback)
    assert fast.percentile(p) == fallback.percentile(p)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected(histogram_class: type[LatencyHistogram], bad: float) -> None:
    histogram = histogram_class()
    histogram.observe(0.25)
    before = state(histogram)
    with pytest.raises(ValueError):
        histogram.observe(bad)
    with pytest.raises(ValueError):
        histogram.observe_many([0.5, bad, 0.75])  # all or nothing
    assert state(histogram) == before


@pytest.mark.parametrize("p", [-0.1, 100.1, math.nan, math.inf])
def test_percentile_out_of_range(histogram_class: type[LatencyHistogram], p: float) -> None:
    histogram = histogram_class()
    histogram.observe(1.0)
    with pytest.raises(ValueError):
        histogram.percentile(p)


def test_empty_and_reset(histogram_class: type[LatencyHistogram]) -> None:
    histogram = histogram_class()
    empty = state(histogram)
    assert empty["percentiles"] == [None] * len(PERCENTILES)
    assert (histogram.count, histogram.sum, histogram.min, histogram.max) == (0, 0.0, None, None)
    assert list(histogram.snapshot().cumulative) == [0] * BUCKET_COUNT
    histogram.observe_many([0.001, 0.002, 500.0])
    histogram.observe(3e-9)
    assert histogram.count == 4
    histogram.reset()
    assert state(histogram) == empty


@pytest.mark.parametrize("batched", [False, True], ids=["observe", "observe_many"])
def test_threads_lose_no_observation(
    histogram_class: type[LatencyHistogram], batched: bool
) -> None:
    histogram = histogram_class()
    threads, per_thread = 4, 20_000
    # Multiples of 2^-12 up to 4 s: every partial sum is exact, so the total is exact in any
    # interleaving.
    values = [(i % 16_384) / 4096 for i in range(per_thread)]
    start = threading.Barrier(threads)

    def work(offset: int) -> None:
        mine = values[offset:] + values[:offset]
        start.wait()
        if batched:
            for i in range(0, per_thread, 100):
                histogram.observe_many(mine[i : i + 100])
        else:
            for value in mine:
                histogram.observe(value)

    workers = [threading.Thread(target=work, args=(n * 997,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    snapshot = histogram.snapshot()
    assert histogram.count == snapshot.count == snapshot.cumulative[-1] == threads * per_thread
    assert histogram.sum == threads * math.fsum(values)
    assert (histogram.min, histogram.max) == (0.0, max(values))
