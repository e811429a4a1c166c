"""Start a runtime of two ranks over loopback, as a client would: one process with
`--hostfile`, which starts its peer itself."""

from __future__ import annotations

import socket
from contextlib import closing
from pathlib import Path

from mlx_serving.testing.client import RuntimeClient


def free_port_pair() -> int:
    """A port p with p and p+1 free (the ring listens on one per rank)."""
    for _ in range(50):
        with closing(socket.socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with closing(socket.socket()) as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def start_group(hostfile: Path, **settings: str) -> RuntimeClient:
    env = {
        "MLX_SERVING_DISTRIBUTED__PORT": str(free_port_pair()),
        # Pipeline loads may write a weight index under the cache: keep it out of $HOME.
        "MLX_SERVING_CACHE_DIR": str(hostfile.parent / "cache"),
    }
    env.update({f"MLX_SERVING_DISTRIBUTED__{k.upper()}": v for k, v in settings.items()})
    return RuntimeClient(args=["--hostfile", str(hostfile)], env=env)
