"""Where the runtime's time goes per token, on a model small enough that per-token work
shows (bench_throughput's tiny model): each layer added in turn, in one run.

    python bench/profile_engine.py [--tokens 3000] [--profile] [--top 30]

Rows, each in us/token and against in-process `mlx_lm.stream_generate`:
- engine, null sink: scheduler, lane and text assembly, nothing encoded;
- engine + sink + writer: the runtime's NotificationSink and FrameWriter (to /dev/null),
  with telemetry as the runtime has it;
- runtime process: `python -m mlx_serving` read by a client over a pipe.
`--profile` adds a cProfile of the engine thread for the second row.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "runtime"))
NO_EOS = {2: -100.0}


class _NullSink:
    def __init__(self) -> None:
        self.ended = threading.Event()

    def emit(self, notifications: list[tuple[str, Any]]) -> None:
        if any(name == "stream.event" for name, _ in notifications):
            self.ended.set()


def _engine_rate(model_dir: Path, tokens: int, real_sink: bool, profile: bool) -> float:
    from mlx_serving.config import Settings
    from mlx_serving.engine import scheduler as scheduler_module
    from mlx_serving.engine.engine import Engine
    from mlx_serving.protocol.methods import GenerateParams, LoadModelParams
    from mlx_serving.server import NotificationSink
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
    ended = threading.Event()
    sink: Any
    telemetry = Telemetry()
    if real_sink:
        writer = FrameWriter(os.open(os.devnull, os.O_WRONLY), 8 << 20)
        notification_sink = NotificationSink(writer, telemetry)
        emit = notification_sink.emit

        def watching_emit(notifications: list[tuple[str, Any]]) -> None:
            emit(notifications)
            if any(name == "stream.event" for name, _ in notifications):
                ended.set()

        notification_sink.emit = watching_emit  # type: ignore[method-assign]
        sink = notification_sink
    else:
        sink = _NullSink()
        ended = sink.ended
    engine = Engine(Settings(), sink)
    if real_sink:
        engine.scheduler.on_step = telemetry.engine_step
    engine.load(LoadModelParams(model_id="m", local_path=str(model_dir)))
    rate = 0.0
    for _ in range(2):  # the first run warms up
        ended.clear()
        params = GenerateParams(
            model_id="m", prompt="hello", max_tokens=tokens, temperature=0, logit_bias=NO_EOS
        )
        request = engine.prepare_stream(params)
        started = time.perf_counter()
        engine.start(request)
        ended.wait(600)
        rate = tokens / (time.perf_counter() - started)
    engine.shutdown()
    scheduler_module.Scheduler._run = run  # type: ignore[method-assign]
    if profiler is not None:
        for key in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(30)
            print(text.getvalue())
    return rate


def _process_rate(model_dir: Path, tokens: int) -> float:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_serving"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None

    def send(request_id: int, method: str, params: dict[str, Any]) -> None:
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        process.stdin.write(json.dumps(frame).encode() + b"\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]

    def until(predicate: Any) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            if predicate(json.loads(line)):
                return

    send(1, "load_model", {"model_id": "m", "local_path": str(model_dir)})
    until(lambda f: f.get("id") == 1)
    rate = 0.0
    for attempt in range(2):
        params = {
            "model_id": "m",
            "prompt": "hello",
            "max_tokens": tokens,
            "temperature": 0,
            "logit_bias": {"2": -100},
        }
        started = time.perf_counter()
        send(10 + attempt, "generate", params)
        until(lambda f: f.get("method") == "stream.event")
        rate = tokens / (time.perf_counter() - started)
    process.stdin.close()
    process.wait(30)
    return rate


def _reference_rate(model_dir: Path, tokens: int) -> float:
    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors

    model, tokenizer = mlx_lm.load(str(model_dir))
    processors = make_logits_processors(logit_bias=NO_EOS)
    rate = 0.0
    for _ in range(2):
        started = time.perf_counter()
        count = sum(
            1
            for _ in mlx_lm.stream_generate(
                model, tokenizer, "hello", max_tokens=tokens, logits_processors=processors
            )
        )
        rate = count / (time.perf_counter() - started)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    from mlx_serving.testing import make_model

    workdir = Path(tempfile.mkdtemp(prefix="profile-engine-"))
    model_dir = make_model(workdir / "tiny", "llama", hidden_size=64, num_layers=2, seed=3)
    reference = _reference_rate(model_dir, args.tokens)
    rows = [
        ("mlx_lm.stream_generate (baseline)", reference),
        ("engine, null sink", _engine_rate(model_dir, args.tokens, False, False)),
        ("engine + sink + writer", _engine_rate(model_dir, args.tokens, True, args.profile)),
        ("runtime process, read over a pipe", _process_rate(model_dir, args.tokens)),
    ]
    print("| layer | tok/s | us/token | cost over baseline, us/token |")
    print("|---|---:|---:|---:|")
    for label, rate in rows:
        cost = 1e6 / rate - 1e6 / reference
        print(f"| {label} | {rate:.0f} | {1e6 / rate:.0f} | {cost:+.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
