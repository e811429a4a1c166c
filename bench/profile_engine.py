"""Where the runtime's time goes per token, on a model small enough that per-token work
shows (bench_throughput's tiny model): each layer added in turn, in one run.

    python bench/profile_engine.py [--tokens 3000] [--rounds 3] [--bias] [--profile]
    python bench/profile_engine.py --hidden 2048 --layers 16 --tokens 500   # the 0.9B model
    python bench/profile_engine.py --tokens 1000 --paired 120    # runtime vs baseline, pairs
    python bench/profile_engine.py --paired 60 --pair thread     # a thread vs the main thread
    python bench/profile_engine.py --tokens 4000 --no-step       # the Python around the step
    python bench/profile_engine.py --tokens 3000 --no-step --stand-in 150 300  # a GPU's step

Rows, each in us/token and against in-process `mlx_lm.stream_generate`:
- `mlx_lm.generate_step` alone: the model's step, no text (what the runtime cannot go below),
  on the main thread and on another thread (where the runtime's engine runs);
- the runtime's SoloDecoder driven alone: the decode loop without scheduler or text;
- engine, null sink: scheduler, lane and text assembly, nothing encoded;
- engine + sink + writer: the runtime's NotificationSink and FrameWriter, writing into a
  pipe that another process drains, with telemetry as the runtime has it;
- runtime process: `python -m mlx_serving` read by a client over a pipe.
`--profile` adds a cProfile of the engine thread for the second row. `--no-step` times only
the work around the model's step instead: the runtime process, the engine with its sink
and writer, and `stream_generate`, each with the step replaced by one that returns a fixed
token cycle at once (what per-token Python each adds; it costs most where the step is
fastest, a GPU). `--stand-in HOLD_US RELEASE_US` gives that step a GPU's shape instead:
the GIL held while the graph is built, then released while MLX launches and waits, so
what the runtime does on other threads meanwhile is measured as it overlaps there.
The table's last line gives the runtime process against the baseline within each round,
and their median.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "runtime"))
NO_EOS = {2: -100.0}


class _NullSink:
    def __init__(self) -> None:
        self.ended = threading.Event()
        self.generated = 0

    def emit(self, notifications: list[tuple[str, Any]]) -> None:
        for name, params in notifications:
            if name == "stream.stats":
                self.generated = params.tokens_generated
            elif name == "stream.event":
                self.ended.set()


def _engine_rate(model_dir: Path, tokens: int, real_sink: bool, profile: bool, bias: bool) -> float:
    from mlx_serving.config import Settings
    from mlx_serving.dispatch import NotificationSink
    from mlx_serving.engine import scheduler as scheduler_module
    from mlx_serving.engine.engine import Engine
    from mlx_serving.protocol.methods import GenerateParams, LoadModelParams
    from mlx_serving.telemetry import Telemetry
    from mlx_serving.transport import FrameWriter

    profiler = cProfile.Profile() if profile else None
    run = scheduler_module.Scheduler._run

    def profiled_run(self: scheduler_module.Scheduler) -> None:
        assert profiler is not None
        profiler.enable()
        try:
            run(self)
        finally:
            profiler.disable()

    if profiler is not None:
        scheduler_module.Scheduler._run = profiled_run  # type: ignore[method-assign]
    watcher = _NullSink()
    ended = watcher.ended
    sink: Any
    telemetry = Telemetry()
    drain = None
    if real_sink:
        read_fd, write_fd = os.pipe()
        drain = subprocess.Popen(["cat"], stdin=read_fd, stdout=subprocess.DEVNULL)
        os.close(read_fd)
        writer = FrameWriter(write_fd, 8 << 20)
        notification_sink = NotificationSink(writer, telemetry)
        emit = notification_sink.emit

        def watching_emit(notifications: list[tuple[str, Any]]) -> None:
            emit(notifications)
            watcher.emit(notifications)

        notification_sink.emit = watching_emit  # type: ignore[method-assign]
        sink = notification_sink
    else:
        sink = watcher
    settings = Settings()
    settings.scheduler.prompt_cache_dir = ""  # every round starts from the same cold cache
    engine = Engine(settings, sink)
    if real_sink:
        engine.scheduler.on_step = telemetry.engine_step
    engine.load(LoadModelParams(model_id="m", local_path=str(model_dir)))
    rate = 0.0
    for _ in range(2):  # the first run warms up
        ended.clear()
        params = GenerateParams(
            model_id="m",
            prompt="hello",
            max_tokens=tokens,
            temperature=0,
            logit_bias=NO_EOS if bias else None,
        )
        request = engine.prepare_stream(params)
        started = time.perf_counter()
        engine.start(request)
        ended.wait(600)
        rate = watcher.generated / (time.perf_counter() - started)
    engine.shutdown()
    if drain is not None:
        writer.close()
        os.close(write_fd)
        drain.wait(10)
    scheduler_module.Scheduler._run = run  # type: ignore[method-assign]
    if profiler is not None:
        for key in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(30)
            print(text.getvalue())
    return rate


class _RuntimeProcess:
    """`python -m mlx_serving` with the model loaded, driven over its pipes."""

    def __init__(
        self,
        model_dir: Path,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._process = subprocess.Popen(
            [sys.executable, *(command or ["-m", "mlx_serving"])],
            # A YAML empty string: an empty variable would mean "unset" (the default folder).
            env={**os.environ, "MLX_SERVING_SCHEDULER__PROMPT_CACHE_DIR": "''", **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._next_id = 1
        self._call("load_model", {"model_id": "m", "local_path": str(model_dir)})

    def _call(self, method: str, params: dict[str, Any]) -> int:
        request_id = self._next_id
        self._next_id += 1
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(frame).encode() + b"\n")
        self._process.stdin.flush()
        if method != "generate":
            self._until(lambda f: f.get("id") == request_id)
        return request_id

    def _until(self, predicate: Any) -> dict[str, Any]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            frame = json.loads(line)
            if predicate(frame):
                return frame  # type: ignore[no-any-return]
        raise RuntimeError("the runtime exited")

    def rate(self, tokens: int, bias: bool) -> float:
        """Tokens per second of one greedy stream, timed from request to its end event."""
        params: dict[str, Any] = {
            "model_id": "m",
            "prompt": "hello",
            "max_tokens": tokens,
            "temperature": 0,
        }
        if bias:
            params["logit_bias"] = {"2": -100}
        started = time.perf_counter()
        self._call("generate", params)
        stats = self._until(lambda f: f.get("method") == "stream.stats")
        self._until(lambda f: f.get("method") == "stream.event")
        return float(stats["params"]["tokens_generated"]) / (time.perf_counter() - started)

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(30)


def _process_rate(model_dir: Path, tokens: int, bias: bool) -> float:
    runtime = _RuntimeProcess(model_dir)
    runtime.rate(tokens, bias)  # the first request pays for compiling the step
    rate = runtime.rate(tokens, bias)
    runtime.close()
    return rate


def _paired(model_dir: Path, tokens: int, bias: bool, seconds: float, pair: str) -> None:
    """Two loops timed against each other in pairs (the order alternating) for `seconds`:
    the host's speed drifts less within a pair, a few seconds, than between the rounds of
    the table, and many pairs give a steady median. `pair`: "process", one runtime process
    kept running against `stream_generate`; "thread", mlx-lm's `generate_step` on another
    thread (where the runtime's engine runs) against the same on the main thread."""
    if pair == "process":
        runtime = _RuntimeProcess(model_dir)
        names = ("runtime process", "stream_generate")
        measured = partial(runtime.rate, tokens, bias)
        baseline = partial(_reference_rate, model_dir, tokens, bias)
    else:
        names = ("generate_step on a thread", "on the main thread")
        measured = partial(_step_rate, model_dir, tokens, bias, True)
        baseline = partial(_step_rate, model_dir, tokens, bias, False)
    measured()
    baseline()
    costs: list[float] = []
    ratios: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if len(costs) % 2:
            served, reference = measured(), baseline()
        else:
            reference, served = baseline(), measured()
        costs.append(1e6 / served - 1e6 / reference)
        ratios.append(served / reference)
        if len(costs) % 10 == 0:  # so that a run cut short still says something
            _report_pairs(costs, ratios, tokens, names)
    if pair == "process":
        runtime.close()
    _report_pairs(costs, ratios, tokens, names)


def _report_pairs(
    costs: list[float], ratios: list[float], tokens: int, names: tuple[str, str]
) -> None:
    print(
        f"paired, {len(costs)} pairs of {tokens} tokens: {names[0]} over {names[1]} "
        f"{spread(costs)}; ratio median {statistics.median(ratios):.3f}x",
        flush=True,
    )


def spread(costs: list[float]) -> str:
    """Per-token differences measured in pairs (or rounds): their median and quartiles."""
    low, _, high = statistics.quantiles(costs, n=4) if len(costs) > 1 else costs * 3
    return f"median {statistics.median(costs):+.0f} us/token (quartiles {low:+.0f}, {high:+.0f})"


def _remove_model_step(hold_us: float = 0.0, release_us: float = 0.0) -> None:
    """Replace the model's step, the runtime's (SoloDecoder) and mlx-lm's (generate_step),
    by one that returns the next of a fixed cycle of tokens. With `hold_us` and
    `release_us` it stands in for a fast GPU's step: it holds the GIL that long (Python
    building the graph) and then releases it that long (MLX launching the step and
    waiting for the device), so work on other threads can overlap the second part."""
    import mlx.core as mx

    from mlx_serving.engine import solo_decoder

    cycle = [100 + (i * 7) % 50 for i in range(64)]
    logprobs = mx.zeros((8,))
    hold_s, release_s = hold_us * 1e-6, release_us * 1e-6

    def stand_in() -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < hold_s:
            pass
        if release_s:
            time.sleep(release_s)

    def step(self: Any) -> tuple[int, Any, Any]:
        stand_in()
        self.generated += 1
        token = cycle[self.generated % len(cycle)]
        return token, logprobs, self._verdict(token)

    def init(self: Any, model: Any, prefill: Any) -> None:
        self.request, self.stream_id = prefill.request, prefill.request.stream_id
        self.stop_ids, self.cache, self.cache_tokens = set(), prefill.cache, []
        self.generated = 0

    def generate_step(prompt: Any, model: Any, *args: Any, max_tokens: int = 256, **_: Any) -> Any:
        for n in range(max_tokens):
            stand_in()
            yield cycle[(n + 1) % len(cycle)], logprobs

    import mlx_lm  # noqa: F401  (mlx_lm.generate is then the module, not the function)

    solo_decoder.SoloDecoder.step = step  # type: ignore[method-assign]
    solo_decoder.SoloDecoder.__init__ = init  # type: ignore[method-assign]
    sys.modules["mlx_lm.generate"].generate_step = generate_step  # type: ignore[attr-defined]


def _without_step(model_dir: Path, tokens: int, rounds: int, stand_in: list[float]) -> None:
    """The work around the step alone: the runtime process, the engine + sink + writer row
    and `stream_generate`, each with the step removed (or a stand-in for it, `stand_in`:
    microseconds holding and releasing the GIL); median over `rounds` of us/token."""
    import mlx_lm

    hold, release = stand_in
    command = [__file__, "--serve-without-step", str(hold), str(release)]
    runtime = _RuntimeProcess(model_dir, command)
    _remove_model_step(hold, release)
    model, tokenizer = _loaded(model_dir)
    runtime.rate(tokens, False)
    process, engine, reference = [], [], []
    for _ in range(rounds):
        process.append(1e6 / runtime.rate(tokens, False))
        engine.append(1e6 / _engine_rate(model_dir, tokens, True, False, False))
        started = time.perf_counter()
        count = sum(1 for _ in mlx_lm.stream_generate(model, tokenizer, "hi", max_tokens=tokens))
        reference.append((time.perf_counter() - started) / count * 1e6)
    runtime.close()
    step = f"a stand-in step ({hold:g} us held, {release:g} released)" if any(stand_in) else ""
    print(f"model step removed, {tokens} tokens, median of {rounds} rounds, us/token:")
    if step:
        print(f"(in its place {step})")
    print(f"| runtime process, read over a pipe | {statistics.median(process):.1f} |")
    print(f"| engine + sink + writer | {statistics.median(engine):.1f} |")
    print(f"| mlx_lm.stream_generate | {statistics.median(reference):.1f} |")
    over = [served - base for served, base in zip(process, reference, strict=True)]
    print(f"runtime process over stream_generate, median of rounds: {statistics.median(over):+.1f}")


def _step_rate(model_dir: Path, tokens: int, bias: bool, in_thread: bool) -> float:
    """mlx-lm's own loop, on the main thread or (as the runtime's engine runs) another."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_logits_processors

    model, tokenizer = _loaded(model_dir)
    processors = make_logits_processors(logit_bias=NO_EOS) if bias else None
    prompt = mx.array(tokenizer.encode("hello"))
    result: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        steps = generate_step(prompt, model, max_tokens=tokens, logits_processors=processors)
        count = sum(1 for _ in steps)
        result.append(count / (time.perf_counter() - started))

    _ = mlx_lm  # imported for its side effects on the default stream, as the runtime does
    if in_thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    else:
        run()
    return result[0]


def _decoder_rate(model_dir: Path, tokens: int, bias: bool) -> float:
    """The runtime's SoloDecoder driven alone, on a thread: no scheduler, no text."""
    from mlx_serving.engine.prefill import Prefill
    from mlx_serving.engine.prompt_cache import CacheLookup
    from mlx_serving.engine.solo_decoder import SoloDecoder

    model, tokenizer = _loaded(model_dir)
    prompt = tokenizer.encode("hello")
    result: list[float] = []

    def run() -> None:
        request = _request(prompt, tokens, bias)
        prefill = Prefill(model, request, CacheLookup(None, 0, list(prompt)), set())
        while not prefill.done:
            prefill.run(2048)
        started = time.perf_counter()
        decoder = SoloDecoder(model, prefill)
        done = None
        while done is None:
            _, _, done = decoder.step()
        result.append(decoder.generated / (time.perf_counter() - started))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0]


def _request(prompt: list[int], tokens: int, bias: bool) -> Any:
    from types import SimpleNamespace

    from mlx_lm.sample_utils import make_logits_processors

    from mlx_serving.engine.sampling import greedy_sampler

    processors = make_logits_processors(logit_bias=NO_EOS) if bias else []
    return SimpleNamespace(
        stream_id="s",
        prompt_tokens=prompt,
        max_tokens=tokens,
        sampler=greedy_sampler,
        logits_processors=processors,
    )


def _reference_rate(model_dir: Path, tokens: int, bias: bool) -> float:
    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors

    model, tokenizer = _loaded(model_dir)
    processors = make_logits_processors(logit_bias=NO_EOS) if bias else None
    started = time.perf_counter()
    count = sum(
        1
        for _ in mlx_lm.stream_generate(
            model, tokenizer, "hello", max_tokens=tokens, logits_processors=processors
        )
    )
    return count / (time.perf_counter() - started)


_LOADED: dict[Path, Any] = {}


def _loaded(model_dir: Path) -> Any:
    import mlx_lm

    if model_dir not in _LOADED:
        _LOADED[model_dir] = mlx_lm.load(str(model_dir))
    return _LOADED[model_dir]


def main(argv: list[str] | None = None) -> int:
    given = argv if argv is not None else sys.argv[1:]
    if given[:1] == ["--serve-without-step"]:
        # The runtime process of --no-step: `python -m mlx_serving`, its step removed.
        import runpy

        from mlx_serving.native_bridge.blas import preload_optimized_blas

        preload_optimized_blas("auto")  # before mlx, as the runtime's own start does
        _remove_model_step(*(float(us) for us in given[1:3]))
        sys.argv = [sys.argv[0]]
        runpy.run_module("mlx_serving", run_name="__main__")
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best kept")
    parser.add_argument(
        "--bias", action="store_true", help="with a logit bias (a logits processor) on EOS"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--hidden", type=int, default=64, help="64 x 2 layers: the tiny model")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--paired",
        type=float,
        metavar="SECONDS",
        help="instead of the table: the runtime process against stream_generate in pairs",
    )
    parser.add_argument(
        "--pair",
        choices=("process", "thread"),
        default="process",
        help="with --paired: the runtime process against stream_generate, or generate_step "
        "on a thread against the main thread",
    )
    parser.add_argument("--no-step", action="store_true", help="only the work around the step")
    parser.add_argument(
        "--stand-in",
        type=float,
        nargs=2,
        default=[0.0, 0.0],
        metavar=("HOLD_US", "RELEASE_US"),
        help="with --no-step: a step that holds the GIL HOLD_US, then releases it RELEASE_US "
        "(a fast GPU's step: graph building, then launch and wait)",
    )
    args = parser.parse_args(argv)

    from mlx_serving.native_bridge.blas import preload_optimized_blas

    preload_optimized_blas("auto")  # before mlx: the reference BLAS would drown the figures
    from mlx_serving.testing import make_model

    workdir = Path(tempfile.mkdtemp(prefix="profile-engine-"))
    model_dir = make_model(
        workdir / "model", "llama", hidden_size=args.hidden, num_layers=args.layers, seed=3
    )
    n, bias = args.tokens, args.bias
    if args.paired is not None:
        _paired(model_dir, n, bias, args.paired, args.pair)
        return 0
    if args.no_step:
        _without_step(model_dir, n, max(args.rounds, 5), args.stand_in)
        return 0
    layers: list[tuple[str, Any]] = [
        ("mlx_lm.stream_generate (baseline)", lambda: _reference_rate(model_dir, n, bias)),
        ("mlx_lm.generate_step, no text", lambda: _step_rate(model_dir, n, bias, False)),
        ("  the same on a thread", lambda: _step_rate(model_dir, n, bias, True)),
        ("SoloDecoder alone, on a thread", lambda: _decoder_rate(model_dir, n, bias)),
        ("engine, null sink", lambda: _engine_rate(model_dir, n, False, False, bias)),
        ("engine + sink + writer", lambda: _engine_rate(model_dir, n, True, False, bias)),
        ("runtime process, read over a pipe", lambda: _process_rate(model_dir, n, bias)),
    ]
    rounds: list[list[float]] = []
    for _ in range(args.rounds):
        rounds.append([measure() for _, measure in layers])
    best = [max(column) for column in zip(*rounds, strict=True)]
    if args.profile:
        _engine_rate(model_dir, n, True, True, bias)
    reference = best[0]
    print(
        f"llama h{args.hidden} L{args.layers} fp32, {n} tokens, best of {args.rounds} "
        f"interleaved rounds, bias={bias}"
    )
    print("| layer | tok/s | us/token | cost over baseline, us/token |")
    print("|---|---:|---:|---:|")
    for (label, _), rate in zip(layers, best, strict=True):
        cost = 1e6 / rate - 1e6 / reference
        print(f"| {label} | {rate:.0f} | {1e6 / rate:.0f} | {cost:+.0f} |")
    # The host's speed drifts between rounds more than the costs measured here: the
    # difference within each round, where baseline and runtime ran a few seconds apart,
    # is the steadier figure.
    paired = sorted(1e6 / r[-1] - 1e6 / r[0] for r in rounds)
    print(
        "runtime process over baseline within each round, us/token: "
        + ", ".join(f"{d:+.0f}" for d in paired)
        + f"; median {statistics.median(paired):+.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
