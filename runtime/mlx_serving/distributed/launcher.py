"""Rank 0 starts the other ranks itself: local hosts as child processes, others over ssh.

`mlx.launch` would do it too, but it forwards rank 0's stdout through a loop that polls
stdin with a 0.1 s timeout, which holds tokens back (bench/bench_distributed.py measures
it). Here the process the client spawned is rank 0 and writes its own stdout; the other
ranks get the environment mlx.launch would give them, log to rank 0's stderr, and read
nothing. Each peer is watched: one that exits is reported at once.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .hostfile import LOCAL_HOSTS, Hostfile, HostfileError, ring_addresses

log = logging.getLogger(__name__)

SETTINGS_ENV = "MLX_SERVING_GROUP_SETTINGS"
PARENT_ENV = "MLX_SERVING_GROUP_PARENT"
BACKEND_ENV = "MLX_SERVING_GROUP_BACKEND"


@dataclass
class RankEnvironment:
    """What one rank needs: variables, and files whose paths go into variables."""

    variables: dict[str, str]
    files: dict[str, str]  # variable name -> file content


def rank_environments(hostfile: Hostfile, backend: str, port: int) -> list[RankEnvironment]:
    """The environment `mlx.launch` gives each rank for this backend."""
    size = hostfile.size
    common = {name: value for name, _, value in (e.partition("=") for e in hostfile.envs)}
    common[BACKEND_ENV] = backend
    files: dict[str, str] = {}
    if backend == "ring":
        files["MLX_HOSTFILE"] = json.dumps(ring_addresses(hostfile, port))
    elif backend in ("nccl", "jaccl", "jaccl-ring"):
        first = hostfile.hosts[0]
        if not first.ips:
            raise HostfileError(f"the {backend} backend needs `ips` for rank 0 ({first.ssh})")
        if backend == "nccl":
            common |= {"NCCL_HOST_IP": first.ips[0], "NCCL_PORT": str(port)}
            common["MLX_WORLD_SIZE"] = str(size)
        else:
            common["MLX_JACCL_COORDINATOR"] = f"{first.ips[0]}:{port}"
            if backend == "jaccl-ring":
                common["MLX_JACCL_RING"] = "1"
            files["MLX_IBV_DEVICES"] = json.dumps([h.rdma for h in hostfile.hosts])
    else:
        raise HostfileError(
            f"backend {backend!r} cannot be started by the runtime (ring, nccl, jaccl or "
            "jaccl-ring; mpirun starts its ranks itself)"
        )
    environments = []
    seen: dict[str, int] = {}
    for rank, host in enumerate(hostfile.hosts):
        variables = dict(common, MLX_RANK=str(rank))
        if backend == "nccl":
            # One GPU per rank of the same host, as mlx.launch does for repeated hosts.
            variables["CUDA_VISIBLE_DEVICES"] = str(seen.get(host.ssh, 0))
        seen[host.ssh] = seen.get(host.ssh, 0) + 1
        environments.append(RankEnvironment(variables, dict(files)))
    return environments


class PeerLauncher:
    """Ranks 1 … N-1 of a group whose rank 0 is this process."""

    def __init__(
        self,
        hostfile: Hostfile,
        environments: list[RankEnvironment],
        settings_json: str,
        python: str | None,
        on_exit: Callable[[int, str], None],
    ) -> None:
        self._hostfile = hostfile
        self._environments = environments
        self._settings_json = settings_json
        self._python = python or sys.executable
        self.on_exit = on_exit
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False
        self._dir = Path(tempfile.mkdtemp(prefix="mlx-serving-group-"))

    def local_environment(self, rank: int) -> dict[str, str]:
        """The variables of a rank on this host, its files written under a private folder."""
        environment = self._environments[rank]
        variables = dict(environment.variables)
        for name, content in environment.files.items():
            path = self._dir / f"{name.lower()}.json"
            path.write_text(content)
            variables[name] = str(path)
        return variables

    def start(self) -> None:
        for rank in range(1, self._hostfile.size):
            host = self._hostfile.hosts[rank].ssh
            extra = {SETTINGS_ENV: self._settings_json}
            if host in LOCAL_HOSTS:
                extra[PARENT_ENV] = str(os.getpid())
                env = {**os.environ, **self.local_environment(rank), **extra}
                command = [self._python, "-m", "mlx_serving", "peer"]
            else:
                env = dict(os.environ)
                command = self._ssh_command(rank, host, extra)
            # stdout too goes to our stderr: stdout is the protocol's, and only ours.
            try:
                process = subprocess.Popen(
                    command, env=env, stdin=subprocess.DEVNULL, stdout=2, stderr=2
                )
            except OSError as exc:
                self.kill()
                raise HostfileError(f"cannot start rank {rank} on {host}: {exc}") from exc
            self._processes[rank] = process
            log.info("started rank %d on %s (pid %d)", rank, host, process.pid)
            threading.Thread(
                target=self._watch, args=(rank, host, process), name=f"rank-{rank}", daemon=True
            ).start()

    def _ssh_command(self, rank: int, host: str, extra: dict[str, str]) -> list[str]:
        environment = self._environments[rank]
        script = f"cd {shlex.quote(os.getcwd())} 2>/dev/null; "
        variables = {**environment.variables, **extra}
        if "PYTHONPATH" in os.environ:
            variables.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        for name, value in variables.items():
            script += f"export {name}={shlex.quote(value)}; "
        for name, content in environment.files.items():
            script += f"f=$(mktemp); printf %s {shlex.quote(content)} > $f; export {name}=$f; "
        script += f"exec {shlex.quote(self._python)} -m mlx_serving peer"
        # A forced terminal: when the connection drops, the remote rank gets SIGHUP.
        return ["ssh", "-tt", "-o", "BatchMode=yes", "-o", "LogLevel=QUIET", host, script]

    def _watch(self, rank: int, host: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        if not self._stopping:
            self.on_exit(rank, f"rank {rank} ({host}) exited with status {code}")

    def expect_exits(self) -> None:
        """The ranks are about to be told to stop: their exits are no failure."""
        self._stopping = True

    def stop(self, grace: float = 3.0) -> None:
        """Wait up to `grace` seconds for the ranks to exit (after a Stop), then kill them."""
        self._stopping = True
        deadline = time.monotonic() + grace
        for process in self._processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def kill(self) -> None:
        """End every rank now (the group has failed; a stuck rank would otherwise stay)."""
        self._stopping = True
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
