"""The group of ranks as rank 0 sees it: started, connected, watched, failed.

Rank 0 reads the hostfile, starts the other ranks (launcher.py), joins the
`mx.distributed` group with them and keeps what runtime/info and runtime/state report:
the backend, each rank's host and memory, and the reason the group failed, if it did.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ..config import Settings
from ..process_memory import process_memory
from ..protocol.methods import DistributedStatus, RankStatus
from .channel import Channel
from .hostfile import Hostfile, read_hostfile
from .launcher import PeerLauncher, rank_environments

log = logging.getLogger(__name__)

_status_encoder = msgspec.msgpack.Encoder()
_status_decoder = msgspec.msgpack.Decoder(RankStatus)


class GroupStartError(Exception):
    """The group could not be formed; the message says which rank and why."""


def rank_status(rank: int) -> RankStatus:
    import mlx.core as mx

    return RankStatus(
        rank=rank,
        host=socket.gethostname()[:200],
        pid=os.getpid(),
        memory=process_memory(),
        mlx_active_bytes=int(mx.get_active_memory()),
        mlx_peak_bytes=int(mx.get_peak_memory()),
    )


def gather_status(channel: Channel) -> list[RankStatus]:
    """Every rank's status, in rank order (a collective: every rank calls it)."""
    records = channel.gather(_status_encoder.encode(rank_status(channel.rank)))
    return [_status_decoder.decode(record) for record in records]


def connect(backend: str, timeout: float, given_up: Callable[[], str | None]) -> Channel:
    """Join the group (this process's MLX_RANK and backend variables must be set). The
    backends wait for every rank without a bound, so the wait happens on a thread: it
    ends after `timeout` seconds or once `given_up()` names a reason (a rank exited)."""
    import mlx.core as mx

    joined: list[mx.distributed.Group] = []
    failed: list[BaseException] = []

    def join() -> None:
        try:
            # jaccl-ring is jaccl with MLX_JACCL_RING set.
            name = "jaccl" if backend == "jaccl-ring" else backend
            joined.append(mx.distributed.init(strict=True, backend=name))
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=join, name="group-connect", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        thread.join(0.05)
        reason = given_up()
        if reason is not None:
            raise GroupStartError(reason)
        if time.monotonic() > deadline:
            raise GroupStartError(f"the ranks did not connect within {timeout:g} s")
    if failed:
        raise GroupStartError(f"{backend} backend: {failed[0]}")
    group = joined[0]
    if group.size() < 2:
        raise GroupStartError(f"the {backend} backend formed a group of {group.size()}")
    return Channel(group)


class Group:
    """Rank 0's handle on a started group."""

    def __init__(
        self,
        channel: Channel,
        backend: str,
        launcher: PeerLauncher,
        ranks: list[RankStatus],
    ) -> None:
        self.channel = channel
        self.backend = backend
        self.size = channel.size
        self._launcher = launcher
        self._lock = threading.Lock()
        self._ranks = ranks
        self._ranks_at = time.monotonic()
        self._failure: str | None = None
        self._listeners: list[Callable[[str], None]] = []

    @property
    def failure(self) -> str | None:
        return self._failure

    def on_failure(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def fail(self, reason: str) -> None:
        """Give the group up (the first reason stays): every rank is ended, since one that
        is stuck would never leave on its own, and the listeners are told once."""
        with self._lock:
            if self._failure is not None:
                return
            self._failure = reason
        log.error("distributed group failed: %s", reason)
        self._launcher.kill()
        for listener in self._listeners:
            listener(reason)

    def record_ranks(self, ranks: list[RankStatus]) -> None:
        with self._lock:
            self._ranks, self._ranks_at = ranks, time.monotonic()

    def status(self) -> DistributedStatus:
        with self._lock:
            return DistributedStatus(
                backend=self.backend,
                size=self.size,
                state="failed" if self._failure else "ok",
                error=self._failure,
                ranks=list(self._ranks),
                ranks_age_s=round(time.monotonic() - self._ranks_at, 3),
            )

    def stopping(self) -> None:
        """Called before the ranks are told to stop, so that their exits fail nothing."""
        self._launcher.expect_exits()

    def close(self) -> None:
        """After the Stop was sent: let the ranks exit, end those that do not."""
        self._launcher.stop()


def start_group(settings: Settings) -> Group:
    """Start ranks 1 … N-1 from the hostfile and join them as rank 0."""
    import mlx.core as mx

    config = settings.distributed
    assert config.hostfile is not None
    hostfile: Hostfile = read_hostfile(Path(config.hostfile).expanduser())
    backend = config.backend or hostfile.backend or ("nccl" if mx.cuda.is_available() else "ring")
    environments = rank_environments(hostfile, backend, config.port)
    exited: list[str] = []
    launcher = PeerLauncher(
        hostfile,
        environments,
        msgspec.json.encode(settings).decode(),
        config.python,
        on_exit=lambda rank, reason: exited.append(reason),
    )
    os.environ.update(launcher.local_environment(0))
    launcher.start()
    try:
        channel = connect(backend, config.start_timeout_s, lambda: exited[0] if exited else None)
        ranks = gather_status(channel)
    except BaseException:
        launcher.kill()
        launcher.stop(0)
        raise
    group = Group(channel, backend, launcher, ranks)
    # From now on a rank that exits fails the group.
    launcher.on_exit = lambda rank, reason: group.fail(reason)
    if exited:
        group.fail(exited[0])
    hosts = ", ".join(f"{r.rank}:{r.host}" for r in ranks)
    log.info("distributed group of %d over %s: %s", group.size, backend, hosts)
    return group
