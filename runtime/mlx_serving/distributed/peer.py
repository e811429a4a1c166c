"""`python -m mlx_serving peer`: one of ranks 1 … N-1, started by rank 0.

It takes its settings from rank 0 (MLX_SERVING_GROUP_SETTINGS) and its rank and backend
variables as mlx.launch would set them. It never writes to stdout (which the launcher
points at rank 0's stderr anyway) and never reads stdin; it exits when rank 0 sends Stop,
when the group breaks, or when rank 0, its parent on the same host, is gone.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import msgspec

from ..config import Settings
from .launcher import BACKEND_ENV, PARENT_ENV, SETTINGS_ENV

log = logging.getLogger(__name__)


def main() -> int:
    raw = os.environ.get(SETTINGS_ENV)
    rank = os.environ.get("MLX_RANK", "?")
    if raw is None:
        print(f"mlx-serving peer: {SETTINGS_ENV} is not set (rank 0 starts peers)", file=sys.stderr)
        return 2
    settings = msgspec.json.decode(raw, type=Settings)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, settings.logging.level, logging.INFO),
        format=f"[rank {rank}] {settings.logging.format}",
        force=True,
    )
    # stdout belongs to rank 0's protocol; nothing of ours may reach it.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    # The same CPU GEMMs as rank 0, so that the ranks compute alike.
    from ..native_bridge.blas import preload_optimized_blas

    blas = settings.python_runtime.blas
    status = preload_optimized_blas(blas if isinstance(blas, str) else ("on" if blas else "off"))
    log.info("BLAS bridge: %s", status.reason)
    _watch_parent()

    from .follower import Follower
    from .group import GroupStartError, connect, gather_status

    backend = os.environ.get(BACKEND_ENV, "ring")
    try:
        channel = connect(backend, settings.distributed.start_timeout_s, lambda: None)
        gather_status(channel)
    except GroupStartError as exc:
        log.error("cannot join the group: %s", exc)
        return 2
    log.info("rank %d of %d joined over %s", channel.rank, channel.size, backend)
    try:
        Follower(channel, settings).run()
    except Exception:
        log.exception("leaving the group")
        sys.stderr.flush()
        os._exit(1)  # threads of MLX's backend may hold the process otherwise
    sys.stderr.flush()
    os._exit(0)


def _watch_parent() -> None:
    """A rank started on rank 0's host exits with it, even when rank 0 was killed."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    expected = int(parent)

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(0.25)
        log.warning("rank 0 (pid %d) is gone; leaving", expected)
        sys.stderr.flush()
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
