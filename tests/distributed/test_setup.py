"""What rank 0 derives before any rank runs: hostfiles, each rank's environment, and the
weight index pipeline loading needs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlx_serving.distributed.hostfile import HostfileError, read_hostfile, ring_addresses
from mlx_serving.distributed.launcher import PeerLauncher, rank_environments
from mlx_serving.distributed.loading import INDEX, with_weight_index


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(data))
    return path


def test_hostfiles_as_mlx_launch_reads_them(tmp_path: Path) -> None:
    listed = read_hostfile(write(tmp_path, [{"ssh": "a", "ips": ["10.0.0.1", "10.0.1.1"]}]))
    assert (listed.backend, listed.size) == ("", 1)
    full = read_hostfile(
        write(
            tmp_path,
            {
                "backend": "ring",
                "envs": ["MLX_METAL_FAST_SYNCH=1"],
                "hosts": [
                    {"ssh": "a", "ips": ["10.0.0.1", "10.0.1.1"]},
                    {"ssh": "b", "ips": ["10.0.0.2"]},
                ],
            },
        )
    )
    assert ring_addresses(full, 5000) == [["10.0.0.1:5000", "10.0.1.1:5001"], ["10.0.0.2:5002"]]
    for bad in ({"hosts": []}, {"hosts": [{"ips": []}]}, {"hosts": [{"ssh": "a"}], "envs": ["=x"]}):
        with pytest.raises(HostfileError):
            read_hostfile(write(tmp_path, bad))
    with pytest.raises(HostfileError, match="needs `ips`"):
        ring_addresses(read_hostfile(write(tmp_path, [{"ssh": "a"}])), 5000)


def test_each_backend_gets_the_environment_mlx_launch_gives(tmp_path: Path) -> None:
    hosts = read_hostfile(
        write(
            tmp_path,
            {
                "envs": ["NCCL_DEBUG=INFO"],
                "hosts": [
                    {"ssh": "gpu1", "ips": ["10.0.0.1"], "rdma": [None, "rdma_en2"]},
                    {"ssh": "gpu1", "ips": ["10.0.0.1"], "rdma": ["rdma_en2", None]},
                ],
            },
        )
    )
    nccl = rank_environments(hosts, "nccl", 12345)
    assert [e.variables["CUDA_VISIBLE_DEVICES"] for e in nccl] == ["0", "1"]
    assert (
        nccl[1].variables.items()
        >= {
            "MLX_RANK": "1",
            "MLX_WORLD_SIZE": "2",
            "NCCL_HOST_IP": "10.0.0.1",
            "NCCL_PORT": "12345",
            "NCCL_DEBUG": "INFO",
        }.items()
    )
    ring = rank_environments(hosts, "ring", 5000)
    assert json.loads(ring[0].files["MLX_HOSTFILE"]) == [["10.0.0.1:5000"], ["10.0.0.1:5001"]]
    jaccl = rank_environments(hosts, "jaccl-ring", 7000)
    assert jaccl[0].variables["MLX_JACCL_COORDINATOR"] == "10.0.0.1:7000"
    assert jaccl[0].variables["MLX_JACCL_RING"] == "1"
    assert json.loads(jaccl[0].files["MLX_IBV_DEVICES"]) == [[None, "rdma_en2"], ["rdma_en2", None]]
    with pytest.raises(HostfileError, match="mpirun"):
        rank_environments(hosts, "mpi", 5000)


def test_a_single_weights_file_gets_an_index_beside_the_untouched_model(
    qwen_dir: Path, tmp_path: Path
) -> None:
    before = sorted(p.name for p in qwen_dir.iterdir())
    shadow = with_weight_index(qwen_dir, tmp_path / "shadow")
    assert sorted(p.name for p in qwen_dir.iterdir()) == before
    weight_map = json.loads((shadow / INDEX).read_text())["weight_map"]
    assert set(weight_map.values()) == {"model.safetensors"}
    assert any(".layers.3." in name for name in weight_map)
    assert (shadow / "config.json").resolve() == (qwen_dir / "config.json").resolve()
    assert with_weight_index(qwen_dir, tmp_path / "shadow") == shadow
    assert with_weight_index(shadow, tmp_path / "other") == shadow  # it has an index


def test_the_ssh_script_gives_a_remote_rank_its_environment(tmp_path: Path) -> None:
    """What ssh would run on the remote host, run here by bash: quoting of the settings
    JSON and of the ring's hostfile must survive the trip."""
    hostfile = read_hostfile(
        write(
            tmp_path,
            [{"ssh": "127.0.0.1", "ips": ["10.0.0.1"]}, {"ssh": "m2", "ips": ["10.0.0.2"]}],
        )
    )
    fake_python = tmp_path / "python"
    fake_python.write_text(
        '#!/bin/sh\necho "$MLX_RANK|$MLX_SERVING_GROUP_BACKEND|$(cat "$MLX_HOSTFILE")|'
        '$MLX_SERVING_GROUP_SETTINGS|$*"\n'
    )
    fake_python.chmod(0o755)
    settings = json.dumps({"logging": {"format": '[%(name)s] it\'s "quoted" $HOME'}})
    launcher = PeerLauncher(
        hostfile, rank_environments(hostfile, "ring", 4000), settings, str(fake_python), print
    )
    command = launcher._ssh_command(1, "m2", {"MLX_SERVING_GROUP_SETTINGS": settings})
    assert command[:2] == ["ssh", "-tt"] and command[-2] == "m2"
    result = subprocess.run(["bash", "-c", command[-1]], capture_output=True, text=True, check=True)
    rank, backend, ring, received, args = result.stdout.strip().split("|")
    assert (rank, backend, args) == ("1", "ring", "-m mlx_serving peer")
    assert json.loads(ring) == [["10.0.0.1:4000"], ["10.0.0.2:4001"]]
    assert received == settings
    launcher.stop(0)  # removes its folder of rank files
