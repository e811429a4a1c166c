"""What one latency observation costs: native histogram against its pure-Python fallback.

    python bench/bench_metrics.py [--observations 200000] [--repeat 7] [--batch 64 4096]

Both histograms run in this process, on the same lognormal latencies (median 20 ms, as
inter-token latencies are), alternating so that load on the machine hits both alike. Each
figure is the best of --repeat runs in ns per observation and includes the Python loop that
feeds it, since the runtime pays that too; a line gives that loop alone, calling a no-op.
The last column is fallback/native. A second table shows how far the interpolated p50, p90
and p99 land from the exact order statistics of the same samples.

Needs the extension (``pip install .``, or a wheel on PYTHONPATH); without it only the
fallback is measured.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

from mlx_serving.native_bridge.metrics import (
    LatencyHistogram,
    PyLatencyHistogram,
    collector_status,
    native_histogram_class,
)

Factory = Callable[[], LatencyHistogram]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--observations", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure, best kept")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 4096])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _noop(seconds: float) -> None:
    pass


def time_observe(make: Factory | None, values: Sequence[float]) -> float:
    """ns per observe() call in a plain loop; make=None times the loop around a no-op."""
    observe = make().observe if make is not None else _noop
    start = time.perf_counter_ns()
    for value in values:
        observe(value)
    return (time.perf_counter_ns() - start) / len(values)


def time_observe_many(make: Factory, batches: Sequence[Sequence[float]]) -> float:
    observe_many = make().observe_many
    start = time.perf_counter_ns()
    for batch in batches:
        observe_many(batch)
    return (time.perf_counter_ns() - start) / sum(len(b) for b in batches)


def time_query(make: Factory, values: Sequence[float], query: str) -> float:
    """ns per percentile() or snapshot() call on a filled histogram."""
    histogram = make()
    histogram.observe_many(values)
    calls = 200
    start = time.perf_counter_ns()
    for _ in range(calls):
        if query == "percentile":
            histogram.percentile(99.0)
        else:
            histogram.snapshot()
    return (time.perf_counter_ns() - start) / calls


def best(runs: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    values = [rng.lognormvariate(math.log(0.020), 1.0) for _ in range(args.observations)]
    native = native_histogram_class()
    note = collector_status()[1]
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {python}")
    print(f"histogram: {note}")
    sides: dict[str, Factory] = {"python": PyLatencyHistogram}
    if native is not None:
        sides["native"] = native

    rows: list[tuple[str, dict[str, float]]] = []
    tasks: list[tuple[str, Callable[[Factory], float]]] = [
        ("observe()", partial(time_observe, values=values))
    ]
    for size in args.batch:
        batches = [values[i : i + size] for i in range(0, len(values), size)]
        tasks.append((f"observe_many({size})", partial(time_observe_many, batches=batches)))
    tasks.append(("percentile(99)/call", partial(time_query, values=values, query="percentile")))
    tasks.append(("snapshot()/call", partial(time_query, values=values, query="snapshot")))
    for label, task in tasks:
        figures = {side: math.inf for side in sides}
        for _ in range(args.repeat):  # alternate sides so that noise hits both alike
            for side, make in sides.items():
                figures[side] = min(figures[side], task(make))
        rows.append((label, figures))
    loop = best(args.repeat, lambda: time_observe(None, values))

    print()
    print("| operation | native ns/obs | python ns/obs | python/native |")
    print("|---|---:|---:|---:|")
    for label, figures in rows:
        fast = figures.get("native")
        ratio = f"{figures['python'] / fast:.1f}x" if fast else "-"
        fast_text = f"{fast:.0f}" if fast else "-"
        print(f"| {label} | {fast_text} | {figures['python']:.0f} | {ratio} |")
    print(f"\nThe feeding loop alone (a no-op function per value) costs {loop:.0f} ns.")

    print()
    ordered = sorted(values)
    print("| percentile | exact | interpolated | relative error |")
    print("|---|---:|---:|---:|")
    histogram = (native or PyLatencyHistogram)()
    histogram.observe_many(values)
    for p in (50.0, 90.0, 99.0):
        exact = ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]
        estimate = histogram.percentile(p)
        assert estimate is not None
        print(
            f"| p{p:g} | {exact * 1e3:.3f} ms | {estimate * 1e3:.3f} ms |"
            f" {abs(estimate - exact) / exact:.2%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
