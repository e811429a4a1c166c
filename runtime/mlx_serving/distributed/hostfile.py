"""The hostfile of a distributed runtime: the JSON format of `mlx.launch --hostfile` and
`mlx.distributed_config`, read as it is, and what each rank needs from it."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

# Hosts reached without ssh: their rank runs as a child process of rank 0.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class HostfileError(Exception):
    """A hostfile that cannot describe a group; the message says why."""


class Host(msgspec.Struct, kw_only=True):
    # What `ssh` connects to; the first host is rank 0, this process.
    ssh: str
    # Addresses the other ranks reach this one at (the ring needs at least one).
    ips: list[str] = []
    # JACCL: the RDMA device towards each rank (null towards itself).
    rdma: list[str | list[str] | None] = []


class Hostfile(msgspec.Struct, kw_only=True):
    hosts: list[Host]
    backend: str = ""
    # KEY=VALUE set on every rank.
    envs: list[str] = []

    @property
    def size(self) -> int:
        return len(self.hosts)


def read_hostfile(path: str | Path) -> Hostfile:
    """Parse a hostfile: an object with `hosts` (and optional `backend`, `envs`) or, as
    mlx.launch also accepts, a bare list of hosts."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HostfileError(f"cannot read hostfile {path}: {exc}") from exc
    if isinstance(data, list):
        data = {"hosts": data}
    try:
        hostfile = msgspec.convert(data, Hostfile)
    except msgspec.ValidationError as exc:
        raise HostfileError(f"hostfile {path}: {exc}") from exc
    if hostfile.size < 1:
        raise HostfileError(f"hostfile {path} lists no hosts")
    for entry in hostfile.envs:
        key = entry.split("=", 1)[0]
        if not key or not all(c.isalnum() or c == "_" for c in key):
            raise HostfileError(f"hostfile {path}: invalid environment entry {entry!r}")
    return hostfile


def ring_addresses(hostfile: Hostfile, port: int) -> list[list[str]]:
    """The ring backend's MLX_HOSTFILE: per rank, `ip:port` for each of its IPs, the ports
    counting up from `port` as mlx.launch assigns them."""
    addresses = []
    for rank, host in enumerate(hostfile.hosts):
        if not host.ips:
            raise HostfileError(f"the ring backend needs `ips` for rank {rank} ({host.ssh})")
        addresses.append([f"{ip}:{port + i}" for i, ip in enumerate(host.ips)])
        port += len(host.ips)
    return addresses
