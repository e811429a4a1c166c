"""Runtime trees (commits, or one tree under different settings) and in-process
`mlx_lm.stream_generate`, timed in rotating rounds on one model: what a change did to the
cost per token, on a host whose speed drifts more between runs than the change moves it.

    git archive <old> runtime | tar -x -C /tmp/old
    python bench/ab_runtimes.py --old /tmp/old/runtime --new runtime --seconds 170
    python bench/ab_runtimes.py --runtime a=runtime --runtime b=runtime:SOME_VAR=1

Each round times one greedy stream of --tokens through each runtime process (request to
final event, read over its pipe) and through `stream_generate`, the order rotating and
reversing; the report (every 9 rounds, so a run cut short still says something) gives,
for each runtime, the median per-token difference to `stream_generate` and to the first
runtime within rounds, with quartiles, the median ratio, and the fastest round of each;
`--rates` keeps every round. A tree is chosen by PYTHONPATH (an editable install of the
project shadows it); `NAME=TREE:KEY=VALUE,...` also sets environment variables for that
runtime's process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "runtime"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from profile_engine import (  # noqa: E402  (after the paths it needs)
    _reference_rate,
    _RuntimeProcess,
    spread,
)


def _runtime(spec: str, model_dir: Path) -> _RuntimeProcess:
    """`python -m mlx_serving` from one tree (first on PYTHONPATH), the model loaded.
    `spec`: TREE or TREE:KEY=VALUE,..."""
    tree, _, assignments = spec.partition(":")
    env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
    env["PYTHONPATH"] = os.pathsep.join([tree, os.environ.get("PYTHONPATH", "")])
    return _RuntimeProcess(model_dir, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--old", help="the old tree's runtime/ folder (runtime 'old')")
    parser.add_argument("--new", help="the new tree's runtime/ folder (runtime 'new')")
    parser.add_argument(
        "--runtime", action="append", default=[], help="NAME=TREE[:KEY=VALUE,...], repeatable"
    )
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64, help="64 x 2 layers: the tiny model")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rates", type=Path, help="also write every round's rates (JSON) here")
    args = parser.parse_args()
    specs = [f"old={args.old}"] * bool(args.old) + [f"new={args.new}"] * bool(args.new)
    specs += args.runtime
    if not specs:
        parser.error("name at least one runtime (--old/--new or --runtime)")
    given = [name for name, _ in map(_named, specs)]
    if len(set(given)) < len(given) or "ref" in given:
        parser.error(f"runtime names must differ, and not be 'ref': {given}")

    from mlx_serving.native_bridge.blas import preload_optimized_blas

    preload_optimized_blas("auto")  # before mlx, as the runtime does
    from mlx_serving.testing import make_model

    workdir = Path(tempfile.mkdtemp(prefix="ab-runtimes-"))
    model_dir = make_model(
        workdir / "model", "llama", hidden_size=args.hidden, num_layers=args.layers, seed=3
    )
    runtimes = {name: _runtime(spec, model_dir) for name, spec in map(_named, specs)}
    reference = partial(_reference_rate, model_dir, args.tokens, False)  # stream_generate
    timers: dict[str, Callable[[], float]] = {"ref": reference}
    for name, runtime in runtimes.items():
        timers[name] = partial(runtime.rate, args.tokens, False)
    for timer in timers.values():
        timer()  # the first stream pays for compiling the step
    rates: dict[str, list[float]] = {name: [] for name in timers}

    def cost(a: str, b: str) -> str:
        return spread([1e6 / x - 1e6 / y for x, y in zip(rates[a], rates[b], strict=True)])

    def ratio(a: str) -> float:
        return statistics.median(x / r for x, r in zip(rates[a], rates["ref"], strict=True))

    def best(a: str) -> str:
        # The fastest round of each: on a host whose stalls only ever add time, the
        # estimate that those stalls move least.
        fastest, baseline = 1e6 / max(rates[a]), 1e6 / max(rates["ref"])
        return f"best rounds {fastest:.0f} against {baseline:.0f} us/token"

    first = next(iter(runtimes))

    def report() -> None:
        baseline = 1e6 / statistics.median(rates["ref"])
        lines = [
            f"llama h{args.hidden} L{args.layers}, {args.tokens} tokens, {len(rates['ref'])} "
            f"rounds; stream_generate median {baseline:.0f} us/token"
        ]
        for name in runtimes:
            lines.append(
                f"  {name} over stream_generate: {cost(name, 'ref')}; ratio {ratio(name):.3f}x; "
                f"{best(name)}"
            )
            if name != first:
                lines.append(f"  {name} minus {first}: {cost(name, first)}")
        print("\n".join(lines), flush=True)

    names = list(timers)  # "ref" first, then the runtimes
    stop = time.monotonic() + args.seconds
    done = 0
    while time.monotonic() < stop:
        order = names[done % len(names) :] + names[: done % len(names)]
        if (done // len(names)) % 2:
            order.reverse()
        measured = {name: timers[name]() for name in order}
        for name in names:
            rates[name].append(measured[name])
        done += 1
        if done % 9 == 0:
            report()
    report()
    if args.rates is not None:
        args.rates.write_text(json.dumps({"tokens": args.tokens, "tokens_per_s": rates}))
    for runtime in runtimes.values():
        runtime.close()
    return 0


def _named(spec: str) -> tuple[str, str]:
    name, _, tree = spec.partition("=")
    return name, tree


if __name__ == "__main__":
    raise SystemExit(main())
